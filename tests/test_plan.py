"""``ccmeter plan``: the 5-hour and 7-day windows from the plan headers the proxy recorded.

The window arithmetic is checked by hand on made-up calls; the command end to end through a
real proxy, against the stand-in answering as a subscription does (utilization rising call
by call, windows that reset)."""

from __future__ import annotations

import json
import time

import pytest
from standin import StandIn, message_events, sse_reply
from typer.testing import CliRunner
from userproxy import UserProxy, calls

from ccmeter import config, store
from ccmeter.cli import app
from ccmeter.planwindows import PlanCall, plan_windows, window

H = 3600.0
NOW = 1_800_000_000.0


def c(ts: float, session: str, u5: float, r5: float, *, project: str = "web",
      u7: float | None = None, r7: float | None = None, binding: str | None = None) -> PlanCall:
    return PlanCall(ts, session, project, u5, r5, u7, r7, binding)


def test_shares_are_the_steps_of_each_sessions_calls():
    reset = NOW + 2 * H  # the window began at NOW - 3h
    calls_ = [
        c(NOW - 6 * H, "old", 0.90, NOW - 1 * H),  # an earlier window: not in this one
        c(NOW - 2.5 * H, "a", 0.10, reset),
        c(NOW - 2.4 * H, "b", 0.18, reset),
        c(NOW - 2.3 * H, "a", 0.25, reset),
        c(NOW - 2.3 * H + 1, "b", 0.22, reset),  # answered out of order: a step of 0
        c(NOW - 2.0 * H, "b", 0.31, reset),
        c(NOW - 1.0 * H, "a", 0.40, reset, binding="five_hour"),
    ]
    w = window(calls_, "5h", NOW)
    assert (w.utilization, w.resets_at, w.calls, w.binding) == (0.40, reset, 6, True)
    shares = {s.key: (s.calls, round(s.share, 9)) for s in w.shares}
    # a: 0.10 + (0.25 - 0.18) + (0.40 - 0.31); b: (0.18 - 0.10) + 0 + (0.31 - 0.25)
    assert shares == {"a": (3, 0.26), "b": (3, 0.14)}
    assert round(sum(s.share for s in w.shares), 9) == 0.40
    # the rate: the last hour before the newest call (NOW-2h .. NOW-1h) gained 0.40 - 0.31
    assert w.rate_per_hour == pytest.approx(0.09)
    # 0.60 left at 0.09/h: 6h40m after NOW - 1h, which is after the reset (NOW + 2h)
    assert w.runs_out_at is None
    by_project = window(calls_, "5h", NOW, by="project")
    assert [(s.key, round(s.share, 9)) for s in by_project.shares] == [("web", 0.40)]


def test_run_out_before_the_reset_at_the_current_rate():
    reset = NOW + 4 * H  # began NOW - 1h: measured from the window's start, from 0
    w = window([c(NOW - 0.5 * H, "a", 0.20, reset), c(NOW, "a", 0.50, reset)], "5h", NOW)
    assert w.rate_per_hour == pytest.approx(0.50)
    assert w.runs_out_at == pytest.approx(NOW + 1 * H)  # 0.50 left at 0.50/h
    full = window([c(NOW - 0.5 * H, "a", 1.0, reset)], "5h", NOW)
    assert full.runs_out_at == NOW - 0.5 * H


def test_a_window_that_reset_since_the_last_call_and_one_never_seen():
    past = [c(NOW - 6 * H, "a", 0.7, NOW - 1 * H, u7=0.2, r7=NOW + 3 * 86400)]
    five, seven = plan_windows(past, NOW)
    assert five.reset_passed and five.utilization is None and five.shares == ()
    assert seven.utilization == 0.2 and not seven.reset_passed
    assert [s.key for s in seven.shares] == ["a"]
    assert window([c(NOW, "a", 0.1, NOW + H)], "7d", NOW).utilization is None


def test_plan_without_plan_headers_says_so(user_dirs):
    db = store.connect(config.paths().db_file)
    store.upsert_calls(db, [{"call_uid": "k", "started_ts": time.time(), "started_at": "x",
                             "status": "ok", "updated_ts": time.time()}])
    db.conn.close()
    result = CliRunner().invoke(app, ["plan"])
    assert result.exit_code == 0 and "No plan usage seen yet" in result.output
    bad = CliRunner().invoke(app, ["plan", "--by", "model"])
    assert isinstance(bad.exception, config.CCMeterError)


def _headers(u5: float, r5: float, u7: float, r7: float) -> dict[str, str]:
    return {"anthropic-ratelimit-unified-status": "allowed",
            "anthropic-ratelimit-unified-5h-utilization": str(u5),
            "anthropic-ratelimit-unified-5h-reset": str(int(r5)),
            "anthropic-ratelimit-unified-7d-utilization": str(u7),
            "anthropic-ratelimit-unified-7d-reset": str(int(r7)),
            "anthropic-ratelimit-unified-representative-claim": "five_hour"}


