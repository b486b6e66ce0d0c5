"""Fingerprints of what the prompt cache keys on (ccmeter.cachekeys): pure."""

from __future__ import annotations

import copy
import json

from ccmeter import cachekeys

EPH = {"type": "ephemeral"}


def request(**changes) -> dict:
    body = {
        "model": "claude-opus-4-8",
        "tools": [{"name": "Read", "input_schema": {"type": "object"}},
                  {"name": "Bash", "input_schema": {"type": "object"}, "cache_control": EPH}],
        "system": [{"type": "text", "text": "billing"},
                   {"type": "text", "text": "You are Claude Code.",
                    "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "messages": [
            {"role": "user", "content": "fix the bug"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Reading."},
                {"type": "tool_use", "id": "toolu_1", "name": "Read",
                 "input": {"file_path": "a.py"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "print(1)",
                 "cache_control": EPH}]},
        ],
    }
    body.update(changes)
    return body


def test_breakpoints_their_ttls_and_no_text():
    shape = cachekeys.shape(request())
    assert [(b.at, b.ttl_s) for b in shape.breakpoints] == [
        ("tools.1", 300), ("system.1", 3600), ("messages.2.0", 300)]
    stored = shape.key_json()
    assert "fix the bug" not in stored and "Claude Code" not in stored
    doc = json.loads(stored)
    assert doc["messages"] == 3 and len(doc["tools"]) == 16
    assert [b["ttl"] for b in doc["breakpoints"]] == ["5m", "1h", "5m"]
    assert len({b["prefix"] for b in doc["breakpoints"]}) == 3


def test_a_moved_breakpoint_changes_no_fingerprint_of_content():
    first = request()
    second = copy.deepcopy(first)
    del second["messages"][2]["content"][0]["cache_control"]
    second["messages"].append({"role": "assistant", "content": "Done."})
    second["messages"].append({"role": "user", "content": [
        {"type": "text", "text": "thanks", "cache_control": EPH}]})
    a, b = cachekeys.shape(first), cachekeys.shape(second)
    assert b.messages[:3] == a.messages
    assert b.change_from(a) is None
    assert a.breakpoints[:2] == b.breakpoints[:2]  # tools and system prefixes are the same


def test_what_changed_first_is_named():
    base = cachekeys.shape(request())
    assert cachekeys.shape(request(model="claude-sonnet-4-6")).change_from(base) == "model"
    tools = request()
    tools["tools"] = list(reversed(tools["tools"]))
    assert cachekeys.shape(tools).change_from(base) == "tools"
    system = request()
    system["system"][1]["text"] = "You are Claude Code, edited."
    assert cachekeys.shape(system).change_from(base) == "system"
    edited = request()
    edited["messages"][1]["content"][0]["text"] = "Reading now."
    assert cachekeys.shape(edited).change_from(base) == "message:1"
    shorter = request()
    shorter["messages"] = shorter["messages"][:1]
    assert cachekeys.shape(shorter).change_from(base) == "message:1"


def test_the_newest_tool_call_without_its_id_and_a_failing_result():
    shape = cachekeys.shape(request())
    again = request()
    again["messages"][1]["content"][1]["id"] = "toolu_2"
    again["messages"][2]["content"][0]["tool_use_id"] = "toolu_2"
    assert shape.tool_call is not None and shape.tool_call.startswith("Read:")
    assert cachekeys.shape(again).tool_call == shape.tool_call
    other = request()
    other["messages"][1]["content"][1]["input"] = {"file_path": "b.py"}
    assert cachekeys.shape(other).tool_call != shape.tool_call
    assert shape.failed_result is None
    failing = request()
    failing["messages"][2]["content"][0]["is_error"] = True
    assert cachekeys.shape(failing).failed_result is not None
    # a reminder Claude Code adds after the results does not hide the call
    reminded = request()
    reminded["messages"].append({"role": "user", "content": "<system-reminder>"})
    assert cachekeys.shape(reminded).tool_call == shape.tool_call
    # a new prompt with no tool result: no tool call reported back
    assert cachekeys.shape(request(messages=[{"role": "user", "content": "hi"}])).tool_call is None


def test_any_json_is_read_without_raising():
    for body in ({}, {"tools": "x", "system": 5, "messages": [1, None, "x", {"role": []}]},
                 {"messages": [{"role": "assistant", "content": None},
                               {"role": "user", "content": [{"type": "tool_result"}]}]},
                 {"system": "a plain string", "model": 12}):
        shape = cachekeys.shape(body)
        assert isinstance(shape.key_json(), str)


def test_claude_codes_billing_header_is_not_part_of_any_fingerprint():
    first, second = request(), request()
    first["system"][0]["text"] = "x-anthropic-billing-header: cc_version=2.1.197.7d5; cch=32373;"
    second["system"][0]["text"] = "x-anthropic-billing-header: cc_version=2.1.197.7d5; cch=67a86;"
    a, b = cachekeys.shape(first), cachekeys.shape(second)
    assert a.system == b.system and a.breakpoints == b.breakpoints and b.change_from(a) is None
    edited = request()
    edited["system"][0]["text"] = "another first block"
    assert cachekeys.shape(edited).change_from(cachekeys.shape(request())) == "system"
