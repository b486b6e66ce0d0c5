"""An adversarial review of ``call_rollup`` (migration 12): writes the random test in
tests/test_rollup.py does not make (several rows or columns in one statement, ids swapped,
calls exactly on a quarter-hour or a hair before it, negative and zero counts, '' beside
NULL, the recovered-journal and reprice writers), and reports compared with the code before
(tests/reports_before.py) where the pieces are most likely to be cut wrong: since/until on
slot, hour and day boundaries, ranges shorter than a slot, until in the future, zones whose
clocks move by half an hour (Lord Howe), at midnight (Havana), or sit at +12:45 (Chatham),
price changes inside the range, an empty database and one with transcript calls only, and a
database at schema 11 read without migrating."""

from __future__ import annotations

import random
import time
from datetime import UTC, date, datetime

import pytest
import reports_before
from test_reports import CATALOG, usage_of
from test_rollup import contents, recomputed  # the rollup as it is, and summed afresh

from ccmeter import config, reportread, reports, store
from ccmeter.savings import price_change_days
from ccmeter.store.recovered import insert_missing_calls
from ccmeter.store.transcripts import TRANSCRIPT_COLUMNS, save_transcript_batch
from ccmeter.whatif import check_assumption

QUARTER = 900
BASE = datetime(2026, 3, 1, tzinfo=UTC).timestamp()  # a whole quarter-hour


@pytest.fixture
def db(home):
    return store.connect(config.paths().db_file)


# --- the triggers --------------------------------------------------------------------------

def _moment(rng: random.Random) -> float:
    """On a quarter-hour, a microsecond or half a second before one, or inside one."""
    edge = BASE + rng.randint(0, 12) * QUARTER
    return rng.choice((edge, edge - 1e-6, edge - 0.5, edge + rng.random() * QUARTER))


def _count(rng: random.Random) -> int:
    return rng.choice((0, rng.randint(-5, 5), rng.randint(0, 10**6)))


def _wire(rng: random.Random, uid: str) -> dict:
    ts = _moment(rng)
    return {
        "call_uid": uid, "started_at": "2026-03-01T00:00:00Z", "started_ts": ts,
        "status": "ok", "updated_ts": ts,
        "request_id": rng.choice((None, f"r{rng.randint(0, 8)}")),
        "message_id": rng.choice((None, f"m{rng.randint(0, 8)}")),
        "session_id": rng.choice((None, "", "s1")), "project": rng.choice((None, "", "a", "A")),
        "model": rng.choice((None, "", "m1")), "speed": rng.choice((None, "fast")),
        "service_tier": rng.choice((None, "batch")), "inference_geo": rng.choice((None, "us")),
        "provider": rng.choice(("anthropic", "")),
        **{c: _count(rng) for c in ("input_tokens", "cache_read_tokens", "output_tokens",
                                    "cache_write_5m_tokens", "cache_write_1h_tokens")},
        "cost_picousd": rng.choice((None, 0, rng.randint(-10, 10**12))),
    }


def _transcript(rng: random.Random, key: str) -> dict:
    row = _wire(rng, "unused")
    return {**dict.fromkeys(TRANSCRIPT_COLUMNS),
            **{k: v for k, v in row.items() if k in TRANSCRIPT_COLUMNS},
            "call_key": key, "call_kind": "main", "thinking_tokens": 0,
            "web_search_requests": 0, "web_fetch_requests": 0}


#: What an UPDATE may set: the place, the sums, the ids, and columns no trigger watches.
_SETTABLE = ("started_ts", "project", "model", "speed", "service_tier", "inference_geo",
             "provider", "session_id", "input_tokens", "cache_read_tokens", "output_tokens",
             "cost_picousd", "request_id", "message_id")


