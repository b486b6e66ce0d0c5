"""Reports against a database written through the store (and once through the real proxy),
checked against figures computed independently here."""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from ccmeter import config, reports, sessions, store
from ccmeter.cli import app
from ccmeter.pricing import Catalog
from ccmeter.usage import Usage

CATALOG = Catalog.bundled()
PROJECTS = ("api-server", "web", "infra")
#: (model, speed, inference_geo): a plain, a fast, a US-geo, a long-context era, an unknown.
VARIANTS = [
    ("claude-opus-4-8", None, None),
    ("claude-opus-4-8", "fast", None),
    ("claude-sonnet-5", None, "us"),
    ("claude-haiku-4-5-20251001", None, None),
    ("claude-sonnet-4-5-20250929", None, None),
    ("claude-unknown-7", None, None),
]



@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def usage_of(row: dict) -> Usage:
    return Usage(input_tokens=row["input_tokens"],
                 cache_write_5m_tokens=row["cache_write_5m_tokens"],
                 cache_write_1h_tokens=row["cache_write_1h_tokens"],
                 cache_read_tokens=row["cache_read_tokens"],
                 output_tokens=row["output_tokens"], speed=row.get("speed"),
                 inference_geo=row.get("inference_geo"))


def make_rows(count: int, start: float, span: float, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        model, speed, geo = rng.choice(VARIANTS)
        ts = start + rng.random() * span
        long_prompt = rng.random() < 0.15
        row = {
            "call_uid": f"call-{seed}-{i:05d}",
            "started_at": datetime.fromtimestamp(ts, UTC).isoformat(),
            "started_ts": ts,
            "session_id": f"sess-{rng.randint(0, 7):02d}-{seed}",
            "project": rng.choice(PROJECTS),
            "model": model,
            "speed": speed,
            "inference_geo": geo,
            "status": "ok",
            "call_kind": rng.choice(("main", "main", "subagent", "auxiliary")),
            "input_tokens": rng.randint(1, 5000),
            "cache_write_5m_tokens": rng.choice((0, rng.randint(1, 9000))),
            "cache_write_1h_tokens": rng.choice((0, 0, rng.randint(1, 4000))),
            "cache_read_tokens": rng.randint(200_001, 260_000) if long_prompt
            else rng.randint(0, 90_000),
            "output_tokens": rng.randint(1, 3000),
            "updated_ts": ts,
        }
        if row["call_kind"] == "subagent":
            row["agent_id"] = f"agent-{rng.randint(1, 3)}"
        row["cost_picousd"] = CATALOG.price(model, usage_of(row), datetime.fromtimestamp(
            ts, UTC)).cost_picousd
        rows.append(row)
    return rows


def independent_savings(row: dict) -> Decimal:
    """Caching saved = price with every cached token as plain input - the actual price."""
    at = datetime.fromtimestamp(row["started_ts"], UTC)
    actual = usage_of(row)
    plain = Usage(input_tokens=actual.prompt_tokens, output_tokens=actual.output_tokens,
                  speed=actual.speed, inference_geo=actual.inference_geo)
    with_cache = CATALOG.price(row["model"], actual, at).cost_usd
    without = CATALOG.price(row["model"], plain, at).cost_usd
    return (without - with_cache) * 10**12


def fill(home, rows) -> object:
    db = store.connect(config.paths().db_file)
    store.upsert_calls(db, rows)
    return db


def test_totals_and_groups_match_an_independent_sum(home):
    # 2026-02-20 .. 2026-03-20: claude-sonnet-4-5 still has its long-context tier then.
    rows = make_rows(600, datetime(2026, 2, 20, tzinfo=UTC).timestamp(), 28 * 86400)
    db = fill(home, rows)
    rep = reports.build_report(db, ["project"], reports.Filters(), CATALOG)
    assert rep.totals["calls"] == 600
    for field in reports.TOKEN_FIELDS:
        assert rep.totals[field] == sum(r[field] for r in rows)
    priced = [r for r in rows if r["cost_picousd"] is not None]
    assert rep.totals["cost"] == sum(r["cost_picousd"] for r in priced)
    assert rep.totals["unpriced_calls"] == len(rows) - len(priced)
    expected_saved = sum(independent_savings(r) for r in priced)
    assert rep.totals["cache_savings"] == int(expected_saved)
    assert expected_saved == int(expected_saved)  # exact: no rounding anywhere

    by_project = defaultdict(lambda: [0, 0, Decimal(0)])
    for r in rows:
        by_project[r["project"]][0] += 1
        if r["cost_picousd"] is not None:
            by_project[r["project"]][1] += r["cost_picousd"]
            by_project[r["project"]][2] += independent_savings(r)
    got = {r["project"]: [r["calls"], r["cost"], r["cache_savings"]] for r in rep.rows}
    assert got == {p: [c, cost, int(s)] for p, (c, cost, s) in by_project.items()}
    costs = [r["cost"] for r in rep.rows]
    assert costs == sorted(costs, reverse=True)


def test_long_context_calls_are_saved_at_the_long_context_rate(home):
    ts = datetime(2026, 3, 1, 12, tzinfo=UTC).timestamp()
    row = {"call_uid": "lc", "started_at": "2026-03-01T12:00:00Z", "started_ts": ts,
           "model": "claude-sonnet-4-5-20250929", "status": "ok", "input_tokens": 10,
           "cache_write_5m_tokens": 0, "cache_write_1h_tokens": 0,
           "cache_read_tokens": 250_000, "output_tokens": 5, "updated_ts": ts}
    row["cost_picousd"] = CATALOG.price(row["model"], usage_of(row), datetime.fromtimestamp(
        ts, UTC)).cost_picousd
    db = fill(home, [row])
    rep = reports.build_report(db, ["model"], reports.Filters(), CATALOG)
    # long-context row for Sonnet 4.5: input 6, cache read 0.6 -> 5.4 $/MTok saved.
    assert rep.totals["cache_savings"] == 250_000 * 5_400_000
    assert rep.totals["cache_savings"] == int(independent_savings(row))


def test_unpriced_is_never_zero(home):
    ts = time.time() - 60
    db = fill(home, [{"call_uid": "u1", "started_at": "x", "started_ts": ts,
                      "model": "claude-unknown-7", "status": "ok", "project": "p",
                      "input_tokens": 100, "cost_picousd": None, "updated_ts": ts}])
    rep = reports.build_report(db, ["project"], reports.Filters(), CATALOG)
    assert rep.rows[0]["cost"] is None and rep.rows[0]["unpriced_calls"] == 1
    assert rep.rows[0]["cache_savings"] is None
    assert rep.totals["cost"] is None


def test_time_buckets_are_local_and_survive_daylight_saving(home, monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        # Clocks go back on 2026-10-25 03:00 CEST -> 02:00 CET: that local day has 25 hours.
        start = datetime(2026, 10, 24, 22, 0, tzinfo=UTC).timestamp()  # 2026-10-25 00:00 CEST
        rows = []
        for hour in range(26):
            ts = start + hour * 3600 + 60
            rows.append({"call_uid": f"h{hour}", "started_at": "x", "started_ts": ts,
                         "model": "claude-opus-4-8", "status": "ok", "project": "p",
                         "input_tokens": 1, "cost_picousd": 1, "updated_ts": ts})
        db = fill(home, rows)
        rep = reports.build_report(db, ["day"], reports.Filters(
            since=start, until=start + 26 * 3600), CATALOG)
        counts = {r["day"]: r["calls"] for r in rep.rows}
        assert counts == {"2026-10-25": 25, "2026-10-26": 1}
        hours = reports.build_report(db, ["hour"], reports.Filters(
            since=start, until=start + 26 * 3600), CATALOG)
        labels = [r["hour"] for r in hours.rows]
        assert "2026-10-25 02:00 CEST" in labels and "2026-10-25 02:00 CET" in labels
        assert len(labels) == len(set(labels)) == 26
        week = reports.build_report(db, ["week"], reports.Filters(), CATALOG)
        assert {r["week"] for r in week.rows if r["calls"]} == {"2026-10-19", "2026-10-26"}
        month = reports.build_report(db, ["month"], reports.Filters(), CATALOG, fill_gaps=False)
        assert [r["month"] for r in month.rows] == ["2026-10"]
    finally:
        monkeypatch.undo()
        time.tzset()


def test_two_dimensions_and_filters(home, utc):
    start = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
    rows = make_rows(300, start, 10 * 86400, seed=3)
    db = fill(home, rows)
    since = datetime(2026, 11, 3, tzinfo=UTC).timestamp()
    until = datetime(2026, 11, 8, tzinfo=UTC).timestamp()
    rep = reports.build_report(db, ["model", "day"], reports.Filters(
        since=since, until=until, project="web", model="OPUS"), CATALOG)
    chosen = [r for r in rows if since <= r["started_ts"] < until and r["project"] == "web"
              and "opus" in r["model"]]
    assert rep.totals["calls"] == len(chosen)
    expected = defaultdict(int)
    for r in chosen:
        expected[(r["model"], datetime.fromtimestamp(r["started_ts"], UTC).strftime(
            "%Y-%m-%d"))] += 1
    assert {(r["model"], r["day"]): r["calls"] for r in rep.rows} == expected
    assert all("bar" in r for r in rep.rows)


def test_day_series_fills_idle_days(home, utc):
    ts = datetime(2026, 11, 2, 12, tzinfo=UTC).timestamp()
    db = fill(home, [{"call_uid": "a", "started_at": "x", "started_ts": ts, "status": "ok",
                      "model": "claude-opus-4-8", "cost_picousd": 5, "updated_ts": ts}])
    rep = reports.build_report(db, ["day"], reports.Filters(
        since=datetime(2026, 11, 1, tzinfo=UTC).timestamp(),
        until=datetime(2026, 11, 4, tzinfo=UTC).timestamp()), CATALOG)
    assert [(r["day"], r["calls"]) for r in rep.rows] == [
        ("2026-11-01", 0), ("2026-11-02", 1), ("2026-11-03", 0)]


def test_bad_groupings():
    for dims in ([], ["colour"], ["day", "week"], ["project", "model", "day"]):
        with pytest.raises(ValueError):
            reports.validate_dimensions(dims)


def test_sessions_and_prefixes(home):
    now = time.time()
    rows = make_rows(120, now - 3 * 86400, 3 * 86400, seed=5)
    db = fill(home, rows)
    found = sessions.list_sessions(db, reports.Filters(since=now - 7 * 86400), limit=0)
    assert sum(s.calls for s in found) == 120
    assert [s.last_ts for s in found] == sorted((s.last_ts for s in found), reverse=True)
    target = found[0].session_id
    assert sessions.resolve_session(db, target[:7] + target[7:]) == target
    with pytest.raises(ValueError, match="matches"):
        sessions.resolve_session(db, "sess-0")
    with pytest.raises(ValueError, match="no session"):
        sessions.resolve_session(db, "nope")
    detail = sessions.session_detail(db, target)
    mine = [r for r in rows if r["session_id"] == target]
    assert [c["call_uid"] for c in detail.calls] == [
        r["call_uid"] for r in sorted(mine, key=lambda r: r["started_ts"])]
    subagent = [c for c in detail.calls if c["call_kind"] == "subagent"]
    assert all(c["agent"].startswith("└ agent-") for c in subagent)
    assert detail.agents[0]["agent"] == "main"
    assert sum(a["calls"] for a in detail.agents) == len(mine)


def test_the_session_list_limits_before_it_groups(home):
    # the limit picks the most recently active sessions (ties by id, calls without a session
    # first among equals) before their calls are grouped; each shown session keeps all its
    # calls matching the filters, models in name order
    now = 1_800_000_000.0
    calls = [("b", now, "claude-opus-4-8", "web"), ("b", now - 900, "claude-haiku-4-5", "web"),
             ("a", now, "claude-opus-4-8", "api"), (None, now, "claude-opus-4-8", None),
             (None, now - 50, "claude-sonnet-5", "web"), ("c", now - 10, None, "web"),
             ("d", now - 5000, "claude-opus-4-8", "api"), ("d", now - 20, "claude-opus-4-8", "x")]
    db = fill(home, [{"call_uid": f"u{i}", "started_at": "x", "started_ts": ts, "status": "ok",
                      "session_id": sid, "model": model, "project": project,
                      "cost_picousd": None if model is None else 7, "updated_ts": ts}
                     for i, (sid, ts, model, project) in enumerate(calls)])
    everything = sessions.list_sessions(db, reports.Filters(), limit=0)
    assert [s.session_id for s in everything] == [None, "a", "b", "c", "d"]
    assert [s.session_id for s in sessions.list_sessions(db, reports.Filters(), 4)] == [
        None, "a", "b", "c"]
    first = sessions.list_sessions(db, reports.Filters(), 3)
    assert [(s.session_id, s.calls, len(s.project_names), list(s.models)) for s in first] == [
        (None, 2, 1, ["claude-opus-4-8", "claude-sonnet-5"]), ("a", 1, 1, ["claude-opus-4-8"]),
        ("b", 2, 1, ["claude-haiku-4-5", "claude-opus-4-8"])]
    assert first[2].first_ts == now - 900 and first[2].cost_picousd == 14
    recent = sessions.list_sessions(db, reports.Filters(since=now - 100, project="web"), 2)
    assert [(s.session_id, s.calls) for s in recent] == [("b", 1), ("c", 1)]
    unpriced = sessions.list_sessions(db, reports.Filters(since=now - 100), 0)
    assert [(s.session_id, s.cost_picousd, s.unpriced_calls) for s in unpriced][3:] == [
        ("c", None, 1), ("d", 7, 0)]
    # a session of transcript calls only comes after the wire's among equals; a session with
    # both has its wire models first
    for key, sid, model in (("t1", "0-transcript", "claude-haiku-4-5"),
                            ("t2", "b", "claude-sonnet-5")):
        db.execute("INSERT INTO transcript_calls (call_key, started_at, started_ts, session_id, "
                   "model, cost_picousd, updated_ts) VALUES (?, 'x', ?, ?, ?, 3, ?)",
                   [key, now, sid, model, now])
    both = sessions.list_sessions(db, reports.Filters(), 5)
    assert [s.session_id for s in both] == [None, "a", "b", "0-transcript", "c"]
    assert list(both[2].models) == ["claude-haiku-4-5", "claude-opus-4-8", "claude-sonnet-5"]
    assert (both[2].calls, both[2].transcript_calls, both[2].cost_picousd) == (3, 1, 17)
    assert [s.session_id for s in sessions.list_sessions(
        db, reports.Filters(source="transcript"), 0)] == ["0-transcript", "b"]


def test_report_cli_human_and_json(home):
    now = time.time()
    rows = make_rows(80, now - 5 * 86400, 5 * 86400 - 60, seed=9)
    fill(home, rows).conn.close()
    runner = CliRunner()
    result = runner.invoke(app, ["report", "--by", "project", "--since", "30d"])
    assert result.exit_code == 0, result.output
    assert "Spend by project" in result.output and "total" in result.output
    assert "unpriced" in result.output.lower()
    assert "\x1b[" not in result.output
    result = runner.invoke(app, ["report", "--by", "project", "--since", "30d", "-f", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    priced = sum(r["cost_picousd"] for r in rows if r["cost_picousd"] is not None)
    assert doc["totals"]["cost_picousd"] == priced
    assert Decimal(doc["totals"]["cost_usd"]) == Decimal(priced) / 10**12
    assert doc["meta"]["group_by"] == ["project"]
    assert {"project", "calls", "input_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens",
            "cache_read_tokens", "output_tokens", "cost_usd", "cost_picousd", "unpriced_calls",
            "cache_savings_usd", "cache_savings_picousd", "source",
            "transcript_calls"} == set(doc["rows"][0])
    assert {r["source"] for r in doc["rows"]} == {"wire"}
    result = runner.invoke(app, ["report", "--by", "model", "--by", "day", "--since", "2w",
                                 "--format", "csv"])
    assert result.exit_code == 0
    header = result.output.splitlines()[0].split(",")
    assert header[:3] == ["model", "day", "calls"]
    result = runner.invoke(app, ["report"])
    assert result.exit_code == 0 and "Today by project" in result.output
    assert "This week by project" in result.output
    result = runner.invoke(app, ["report", "-f", "json"])
    assert {r["period"] for r in json.loads(result.output)["rows"]} <= {"today", "this week"}
    result = runner.invoke(app, ["report", "--by", "provider", "-f", "json"])
    assert result.exit_code == 0, result.output
    assert {r["provider"] for r in json.loads(result.output)["rows"]} == {"anthropic"}
    assert "Provider" in runner.invoke(app, ["report", "--by", "provider"]).output
    result = runner.invoke(app, ["report", "--by", "colour"])
    assert result.exit_code != 0
    result = runner.invoke(app, ["report", "--since", "someday"])
    assert result.exit_code != 0


def test_session_cli_ambiguous_prefix_lists_candidates(home):
    now = time.time()
    fill(home, make_rows(40, now - 3600, 3000, seed=11)).conn.close()
    runner = CliRunner()
    result = runner.invoke(app, ["session", "sess-"])
    assert result.exit_code != 0
    assert "sess-0" in str(result.exception) or "sess-0" in result.output
    result = runner.invoke(app, ["sessions", "-f", "json"])
    assert result.exit_code == 0
    sid = json.loads(result.output)["rows"][0]["session"]
    result = runner.invoke(app, ["session", sid])
    assert result.exit_code == 0 and "Session " + sid in result.output
    result = runner.invoke(app, ["session", sid, "-f", "json"])
    doc = json.loads(result.output)
    assert doc["meta"]["session_id"] == sid and doc["rows"]


def test_report_through_the_real_proxy(home):
    """Calls metered by mitmdump + the addon are what the report adds up."""
    import http.client

    from mitm import MitmDump
    from standin import StandIn, message_events, sse_reply

    with StandIn() as api, MitmDump(home, f"reverse:{api.url}") as proxy:
        sizes = [(120, 3000, 40_000, 200), (80, 0, 43_000, 90), (15, 2000, 0, 30)]
        for input_tokens, write, read, output in sizes:
            api.enqueue(sse_reply(message_events(
                "claude-opus-4-8", input_tokens=input_tokens, cache_write_5m=write,
                cache_read=read, output_tokens=output)))
        for _ in sizes:
            conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
            body = json.dumps({"model": "claude-opus-4-8", "stream": True, "max_tokens": 100,
                               "tools": [{"name": "t"}], "messages": []})
            conn.request("POST", "/v1/messages", body=body, headers={
                "content-type": "application/json", "x-api-key": "sk-test",
                "x-claude-code-session-id": "proxy-session-1"})
            conn.getresponse().read()
            conn.close()
        from mitm import db_rows

        rows = db_rows(home, expect=3)
        assert len(rows) == 3
    db = store.connect(config.paths().db_file)
    rep = reports.build_report(db, ["session"], reports.Filters(), CATALOG)
    expected = sum(
        CATALOG.price("claude-opus-4-8", Usage(input_tokens=i, cache_write_5m_tokens=w,
                                               cache_read_tokens=r, output_tokens=o),
                      datetime.fromtimestamp(row["started_ts"], UTC)).cost_picousd
        for (i, w, r, o), row in zip(sizes, rows, strict=True))
    assert rep.rows[0]["session"] == "proxy-session-1"
    assert rep.totals["cost"] == expected
    assert rep.totals["calls"] == 3
    # opus-4-8: input 5, write 6.25, read 0.5 $/MTok -> read saves 4.5, write costs 1.25 extra
    assert rep.totals["cache_savings"] == (83_000 * 4_500_000 - 5_000 * 1_250_000)


def test_an_empty_report_costs_zero_not_unpriced(home):
    db = fill(home, [])
    rep = reports.build_report(db, ["project"], reports.Filters(), CATALOG)
    db.conn.close()
    assert rep.rows == []
    assert rep.totals["calls"] == 0 and rep.totals["cost"] == 0
    assert rep.totals["cache_savings"] == 0
    runner = CliRunner()
    for args in (["report", "--by", "project", "--since", "30d"], ["report"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "unpriced" not in result.output
        # an empty database says what to do next instead of a table of zeros
        assert result.output == ("No calls recorded yet. Run Claude Code through ccmeter: "
                                 "ccmeter run -- claude\n")
    doc = json.loads(runner.invoke(app, ["report", "--since", "30d", "-f", "json"]).output)
    assert doc["totals"]["cost_picousd"] == 0 and doc["totals"]["cost_usd"] == "0.000000000000"
    assert doc["totals"]["cache_savings_picousd"] == 0


def test_idle_buckets_cost_zero_and_unpriced_stays_none(home, utc):
    ts = datetime(2026, 11, 2, 12, tzinfo=UTC).timestamp()
    db = fill(home, [{"call_uid": "a", "started_at": "x", "started_ts": ts, "status": "ok",
                      "model": "claude-unknown-7", "cost_picousd": None, "updated_ts": ts}])
    rep = reports.build_report(db, ["day"], reports.Filters(
        since=datetime(2026, 11, 1, tzinfo=UTC).timestamp(),
        until=datetime(2026, 11, 3, tzinfo=UTC).timestamp()), CATALOG)
    assert [(r["day"], r["cost"], r["cache_savings"]) for r in rep.rows] == [
        ("2026-11-01", 0, 0), ("2026-11-02", None, None)]
    assert rep.totals["cost"] is None  # calls, none priced: unknown, never $0


@pytest.mark.parametrize("args", [
    ["--since", "2026-12-01", "--until", "2026-11-01"],
    ["--by", "day", "--since", "2026-11-02T10:00", "--until", "2026-11-02T10:00"],
])
def test_an_inverted_range_is_a_one_line_error(home, args):
    result = CliRunner().invoke(app, ["report", *args])
    assert result.stdout == ""
    assert isinstance(result.exception, config.CCMeterError)  # cli.main: one line, exit 2
    message = str(result.exception)
    assert "\n" not in message
    assert message.startswith(f"--since {args[-3]} is not before --until {args[-1]}")


def test_local_calls_count_refused_calls_as_documented_and_team_calls_do_not(home, tmp_path):
    """`calls` differ by design (docs/reports.md, docs/team-share.md): locally every metered
    call including those a cap refused (blocked, $0); in the team share only calls sent."""
    from pathlib import Path

    from ccmeter import share, share_identity

    now = time.time()
    base = {"started_at": "x", "started_ts": now - 60, "model": "claude-opus-4-8",
            "project": "web", "updated_ts": now}
    rows = [base | {"call_uid": "ok", "status": "ok", "cost_picousd": 7 * 10**9},
            base | {"call_uid": "err", "status": "upstream_error", "cost_picousd": 0},
            base | {"call_uid": "b1", "status": "blocked", "cost_picousd": 0},
            base | {"call_uid": "b2", "status": "blocked", "cost_picousd": 0}]
    db = fill(home, rows)
    local = reports.build_report(db, ["project"], reports.Filters(), CATALOG).totals
    [team] = share.summarise(db, share_identity.ShareSettings(user="ana"))
    db.conn.close()
    assert local["calls"] == 4 and local["unpriced_calls"] == 0 and local["cost"] == 7 * 10**9
    assert (team["calls"], team["blocked_calls"]) == (2, 2)
    assert local["calls"] == team["calls"] + team["blocked_calls"]
    docs = Path(__file__).resolve().parent.parent / "docs"
    for name in ("reports.md", "team-share.md"):
        text = " ".join((docs / name).read_text().split())
        assert "refused by a cap" in text and "calls + blocked_calls" in text, name
