"""Who a call belongs to, from headers and body alone."""

from __future__ import annotations

import json

from ccmeter.attribution import attribute, auth_kind, project_from_dir, session_id, working_dir


def test_session_prefers_header_then_json_user_id_then_legacy_form():
    body = {"metadata": {"user_id": json.dumps({"device_id": "d", "session_id": "from-json"})}}
    assert session_id({"x-claude-code-session-id": "hdr"}, body) == "hdr"
    assert session_id({}, body) == "from-json"
    legacy = {"metadata": {"user_id": "user_ab12_account_cd34_session_0f1e2d3c-aaaa-bbbb"}}
    assert session_id({}, legacy) == "0f1e2d3c-aaaa-bbbb"
    assert session_id({}, {"metadata": {"user_id": "{broken json"}}) is None
    assert session_id({}, {}) is None


def test_working_dir_from_string_or_block_system_prompt():
    assert working_dir({"system": "x\n - Primary working directory: /a/b c\n"}) == "/a/b c"
    blocks = [{"type": "text", "text": "billing"},
              {"type": "text", "text": "Env:\n - Primary working directory: /srv/app\n"}]
    assert working_dir({"system": blocks}) == "/srv/app"
    assert working_dir({"system": [{"type": "image"}]}) is None


def test_project_name_is_the_git_top_folder_else_the_folder():
    assert project_from_dir("/home/u/repo/src/pkg", "/home/u/repo") == "repo"
    assert project_from_dir("/home/u/scratch", None) == "scratch"


def test_auth_kind_never_keeps_the_secret():
    assert auth_kind({"x-api-key": "sk-ant-api03-x"}) == "api_key"
    assert auth_kind({"authorization": "Bearer sk-ant-oat01-xyz"}) == "subscription"
    assert auth_kind({"authorization": "Bearer gateway-token"}) == "bearer"
    assert auth_kind({}) is None


def test_call_kinds_and_client():
    headers = {"user-agent": "claude-cli/2.1.197 (external, sdk-cli)"}
    main = attribute(headers, {"model": "claude-opus-4-8", "tools": [{}], "stream": True})
    assert (main.call_kind, main.client_name, main.client_version) == (
        "main", "claude-cli", "2.1.197")
    assert main.stream and main.requested_model == "claude-opus-4-8"
    sub = attribute({"x-claude-code-agent-id": "a1"}, {"tools": [{}]})
    assert sub.call_kind == "subagent" and sub.agent_id == "a1"
    assert attribute({}, {"max_tokens": 1, "tools": [{}]}).call_kind == "auxiliary"
    assert attribute({}, {"messages": []}).call_kind == "auxiliary"  # title / topic calls
    tagged = attribute({"x-ccmeter-project": " api "}, {})
    assert tagged.project == "api"