@pytest.mark.parametrize("seed", range(4))
def test_statements_of_many_rows_and_columns_keep_the_rollup_exact(db, seed):
    rng = random.Random(seed)
    reached = set()
    for step in range(200):
        action = rng.random()
        uid, key = f"c{rng.randint(0, 30)}", f"t{rng.randint(0, 30)}"
        if action < 0.15:
            store.upsert_calls(db, [_wire(rng, uid)])
        elif action < 0.25:  # a partial upsert: some columns only
            row = _wire(rng, uid)
            cols = ["call_uid", "started_at", "started_ts", "status", "updated_ts",
                    *rng.sample(_SETTABLE[1:12], rng.randint(1, 5))]
            store.upsert_calls(db, [{c: row[c] for c in cols}])
        elif action < 0.4:  # several columns of several rows in one statement
            cols = rng.sample((*_SETTABLE, "status", "pricing_note"), rng.randint(1, 4))
            row = _wire(rng, "x")
            where = rng.choice(("call_uid = ?", "call_uid >= ?", "call_uid != ?"))
            db.execute(f"UPDATE api_calls SET {', '.join(f'{c} = ?' for c in cols)} "
                       f"WHERE {where}", [row.get(c, "z") for c in cols] + [uid])
        elif action < 0.45:
            db.execute(rng.choice(("DELETE FROM api_calls WHERE call_uid = ?",
                                   "DELETE FROM api_calls WHERE call_uid <= ?")), [uid])
        elif action < 0.5:  # a dead proxy's journal: inserted only where missing
            insert_missing_calls(db, [_wire(rng, uid)])
        elif action < 0.6:
            save_transcript_batch(db, [_transcript(rng, f"t{rng.randint(0, 30)}")
                                       for _ in range(rng.randint(1, 4))], [])
        elif action < 0.75:
            cols = rng.sample(_SETTABLE, rng.randint(1, 4))
            row = _wire(rng, "x")
            where = rng.choice(("call_key = ?", "call_key >= ?"))
            db.execute(f"UPDATE transcript_calls SET {', '.join(f'{c} = ?' for c in cols)} "
                       f"WHERE {where}", [row[c] for c in cols] + [key])
        elif action < 0.8:
            db.execute("DELETE FROM transcript_calls WHERE call_key <= ?", [key])
        elif action < 0.88:
            rows = db.execute("SELECT call_uid, cost_picousd, catalog_version, pricing_note "
                              "FROM api_calls ORDER BY random() LIMIT 3").fetchall()
            store.reprice_calls(db, [{
                "call_uid": r[0], "old_cost_picousd": r[1], "old_catalog_version": r[2],
                "old_pricing_note": r[3], "catalog_version": "v", "pricing_note": None,
                "cost_picousd": rng.choice((None, rng.randint(0, 10**9)))} for r in rows])
        else:  # a wire row's two ids swapped: it hides other transcript rows
            db.execute("UPDATE api_calls SET request_id = message_id, message_id = request_id "
                       "WHERE call_uid >= ?", [uid])
        if step % 10 == 9:
            assert contents(db) == recomputed(db), f"seed {seed} step {step}"
            shown, hidden = db.execute(
                "SELECT (SELECT COUNT(*) FROM imported_calls), (SELECT COUNT(*) FROM "
                "transcript_calls) - (SELECT COUNT(*) FROM imported_calls)").fetchone()
            reached.update(("shown",) * bool(shown) + ("hidden",) * bool(hidden))
    # the data reached transcript rows both shown and hidden by wire rows
    assert reached == {"shown", "hidden"}


def _transcript_calls(db) -> int | None:
    return db.execute("SELECT SUM(calls) FROM call_rollup WHERE source = 'transcript'"
                      ).fetchone()[0]


def test_two_wire_rows_hide_one_transcript_row_until_both_are_gone(db):
    """One by request id, one by message id; the transcript row has its own call_key."""
    rng = random.Random(1)
    row = {**_transcript(rng, "key-1"), "request_id": "r-x", "message_id": "m-x",
           "started_ts": BASE + QUARTER}  # exactly on a quarter-hour
    save_transcript_batch(db, [row], [])
    store.upsert_calls(db, [{**_wire(rng, "w1"), "request_id": "r-x", "message_id": None},
                            {**_wire(rng, "w2"), "request_id": None, "message_id": "m-x"}])
    assert _transcript_calls(db) is None
    db.execute("DELETE FROM api_calls WHERE call_uid = 'w1'")
    assert _transcript_calls(db) is None
    db.execute("UPDATE api_calls SET message_id = NULL WHERE call_uid = 'w2'")
    assert _transcript_calls(db) == 1
    assert contents(db) == recomputed(db)


def test_a_cost_goes_unknown_and_back_in_place(db):
    rng = random.Random(2)
    store.upsert_calls(db, [{**_wire(rng, "a"), "started_ts": BASE, "cost_picousd": 5},
                            {**_wire(rng, "b"), "started_ts": BASE, "cost_picousd": None}])
    db.execute("UPDATE api_calls SET project = NULL, model = NULL, speed = NULL, "
               "service_tier = NULL, inference_geo = NULL, provider = 'p', session_id = NULL")
    for cost in (None, 0, 7, None, -3):
        db.execute("UPDATE api_calls SET cost_picousd = ? WHERE call_uid = 'a'", (cost,))
        assert contents(db) == recomputed(db), cost
    db.execute("UPDATE api_calls SET cost_picousd = NULL")
    assert db.execute("SELECT priced_calls, cost_picousd FROM call_rollup").fetchall() == [
        (0, None)]


