"""``call_rollup`` (migration 12) stays exactly the sums of the calls through everything the
writers do — rows rewritten at the end of a call, the project filled in later, a call moved
to another quarter-hour, repricing, deletes, transcript imports, and wire calls that arrive
later and hide the transcript rows they match — and the reports really read it."""

from __future__ import annotations

import random
import time
from datetime import UTC, date, datetime
from itertools import pairwise

import pytest

from ccmeter import config, reportplan, reports, store
from ccmeter.store import rollup
from ccmeter.store.transcripts import TRANSCRIPT_COLUMNS, save_transcript_batch

START = datetime(2026, 3, 1, 0, 0, tzinfo=UTC).timestamp()
COLUMNS = ("source, slot, group_key, " + ", ".join(rollup.GROUP_COLUMNS) + ", calls, "
           "priced_calls, " + ", ".join(rollup.SUM_COLUMNS) + ", first_ts, last_ts")


def contents(db) -> list[tuple]:
    return sorted(db.execute(f"SELECT {COLUMNS} FROM call_rollup").fetchall(), key=repr)


def recomputed(db) -> list[tuple]:
    """What the rollup must hold: the calls summed afresh (the rebuild, in a rolled-back
    transaction, so the table under test is left as the triggers made it)."""
    db.execute("SAVEPOINT fresh")
    try:
        store.rebuild_rollup(db)
        return contents(db)
    finally:
        db.execute("ROLLBACK TO fresh")
        db.execute("RELEASE fresh")


def wire_row(rng: random.Random, uid: str) -> dict:
    ts = START + rng.random() * 3 * 3600
    priced = rng.random() < 0.8
    return {
        "call_uid": uid, "started_at": datetime.fromtimestamp(ts, UTC).isoformat(),
        "started_ts": ts, "status": "ok", "updated_ts": ts,
        "request_id": rng.choice((None, f"req-{rng.randint(0, 40)}")),
        "message_id": rng.choice((None, f"msg-{rng.randint(0, 40)}")),
        "session_id": rng.choice((None, "s1", "s2")), "project": rng.choice((None, "", "a")),
        "model": rng.choice(("claude-opus-4-8", "claude-haiku-4-5", None)),
        "speed": rng.choice((None, "fast")), "provider": rng.choice(("anthropic", "bedrock")),
        "input_tokens": rng.randint(0, 900), "cache_read_tokens": rng.randint(0, 9000),
        "cache_write_5m_tokens": rng.randint(0, 900), "output_tokens": rng.randint(0, 900),
        "cache_write_1h_tokens": rng.choice((0, rng.randint(0, 500))),
        "cost_picousd": rng.randint(1, 10**9) if priced else None,
    }


def transcript_row(rng: random.Random, key: int) -> dict:
    row = wire_row(rng, "unused")
    message = row["message_id"] or f"msg-t{key}"
    return {**dict.fromkeys(TRANSCRIPT_COLUMNS), **{
        k: v for k, v in row.items() if k in TRANSCRIPT_COLUMNS},
        "call_key": message, "message_id": message, "call_kind": "main",
        "thinking_tokens": 0, "web_search_requests": 0, "web_fetch_requests": 0}


@pytest.fixture
def db(home):
    return store.connect(config.paths().db_file)


@pytest.mark.parametrize("seed", range(10))
def test_the_rollup_is_the_sum_of_the_calls_after_any_writes(db, seed):
    rng = random.Random(seed)
    uids: list[str] = []
    keys: list[int] = []
    for step in range(250):
        action = rng.random()
        if action < 0.3 or not uids:  # a new call (message_start), maybe finished at once
            uid = f"c{step}"
            uids.append(uid)
            store.upsert_calls(db, [wire_row(rng, uid)])
        elif action < 0.5:  # the end of a call: usage and cost rewritten, maybe its ids
            uid = rng.choice(uids)
            row = wire_row(rng, uid)
            kept = db.execute("SELECT started_at, started_ts, status FROM api_calls "
                              "WHERE call_uid = ?", (uid,)).fetchone()
            store.upsert_calls(db, [{
                **{k: row[k] for k in ("call_uid", "input_tokens", "output_tokens",
                                       "cost_picousd", "message_id", "updated_ts")},
                **dict(zip(("started_at", "started_ts", "status"), kept, strict=True))}])
        elif action < 0.6:  # the project filled in later, a model/geo fix, a move in time
            uid = rng.choice(uids)
            column, value = rng.choice((("project", "b"), ("project", None),
                                        ("inference_geo", "us"), ("model", "claude-x"),
                                        ("started_ts", START + rng.random() * 3 * 3600),
                                        ("request_id", f"req-{rng.randint(0, 40)}")))
            db.execute(f"UPDATE api_calls SET {column} = ? WHERE call_uid = ?", (value, uid))
        elif action < 0.7:  # repriced (or made unpriced)
            db.execute("UPDATE api_calls SET cost_picousd = ? WHERE call_uid = ?",
                       (rng.choice((None, rng.randint(1, 10**9))), rng.choice(uids)))
        elif action < 0.78:
            uid = uids.pop(rng.randrange(len(uids)))
            db.execute("DELETE FROM api_calls WHERE call_uid = ?", (uid,))
        elif action < 0.93:  # an import: new transcript rows, or the same keys again
            batch = [transcript_row(rng, step * 10 + i) for i in range(rng.randint(1, 4))]
            if keys and rng.random() < 0.3:
                batch[0]["call_key"] = batch[0]["message_id"] = f"msg-t{rng.choice(keys)}"
            keys.extend(step * 10 + i for i in range(len(batch)))
            save_transcript_batch(db, batch, [])
        else:
            db.execute("DELETE FROM transcript_calls WHERE rowid IN "
                       "(SELECT rowid FROM transcript_calls ORDER BY random() LIMIT 1)")
        if step % 20 == 19:
            assert contents(db) == recomputed(db), f"step {step}"
    assert contents(db) == recomputed(db)
    # the data reached the cases the triggers have: both sources, hidden transcript rows
    sources = {row[0] for row in contents(db)}
    assert sources == {"wire", "transcript"}
    hidden = db.execute("SELECT COUNT(*) FROM transcript_calls").fetchone()[0] - db.execute(
        "SELECT COUNT(*) FROM imported_calls").fetchone()[0]
    assert hidden > 0


