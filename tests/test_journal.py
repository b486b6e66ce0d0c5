"""The call journal on its own: lines written, a dead proxy's file folded into a real
database once, never over a row the database has. (The killed-proxy tests that run it
through a real mitmdump are in test_proxy_kill.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

from ccmeter import attribution, journal, pricing, store
from ccmeter.callrow import Call

# 40,000 input tokens of Opus 4.8 at $5 / MTok: $0.20 exactly.
MESSAGE = {"id": "msg_01", "model": "claude-opus-4-8",
           "usage": {"input_tokens": 40_000, "output_tokens": 0}}
COST = 200_000 * 10**6


def _call(uid: str = "c1") -> Call:
    who = attribution.Attribution(session_id="s1", working_dir="/home/ana/shop-api",
                                  auth_kind="api_key", requested_model="claude-opus-4-8",
                                  stream=True)
    return Call(uid=uid, started_ts=time.time(), host="api.anthropic.com", attribution=who,
                project="shop-api")


def _rows(db) -> list[dict]:
    return list(db.query("SELECT * FROM api_calls ORDER BY call_uid"))


def test_a_dead_journal_becomes_the_started_row_once(tmp_path):
    where = tmp_path / "journal"
    live = journal.Journal(where)
    live.started(_call("c1"), MESSAGE)
    [path] = where.glob("*.jsonl")
    line = path.read_bytes()
    assert b"shop-api" in line and b"msg_01" in line and line.endswith(b"\n")
    db = store.connect(tmp_path / "c.db")
    catalog = pricing.Catalog.bundled()
    # Held by a live journal (this process, another open of the file): not folded.
    assert journal.fold_dead(where, db, catalog) == 0 and path.exists()
    live.close(delete=False)  # as a killed proxy leaves it
    assert journal.fold_dead(where, db, catalog) == 1
    [row] = _rows(db)
    assert (row["call_uid"], row["status"], row["error_type"]) == ("c1", "incomplete",
                                                                   journal.DIED)
    assert (row["input_tokens"], row["cost_picousd"]) == (40_000, COST)
    assert (row["project"], row["session_id"], row["working_dir_name"], row["model"],
            row["message_id"]) == ("shop-api", "s1", "shop-api", "claude-opus-4-8", "msg_01")
    assert not path.exists()
    assert journal.fold_dead(where, db, catalog) == 0
    assert len(_rows(db)) == 1


def test_a_final_row_is_never_overwritten_and_reservations_go(tmp_path):
    where = tmp_path / "journal"
    db = store.connect(tmp_path / "c.db")
    final = {"call_uid": "c1", "started_at": "2026-11-30T05:00:00Z", "started_ts": time.time(),
             "updated_ts": time.time(), "status": "ok", "input_tokens": 40_000,
             "output_tokens": 500, "cost_picousd": COST + 12_500_000_000, "http_status": 200}
    store.upsert_calls(db, [final])
    store.cap_check_and_reserve(
        db, store.spend_query([store.SpendWindow(0.0, None, None)]), time.time(),
        lambda spent: True,
        store.Reservation("c2", time.time(), 10**12, time.time() + 900, None, None))
    assert [r["call_uid"] for r in store.cap_reservations(db)] == ["c2"]
    live = journal.Journal(where)
    live.started(_call("c1"), MESSAGE)  # the call completed after its line was written
    live.started(_call("c2"), MESSAGE)
    live.close(delete=False)
    assert journal.fold_dead(where, db, pricing.Catalog.bundled()) == 1
    rows = {r["call_uid"]: r for r in _rows(db)}
    assert rows["c1"]["status"] == "ok" and rows["c1"]["cost_picousd"] == final["cost_picousd"]
    assert rows["c2"]["status"] == "incomplete" and rows["c2"]["cost_picousd"] == COST
    assert store.cap_reservations(db) == []


def test_who_sent_it_follows_when_the_request_is_read_after_the_first_byte(tmp_path):
    where = tmp_path / "journal"
    live = journal.Journal(where)
    call = _call("c1")
    who, call.attribution, call.project = call.attribution, attribution.Attribution(), None
    call.pending = object()  # type: ignore[assignment]  # the request, not read yet
    live.started(call, MESSAGE)
    assert "c1" in live.needs_detail
    call.pending, call.attribution, call.project = None, who, "shop-api"
    live.detail(call)
    live.close(delete=False)
    db = store.connect(tmp_path / "c.db")
    assert journal.fold_dead(where, db, pricing.Catalog.bundled()) == 1
    [row] = _rows(db)
    assert (row["project"], row["session_id"]) == ("shop-api", "s1")


def test_a_torn_last_line_is_skipped(tmp_path):
    where = tmp_path / "journal"
    live = journal.Journal(where)
    live.started(_call("c1"), MESSAGE)
    live.started(_call("c2"), MESSAGE)
    live.close(delete=False)
    [path] = where.glob("*.jsonl")
    data = path.read_bytes()
    path.write_bytes(data[:-40])
    db = store.connect(tmp_path / "c.db")
    assert journal.fold_dead(where, db, pricing.Catalog.bundled()) == 1
    assert [r["call_uid"] for r in _rows(db)] == ["c1"]


def test_the_live_journal_empties_once_the_database_has_its_calls(tmp_path, monkeypatch):
    where = tmp_path / "journal"
    live = journal.Journal(where)
    live.started(_call("c1"), MESSAGE)
    live.started(_call("c2"), MESSAGE)
    [path] = where.glob("*.jsonl")
    live.queued("c1")
    live.collect(writer_idle=True)
    assert path.stat().st_size > 0  # c2 is not in the database yet
    live.queued("c2")
    live.collect(writer_idle=False)  # handed over, maybe not written
    assert path.stat().st_size > 0
    live.collect(writer_idle=True)
    assert path.stat().st_size == 0
    monkeypatch.setattr(journal, "SEGMENT_BYTES", 1)  # every line past the first rotates
    for n in range(3):
        live.started(_call(f"d{n}"), MESSAGE)
    assert len(list(where.glob("*.jsonl"))) == 3
    for n in range(3):
        live.queued(f"d{n}")
    live.collect(writer_idle=True)
    assert [p.stat().st_size for p in where.glob("*.jsonl")] == [0]
    live.close(delete=True)
    assert list(where.glob("*.jsonl")) == []


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from ccmeter import attribution, journal
    from ccmeter.callrow import Call
    live = journal.Journal(Path(sys.argv[1]))
    call = Call(uid="k1", started_ts=time.time(), host="api.anthropic.com",
                attribution=attribution.Attribution(), project=None)
    live.started(call, {"id": "m", "model": "claude-opus-4-8",
                        "usage": {"input_tokens": 40000, "output_tokens": 0}})
    print("ready", flush=True)
    time.sleep(60)
""")


def test_a_live_proxys_journal_is_left_alone_until_it_is_killed(tmp_path):
    where = tmp_path / "journal"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(where)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        db = store.connect(tmp_path / "c.db")
        catalog = pricing.Catalog.bundled()
        assert journal.fold_dead(where, db, catalog) == 0
        assert _rows(db) == []
    finally:
        proc.kill()
        proc.wait()
    assert journal.fold_dead(where, db, catalog) == 1
    [row] = _rows(db)
    assert (row["call_uid"], row["cost_picousd"]) == ("k1", COST)
    assert os.listdir(where) == []


def test_report_folds_a_dead_proxys_journal_first(user_dirs):
    from typer.testing import CliRunner

    from ccmeter.cli import app

    live = journal.Journal(journal.journal_dir(user_dirs))
    live.started(_call("c1"), MESSAGE)
    live.close(delete=False)
    result = CliRunner().invoke(app, ["report", "--since", "1d", "--format", "json"])
    assert result.exit_code == 0, result.output
    [line] = json.loads(result.stdout)["rows"]
    assert (line["project"], line["calls"], line["cost_picousd"]) == ("shop-api", 1, COST)
    assert list(journal.journal_dir(user_dirs).glob("*.jsonl")) == []