# --- the reports ---------------------------------------------------------------------------

#: (model, speed, inference_geo, service_tier): long-context, fast, US, batch, unknown, later.
VARIANTS = [("claude-opus-4-8", None, None, None), ("claude-opus-4-8", "fast", None, None),
            ("claude-sonnet-5", None, "us", None), ("claude-sonnet-5", None, None, "batch"),
            ("claude-haiku-4-5-20251001", None, None, None),
            ("claude-sonnet-4-5-20250929", None, None, None),
            ("claude-unknown-7", None, None, None), ("claude-haiku-5-5", None, None, None)]


def _utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


#: Where the pieces are cut: price changes (UTC midnights) and clock changes of the zones
#: below (Berlin, St John's, Lord Howe, Chatham, Havana, New York), and month starts.
ANCHORS = [*(_utc(d.year, d.month, d.day) for d in price_change_days(CATALOG)
             if date(2026, 1, 1) <= d <= date(2026, 12, 31)),
           _utc(2026, 3, 29, 1), _utc(2026, 10, 25, 1), _utc(2026, 3, 8, 5), _utc(2026, 3, 8, 7),
           _utc(2026, 11, 1, 5), _utc(2026, 4, 4, 15), _utc(2026, 10, 3, 15, 30),
           _utc(2026, 4, 4, 14), _utc(2026, 9, 26, 14), _utc(2026, 4, 1), _utc(2026, 5, 1)]
ZONES = ["UTC", "Europe/Berlin", "America/St_Johns", "Australia/Lord_Howe", "Pacific/Chatham",
         "America/Havana", "Asia/Kathmandu"]
GROUPINGS = [["project"], ["session"], ["model"], ["provider"], ["hour"], ["day"], ["week"],
             ["month"], ["project", "day"], ["model", "week"], ["session", "day"],
             ["provider", "hour"], ["month", "model"]]


def _call(rng: random.Random, uid: str, ts: float) -> dict:
    model, speed, geo, tier = rng.choice(VARIANTS)
    row = {
        "call_uid": uid, "request_id": f"req-{uid}", "started_ts": ts,
        "started_at": datetime.fromtimestamp(ts, UTC).isoformat(), "status": "ok",
        "session_id": rng.choice((None, "s1", "s2")), "project": rng.choice(("p1", "p2", None, "")),
        "model": model, "speed": speed, "inference_geo": geo, "service_tier": tier,
        "call_kind": "main", "provider": rng.choice(("anthropic", "bedrock")),
        "input_tokens": rng.randint(1, 5000),
        "cache_write_5m_tokens": rng.choice((0, rng.randint(1, 9000))),
        "cache_write_1h_tokens": rng.choice((0, rng.randint(1, 4000))),
        "cache_read_tokens": rng.choice((rng.randint(0, 90_000), rng.randint(200_001, 260_000))),
        "output_tokens": rng.randint(1, 3000), "updated_ts": ts,
    }
    row["cost_picousd"] = None if rng.random() < 0.1 else CATALOG.price(
        model, usage_of(row), datetime.fromtimestamp(ts, UTC)).cost_picousd
    return row


def _near(rng: random.Random) -> float:
    """A moment on or next to a cut: on it, a slot either side, a hair off, or days away."""
    return rng.choice(ANCHORS) + rng.choice((
        0, 900, -900, 1800, -1800, 2700, 3600, -3600, 86400, -86400, 0.5, -0.5, 1e-3,
        rng.uniform(-4 * 86400, 4 * 86400)))


def _around(rng: random.Random) -> float:
    """A call's moment: on or next to a cut, or anywhere within the hour either side."""
    return _near(rng) + rng.choice((0, rng.uniform(-3600, 3600)))


def _fill(db, rng: random.Random, wire: int, transcript: int) -> None:
    calls = [_call(rng, f"c{i}", _around(rng)) for i in range(wire)]
    if calls:
        store.upsert_calls(db, calls)
    imported = []
    for i in range(transcript):
        row = dict(rng.choice(calls)) if calls and i % 3 == 0 else _call(rng, f"t{i}",
                                                                          _around(rng))
        imported.append({**dict.fromkeys(TRANSCRIPT_COLUMNS),
                         **{k: v for k, v in row.items() if k in TRANSCRIPT_COLUMNS},
                         "call_key": f"t-{i}", "call_kind": "main", "thinking_tokens": 0,
                         "web_search_requests": 0, "web_fetch_requests": 0})
    if imported:
        save_transcript_batch(db, imported, [])