def test_a_wire_call_hides_the_transcript_row_it_matches_and_shows_it_again(db):
    rng = random.Random(7)
    row = transcript_row(rng, 1)
    save_transcript_batch(db, [row], [])
    transcript_calls = "SELECT SUM(calls) FROM call_rollup WHERE source = 'transcript'"
    assert db.execute(transcript_calls).fetchone()[0] == 1
    wire = {**wire_row(rng, "w1"), "message_id": row["message_id"]}
    store.upsert_calls(db, [wire])
    assert db.execute(transcript_calls).fetchone()[0] is None
    db.execute("UPDATE api_calls SET message_id = 'msg-other' WHERE call_uid = 'w1'")
    assert db.execute(transcript_calls).fetchone()[0] == 1
    db.execute("UPDATE api_calls SET message_id = ? WHERE call_uid = 'w1'", (row["message_id"],))
    db.execute("DELETE FROM api_calls WHERE call_uid = 'w1'")
    assert db.execute(transcript_calls).fetchone()[0] == 1
    assert contents(db) == recomputed(db)


def test_the_migration_fills_the_rollup_from_the_calls_already_stored(home):
    path = config.paths().db_file
    old = store.connect(path)
    store.upsert_calls(old, [wire_row(random.Random(i), f"c{i}") for i in range(50)])
    old.execute("DROP TABLE call_rollup")
    for name in [r[0] for r in old.execute(
            "SELECT name FROM sqlite_master WHERE name LIKE 'call_rollup%'")]:
        old.execute(f"DROP TRIGGER {name}")
    old.execute("DROP INDEX transcript_calls_message")
    old.execute("PRAGMA user_version = 11")
    # a read-only reader of the old schema reads the calls themselves
    reader = store.connect_reader(path)
    flt = reports.Filters(since=START + 1000.5)
    catalog = reports.current_catalog({})
    before = reports.build_report(reader, ["project", "day"], flt, catalog)
    old.conn.close()
    db = store.connect(path)  # migrates to 12
    assert store.schema_version(db) >= rollup_schema()
    assert sum(row[rollup_calls()] for row in contents(db)) == 50
    assert contents(db) == recomputed(db)
    after = reports.build_report(db, ["project", "day"], flt, catalog)
    assert after.rows == before.rows and after.totals == before.totals


def rollup_schema() -> int:
    return reports.ROLLUP_SCHEMA


def rollup_calls() -> int:
    return 3 + len(rollup.GROUP_COLUMNS)


def test_reports_read_the_rollup(db):
    """Change a rollup row behind the triggers' back: a report that reads the rollup shows
    it (a report reading the calls themselves would not), and the rebuild mends it."""
    store.upsert_calls(db, [wire_row(random.Random(i), f"c{i}") for i in range(40)])
    catalog = reports.current_catalog({})
    flt = reports.Filters(since=START - 86400)
    total = reports.build_report(db, ["project"], flt, catalog).totals["calls"]
    db.execute("UPDATE call_rollup SET calls = calls + 1000 WHERE slot = "
               "(SELECT MIN(slot) FROM call_rollup)")
    assert reports.build_report(db, ["project"], flt, catalog).totals["calls"] >= total + 1000
    store.rebuild_rollup(db)
    assert reports.build_report(db, ["project"], flt, catalog).totals["calls"] == total


