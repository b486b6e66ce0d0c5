"""Cache busts for real: calls through a real ``mitmdump -s addons/ccmeter.py`` to a stand-in
with the API's prompt caching (tests/standin_cache.py), each cause made to happen, then
``ccmeter waste`` priced by hand.

Opus 4.8 per MTok: input $5, 5-minute write $6.25, 1-hour write $10, read $0.50.
Sonnet 4.6 per MTok: input $3, 5-minute write $3.75, read $0.30.
A token is a word (see standin_cache): the tool definition is 1 + 1,000 = 1,001 tokens,
the system prompt 2,000, the first user message 3,000, so the first call writes 6,001.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from decimal import Decimal
from pathlib import Path

import pytest
from capsproxy import mitmdump, post
from mitm import db_rows
from standin import StandIn
from standin_cache import Clock, PromptCache
from typer.testing import CliRunner

from ccmeter.cli import app

MICRO = 10**6  # picodollars per micro-dollar: tokens x $/MTok is micro-dollars
EPHEMERAL = {"type": "ephemeral"}


def words(n: int, word: str = "w") -> str:
    return " ".join([word] * n)


def body(turns: list[tuple[str, str]], *, model: str = "claude-opus-4-8", tool_words: int = 1000,
         system: str | None = None, system_ttl: str | None = None,
         session: str = "s1") -> dict:
    """A Claude Code-like request: one tool, one cached system block, the conversation with
    the breakpoint on its last block (as Claude Code moves it each turn)."""
    marker = dict(EPHEMERAL, ttl=system_ttl) if system_ttl else EPHEMERAL
    messages = [{"role": role, "content": [{"type": "text", "text": text}]}
                for role, text in turns]
    messages[-1]["content"][-1]["cache_control"] = EPHEMERAL
    return {
        "model": model, "max_tokens": 1000, "stream": True,
        "tools": [{"name": "Read", "description": words(tool_words),
                   "input_schema": {"type": "object"}}],
        "system": [{"type": "text", "text": system or words(2000), "cache_control": marker}],
        "messages": messages,
        "metadata": {"user_id": json.dumps({"session_id": session})},
    }


FIRST = [("user", words(3000))]
SECOND = [*FIRST, ("assistant", words(10)), ("user", words(500))]


@pytest.fixture
def cached_api():
    with StandIn() as server:
        cache = PromptCache(Clock())
        server.default = cache.answer(lambda rec: {"text": "ok", "output_tokens": 5})
        yield server, cache


def waste_json(*args: str) -> dict:
    result = CliRunner().invoke(app, ["waste", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def shift(home: Path, seconds: float, *, last: int = 1) -> None:
    """Move the last ``last`` calls ``seconds`` later, as the stand-in's clock moved (the
    proxy stamps calls with the wall clock, the stand-in's cache runs on the test's)."""
    conn = sqlite3.connect(home / "ccmeter.db")
    with conn:
        uids = [r[0] for r in conn.execute(
            "SELECT call_uid FROM api_calls ORDER BY started_ts DESC LIMIT ?", (last,))]
        for uid in uids:
            conn.execute("UPDATE api_calls SET started_ts = started_ts + ? WHERE call_uid = ?",
                         (seconds, uid))
    conn.close()


def run_calls(home: Path, server: StandIn, bodies: list[dict], between=None) -> list[dict]:
    with mitmdump(home, server.url) as port:
        for index, request in enumerate(bodies):
            if index and between is not None:
                between(index)
            status, _, _ = post(port, request, session="s1")
            assert status == 200
            db_rows(home, expect=index + 1)
    return db_rows(home, expect=len(bodies))


def test_the_normal_turn_reads_the_cache_and_wastes_nothing(home, cached_api):
    server, _ = cached_api
    rows = run_calls(home, server, [body(FIRST), body(SECOND)])
    assert [(r["cache_read_tokens"], r["cache_write_5m_tokens"]) for r in rows] == [
        (0, 6001), (6001, 510)]
    assert [r["cache_change"] for r in rows] == [None, None]
    doc = waste_json("--session", "s1")
    assert doc["rows"] == []
    assert doc["meta"]["pending_tokens"] == 510 + 0  # the first write was read; the second waits


@pytest.mark.parametrize("cause", ["tools", "system", "message", "model", "unknown"])
def test_each_change_of_the_prefix_is_priced_and_named(home, cached_api, cause):
    server, cache = cached_api
    second = {
        "tools": body(SECOND, tool_words=999),
        "system": body(SECOND, system=words(2000, "v")),
        "message": body([("user", words(3000, "x")), *SECOND[1:]]),
        "model": body(SECOND, model="claude-sonnet-4-6"),
        "unknown": body(SECOND),
    }[cause]
    evict = (lambda index: cache._entries.clear()) if cause == "unknown" else None
    rows = run_calls(home, server, [body(FIRST), second], between=evict)
    first, bust = rows
    assert first["cache_write_5m_tokens"] == 6001
    # what the cache could keep: tools + system (3,001) survive a message edit only
    read = 3001 if cause == "message" else 0
    assert bust["cache_read_tokens"] == read
    lost = 6001 - read
    [loss] = waste_json("--session", "s1")["rows"]
    assert (loss["kind"], loss["cause"], loss["tokens"]) == ("rewrite", cause, lost)
    rate = {"model": 3_750_000 - 300_000}.get(cause, 6_250_000 - 500_000)  # pico per token
    assert loss["waste_picousd"] == lost * rate
    if cause == "message":
        assert loss["message_index"] == 0
    if cause == "tools":  # by hand: 6,001 x ($6.25 - $0.50) per MTok = $0.03450575
        assert Decimal(loss["waste_usd"]) == Decimal("0.03450575")


def test_a_one_hour_write_rewritten_is_priced_one_hour_part_first(home, cached_api):
    server, _ = cached_api
    rows = run_calls(home, server, [body(FIRST, system_ttl="1h"),
                                    body(SECOND, system_ttl="1h", system=words(2000, "v"))])
    assert (rows[0]["cache_write_1h_tokens"], rows[0]["cache_write_5m_tokens"]) == (3001, 3000)
    assert (rows[1]["cache_write_1h_tokens"], rows[1]["cache_write_5m_tokens"]) == (3001, 3510)
    [loss] = waste_json("--session", "s1")["rows"]
    assert (loss["cause"], loss["tokens_1h"], loss["tokens_5m"]) == ("system", 3001, 3000)
    # 3,001 x ($10 - $0.50) + 3,000 x ($6.25 - $0.50) = $0.0285095 + $0.01725 = $0.0457595
    assert Decimal(loss["waste_usd"]) == Decimal("0.0457595")


def test_an_expired_cache_is_a_ttl_rewrite_with_the_minutes_idle(home, cached_api):
    server, cache = cached_api

    def idle(index):
        cache.clock.advance(7 * 60)

    run_calls(home, server, [body(FIRST), body(SECOND)], between=idle)
    shift(home, 7 * 60)
    [loss] = waste_json("--session", "s1")["rows"]
    assert (loss["cause"], loss["idle_minutes"], loss["tokens"]) == ("ttl", 7, 6001)
    assert loss["waste_picousd"] == 6001 * 5_750_000


def test_a_write_never_read_is_waste_once_its_lifetime_ran_out(home, cached_api):
    server, _ = cached_api
    run_calls(home, server, [body(FIRST)])
    assert waste_json("--session", "s1")["rows"] == []  # pending: five minutes not over
    shift(home, -6 * 60)
    doc = waste_json("--session", "s1")
    [loss] = doc["rows"]
    assert (loss["kind"], loss["cause"], loss["tokens"]) == ("never_read", "never_read", 6001)
    # 6,001 x ($6.25 - $5) per MTok = $0.00750125: plain input was the alternative
    assert Decimal(loss["waste_usd"]) == Decimal("0.00750125")
    summary = waste_json("--since", "1d")
    assert summary["rows"][0]["cause"] == "never_read"
    assert summary["totals"]["waste_picousd"] == 6001 * 1_250_000
    # waste is a part of spend: the call cost 6,001 x $6.25 + 5 x $25 per MTok
    assert summary["meta"]["spend_picousd"] == (6001 * 6_250_000 + 5 * 25_000_000)


def test_a_rewritten_write_is_not_also_never_read(home, cached_api):
    server, _ = cached_api
    run_calls(home, server, [body(FIRST), body(SECOND, tool_words=999)])
    shift(home, -2 * 3600, last=2)  # both long past their lifetime
    losses = waste_json("--session", "s1")["rows"]
    # the first write was re-written by the second call (counted there, as tools);
    # the second call's own write (the shorter tools, system, the conversation: 6,510) was
    # 6,001 tokens re-written and 509 fresh: only those 509 are "never read"
    assert [(x["cause"], x["tokens"]) for x in losses] == [("tools", 6001),
                                                          ("never_read", 509)]


def test_waste_by_cause_project_session_and_day_in_every_format(home, cached_api):
    server, _ = cached_api
    run_calls(home, server, [body(FIRST), body(SECOND, tool_words=999)])
    by_cause = waste_json("--since", "7d")
    assert [(r["cause"], r["calls"], r["rewrite_tokens"]) for r in by_cause["rows"]] == [
        ("tools", 1, 6001)]
    for group in ("project", "session", "day"):
        doc = waste_json("--since", "7d", "--by", group)
        assert doc["totals"]["waste_picousd"] == 6001 * 5_750_000, group
        assert doc["meta"]["group_by"] == group
    csv_out = CliRunner().invoke(app, ["waste", "--since", "7d", "--format", "csv"])
    assert csv_out.exit_code == 0
    assert csv_out.output.splitlines()[0] == (
        "cause,calls,rewrite_tokens,never_read_tokens,waste_usd,waste_picousd")
    # waste is a part of spend: the same period's spend is report's total
    report = json.loads(CliRunner().invoke(
        app, ["report", "--since", "7d", "--source", "wire", "-f", "json"]).output)
    assert by_cause["meta"]["spend_picousd"] == report["totals"]["cost_picousd"]
    assert by_cause["totals"]["waste_picousd"] < report["totals"]["cost_picousd"]
    table = CliRunner().invoke(app, ["waste", "--since", "7d"])
    assert table.exit_code == 0 and "tools" in table.output and "$0.0345" in table.output
    turns = CliRunner().invoke(app, ["waste", "--session", "s1"])
    assert turns.exit_code == 0 and "tools" in turns.output, turns.output


def test_no_prompt_text_is_stored(home, cached_api):
    server, _ = cached_api
    secret = "zebra-quokka-secret"
    run_calls(home, server, [body([("user", secret + " " + words(10))])])
    for path in home.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    [row] = db_rows(home, expect=1)
    key = json.loads(row["cache_key_json"])
    assert key["messages"] == 1 and [b["at"] for b in key["breakpoints"]] == [
        "system.0", "messages.0.0"]
    assert time.time() - row["started_ts"] < 120


def test_the_status_line_and_watch_show_the_sessions_waste(home, cached_api):
    from ccmeter import store
    from ccmeter.statusline import statusline_text
    from ccmeter.views.watch import render_watch_frame, watch_renderables

    server, _ = cached_api
    run_calls(home, server, [body(FIRST), body(SECOND, tool_words=999)])
    line = statusline_text(json.dumps({"session_id": "s1"}), cfg={})
    assert "cache waste $0.0345" in line, line
    db = store.connect_migrated(home / "ccmeter.db")
    try:
        frame = render_watch_frame(db, {}, width=100, waste=True)
        once = render_watch_frame(db, {}, width=100)  # watch --once: answers without pricing
        live = watch_renderables(db, {}, width=100)
    finally:
        db.conn.close()
    assert "cache waste $0.0345" in frame, frame
    assert "cache waste" not in once
    from rich.console import Console

    console = Console(width=100, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(*live)
    assert "cache waste $0.0345" in console.export_text()


def test_the_status_line_warns_when_a_sessions_spend_jumps(home):
    from ccmeter import store
    from ccmeter.statusline import statusline_text

    now = time.time()
    db = store.connect(home / "ccmeter.db")
    rows = [{"call_uid": f"c{i}", "started_at": "x", "started_ts": now - 3600 + i * 300,
             "status": "ok", "session_id": "r", "model": "claude-opus-4-8",
             "cost_picousd": 10**12 // 11, "updated_ts": now} for i in range(11)]
    rows.append({"call_uid": "burst", "started_at": "x", "started_ts": now - 60, "status": "ok",
                 "session_id": "r", "model": "claude-opus-4-8", "cost_picousd": 10**12,
                 "updated_ts": now})
    store.upsert_calls(db, rows)
    db.conn.close()
    line = statusline_text(json.dumps({"session_id": "r"}), cfg={}, now=now)
    assert "⚠ spend 11× its norm" in line, line