def _filters(rng: random.Random) -> reports.Filters:
    since = rng.choice((None, _near(rng), _around(rng)))
    until = rng.choice((None, _near(rng), _around(rng),
                        time.time() + 86400 * rng.randint(0, 400)))
    if since is not None and rng.random() < 0.3:  # a range shorter than a slot, or just over
        until = since + rng.choice((1, 899, 900, 901, 1800, 3599, 3600, 5400, 86400))
    return reports.Filters(since=since, until=until,
                           project=rng.choice((None, None, "p1", "")),
                           model=rng.choice((None, None, "opus", "haiku")),
                           session=rng.choice((None, None, None, "s1")),
                           source=rng.choice(("all", "wire", "transcript")))


def _same(new: reports.Report, old: reports.Report, context: object) -> None:
    assert (new.dimensions, new.totals) == (old.dimensions, old.totals), context
    assert new.rows == old.rows, context


@pytest.fixture
def zone(monkeypatch):
    def set_zone(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time.tzset()

    yield set_zone
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize(("seed", "wire", "transcript"), [(0, 300, 120), (1, 0, 150),
                                                          (2, 0, 0), (3, 40, 0)])
def test_reports_match_the_code_before_at_every_cut(db, zone, monkeypatch, seed, wire,
                                                    transcript):
    """Random ranges whose ends sit on slots, hours, midnights, clock and price changes;
    also a database with transcript calls only, and an empty one."""
    plans = []
    plan = reportread._rollup_parts
    monkeypatch.setattr(reportread, "_rollup_parts",
                        lambda *a: plans.append(plan(*a)) or plans[-1])
    rng = random.Random(seed)
    _fill(db, rng, wire, transcript)
    for name in ZONES:
        zone(name)
        for _ in range(8):
            flt = _filters(rng)
            groupings = rng.sample(GROUPINGS, 3)
            assumption = (check_assumption(CATALOG, "claude-haiku-4-5", "1h")
                          if rng.random() < 0.15 else None)
            news = reports.build_reports(db, groupings, flt, CATALOG, assumption=assumption)
            for dims, new in zip(groupings, news, strict=True):
                old = reports_before.build_reports(db, [dims], flt, CATALOG,
                                                   assumption=assumption)[0]
                _same(new, old, (name, flt, dims))
    # the rollup was read, in pieces, beside raw edges (and the calls alone when it cannot be)
    spans = [p for parts in plans if parts for p in parts if p.edge is None]
    assert None in plans and (not wire + transcript or len(spans) > 10)
    assert not wire or any(len(p.cuts or ()) > 1 for p in spans)


def test_a_reader_of_schema_11_reads_the_calls_in_every_zone(home, zone):
    """A read-only connection does not migrate: a database left at schema 11 (no rollup
    table at all) gives the reports the calls give, by every grouping."""
    path = config.paths().db_file
    old = store.connect(path)
    _fill(old, random.Random(5), 200, 60)
    new = reports.build_reports(old, GROUPINGS, reports.Filters(since=_utc(2026, 3, 1)),
                                CATALOG)
    old.execute("DROP TABLE call_rollup")
    for (name,) in old.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' "
                               "AND name LIKE 'call_rollup%'").fetchall():
        old.execute(f"DROP TRIGGER {name}")
    old.execute("PRAGMA user_version = 11")
    old.conn.close()
    reader = store.connect_reader(path)
    for dims, want in zip(GROUPINGS, new, strict=True):
        _same(reports.build_report(reader, dims, reports.Filters(since=_utc(2026, 3, 1)),
                                   CATALOG), want, dims)
    for name in ("Australia/Lord_Howe", "Pacific/Chatham"):
        zone(name)
        flt = reports.Filters(since=_utc(2026, 4, 4, 15), until=_utc(2026, 10, 4))
        for dims in (["hour"], ["day"], ["project", "week"]):
            _same(reports.build_report(reader, dims, flt, CATALOG),
                  reports_before.build_reports(reader, [dims], flt, CATALOG)[0], (name, dims))
    assert reader.execute("PRAGMA user_version").fetchone()[0] == 11


def test_no_writer_replaces_a_call_row():
    """The insert triggers add a new row's sums (no recompute), so ``INSERT OR REPLACE`` on
    a calls table is counted right only where ``recursive_triggers`` is on (sqlite-utils
    connections): on a plain connection (``connect_migrated``, ``connect_reader``) the
    replaced row's delete trigger does not fire and the call is counted twice. No writer
    may use it on these tables."""
    import re
    from pathlib import Path

    import ccmeter

    pattern = re.compile(r"REPLACE\s+INTO\s+(api_calls|transcript_calls)\b", re.I)
    found = [str(path) for path in Path(ccmeter.__file__).parent.rglob("*.py")
             if pattern.search(path.read_text(encoding="utf-8"))]
    assert found == []