def test_a_day_report_cuts_at_each_local_midnight_across_a_clock_change(monkeypatch):
    """Berlin's clocks went forward on 2026-03-29: its midnights are 23:00 UTC before and
    22:00 UTC after; a price change on 2026-03-31 (a UTC midnight) cuts too."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        def q(*args: int) -> int:
            return int(datetime(*args, tzinfo=UTC).timestamp()) // 900

        low, high = q(2026, 3, 27, 12), q(2026, 4, 1, 12)
        cuts = reportplan.piece_starts(low, high, ["day"], [date(2026, 3, 31)])
        assert cuts == (low, q(2026, 3, 27, 23), q(2026, 3, 28, 23), q(2026, 3, 29, 22),
                        q(2026, 3, 30, 22), q(2026, 3, 31), q(2026, 3, 31, 22))
        parts = reportplan.plan(low * 900 + 10.5, None, 3600, ["day"], (low, high))
        assert [(p.edge, p.start, p.end) for p in parts] == [
            ("before", low + 4, None), (None, low + 4, high + 1)]
        assert reportplan.plan(None, None, 3600, ["hour", "day"], (low, high))[0].cuts is None
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_what_the_rollup_cannot_serve_is_read_from_the_calls():
    assert reportplan.plan(1000.0, 1900.0, 3600, (), (0, 10)) is None
    assert reportplan.plan(None, None, 60, (), (0, 10)) is None
    # no rollup rows yet: the raw edges alone
    parts = reportplan.plan(1000.0, None, 3600, (), None)
    assert [(p.edge, p.start) for p in parts] == [("before", 4)]


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/St_Johns", "Australia/Lord_Howe",
                                  "Asia/Kolkata", "Asia/Kathmandu"])
def test_no_piece_crosses_a_bucket_or_a_price_change(monkeypatch, zone):
    """Against each quarter-hour's own bucket label and UTC day, over ranges that start and
    end anywhere near clock changes (Lord Howe changes by half an hour)."""
    from ccmeter.periods import bucket_label, bucket_start

    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        rng = random.Random(zone)
        price_days = [date(2026, 3, 10), date(2026, 4, 2)]
        for _ in range(40):
            low = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp()) // 900 + rng.randint(
                0, 50 * 96)
            high = low + rng.randint(1, rng.choice((3, 40)) * 96)
            units = rng.choice((["day"], ["week"], ["month"], [], ["day", "month"]))
            cuts = reportplan.piece_starts(low, high, units, price_days)
            assert cuts is not None and cuts[0] == low and list(cuts) == sorted(set(cuts))
            for begin, end in pairwise([*cuts, high]):
                labels = {(tuple(bucket_label(bucket_start(q * 900, u), u) for u in units),
                           datetime.fromtimestamp(q * 900, UTC).date() >= price_days[0],
                           datetime.fromtimestamp(q * 900, UTC).date() >= price_days[1])
                          for q in range(begin, end)}
                assert len(labels) == 1, (zone, units, begin, end)
            # and a cut is only where something changes (pieces are as long as they can be)
            for cut in cuts[1:]:
                before = tuple(bucket_label(bucket_start((cut - 1) * 900, u), u) for u in units)
                after = (tuple(bucket_label(bucket_start(cut * 900, u), u) for u in units),
                         datetime.fromtimestamp(cut * 900, UTC).date())
                assert before != after[0] or after[1] in price_days
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_doctor_mends_a_rollup_written_around(db):
    """A table changed behind the triggers' back (here: by hand) is found by `ccmeter
    doctor`, rebuilt from the calls, and reports are right again."""
    from typer.testing import CliRunner

    from ccmeter.cli import app

    store.upsert_calls(db, [wire_row(random.Random(i), f"c{i}") for i in range(30)])
    assert "report totals" not in CliRunner().invoke(app, ["doctor"]).output
    db.execute("DELETE FROM call_rollup WHERE slot = (SELECT MIN(slot) FROM call_rollup)")
    assert contents(db) != recomputed(db)
    result = CliRunner().invoke(app, ["doctor"])
    assert "report totals (wire calls) were out of step" in result.output
    assert "rebuilt" in result.output and result.exit_code == 1
    assert contents(db) == recomputed(db)
    assert "report totals" not in CliRunner().invoke(app, ["doctor"]).output


def test_a_report_reads_one_committed_state(db):
    """Its queries (extent, pieces, ends, long prompts) run in one read transaction, so a
    call committed meanwhile is seen by all of them or none; inside a transaction the
    caller holds, it opens none."""
    store.upsert_calls(db, [wire_row(random.Random(i), f"c{i}") for i in range(20)])
    reader = store.connect_reader(config.paths().db_file)
    statements: list[str] = []
    reader.set_trace_callback(statements.append)
    catalog = reports.current_catalog({})
    reports.build_reports(reader, [["project"], ["day"], ["session"]],
                          reports.Filters(since=START + 77.7), catalog)
    selects = [i for i, sql in enumerate(statements) if sql.lstrip().upper().startswith("SELECT")]
    assert len(selects) >= 4
    assert statements[0] == "BEGIN" and statements[-1] == "COMMIT"
    assert "BEGIN" not in statements[1:-1] and not reader.in_transaction
    reader.execute("BEGIN")
    statements.clear()
    reports.build_report(reader, ["project"], reports.Filters(), catalog)
    assert "BEGIN" not in statements and "COMMIT" not in statements and reader.in_transaction
    reader.execute("COMMIT")