def test_plan_through_a_real_proxy(user_dirs, tmp_path):
    now = time.time()
    reset_5h, reset_7d = now + 2 * H, now + 3 * 86400
    # (session, project folder, 5h, 7d): two sessions take turns, utilization rising
    script = [("sess-a", "/src/api", 0.10, 0.05), ("sess-b", "/src/web", 0.18, 0.06),
              ("sess-a", "/src/api", 0.25, 0.08), ("sess-b", "/src/web", 0.31, 0.09),
              ("sess-a", "/src/api", 0.40, 0.11)]
    body = json.dumps({"model": "claude-opus-4-8", "max_tokens": 100, "stream": True,
                       "system": "x", "messages": [{"role": "user", "content": "hi"}]})
    with StandIn() as standin, UserProxy(standin.url, tmp_path) as proxy:
        for session, cwd, u5, u7 in script:
            standin.enqueue(sse_reply(message_events(),
                                      headers=_headers(u5, reset_5h, u7, reset_7d)))
            request = json.loads(body)
            request["system"] = f"You are Claude Code.\n - Primary working directory: {cwd}\n"
            status, _, _ = proxy.post(json.dumps(request).encode(), {
                "x-api-key": "", "authorization": "Bearer sk-ant-oat01-T",
                "x-claude-code-session-id": session})
            assert status == 200
        rows = calls(user_dirs.db_file, len(script))
    assert [r["plan_5h_utilization"] for r in rows] == [0.10, 0.18, 0.25, 0.31, 0.40]

    runner = CliRunner()
    result = runner.invoke(app, ["plan", "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    five, seven = doc["meta"]["windows"]
    assert (five["window"], five["utilization"], five["calls"]) == ("5h", 0.40, 5)
    assert five["binding"] is True and seven["binding"] is False
    assert five["resets_at"] is not None and five["reset_passed"] is False
    assert seven["utilization"] == 0.11
    got = {(r["window"], r["session"]): (r["project"], r["calls"], round(r["share"], 9))
           for r in doc["rows"]}
    # by hand: a = 0.10 + 0.07 + 0.09, b = 0.08 + 0.06; 7d: a = 0.05 + 0.02 + 0.02, b = 0.02
    assert got == {("5h", "sess-a"): ("api", 3, 0.26), ("5h", "sess-b"): ("web", 2, 0.14),
                   ("7d", "sess-a"): ("api", 3, 0.09), ("7d", "sess-b"): ("web", 2, 0.02)}

    table = runner.invoke(app, ["plan"])
    assert table.exit_code == 0, table.output
    assert "Plan windows" in table.output and "40%" in table.output
    assert "Share of each window by session" in table.output and "26%" in table.output
    by_project = json.loads(runner.invoke(app, ["plan", "-b", "project", "-f", "json"]).output)
    assert {(r["window"], r["project"]): round(r["share"], 9) for r in by_project["rows"]} == {
        ("5h", "api"): 0.26, ("5h", "web"): 0.14, ("7d", "api"): 0.09, ("7d", "web"): 0.02}
    csv_out = runner.invoke(app, ["plan", "-f", "csv"]).output.splitlines()
    assert csv_out[0] == "window,session,project,calls,share" and len(csv_out) == 5


def test_utilization_over_time_hour_by_hour():
    from ccmeter.planwindows import by_hour

    base = 1_800_000_000.0 - (1_800_000_000.0 % H)  # the start of an hour
    calls_ = [c(base + 60, "a", 0.10, base + 2 * H), c(base + 600, "a", 0.30, base + 2 * H),
              c(base + 700, "b", 0.25, base + 2 * H),  # late, lower: the hour's high stays
              c(base + H + 10, "a", 0.95, base + 2 * H),
              c(base + 2 * H + 30, "a", 0.05, base + 7 * H)]  # the window reset
    hours = by_hour(calls_, base)
    assert [(h.start - base, h.calls, h.util_5h, h.reset_5h) for h in hours] == [
        (0, 3, 0.30, False), (H, 1, 0.95, False), (2 * H, 1, 0.05, True)]
    assert by_hour(calls_, base + H) == hours[1:]


def test_plan_by_hour_from_the_cli(user_dirs):
    now = time.time()
    db = store.connect(config.paths().db_file)
    store.upsert_calls(db, [{"call_uid": f"k{i}", "started_ts": now - 3 * H + i * H,
                             "started_at": "x", "status": "ok", "updated_ts": now,
                             "plan_5h_utilization": u, "plan_5h_reset": now + H,
                             "plan_7d_utilization": u / 4, "plan_7d_reset": now + 86400}
                            for i, u in enumerate((0.2, 0.4, 0.6))])
    db.conn.close()
    result = CliRunner().invoke(app, ["plan", "--by", "hour", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["rows"]
    assert [(r["calls"], r["used_5h"], r["used_7d"]) for r in rows] == [
        (1, 0.2, 0.05), (1, 0.4, 0.1), (1, 0.6, 0.15)]
    table = CliRunner().invoke(app, ["plan", "--by", "hour"])
    assert "Plan windows by hour" in table.output and "60%" in table.output
