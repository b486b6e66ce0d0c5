"""The call writer cannot die: rows the database refuses, and databases it cannot use."""

from __future__ import annotations

import logging
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from ccmeter import store
from ccmeter.store import writer as writer_mod

# Each value made the writer thread die on the code before this change (issue 13, F1).
KILLERS = [
    ("session_id", "sess-\udcff"),                 # a \xff byte in the session header
    ("project", "proj-\udcff"),                    # ... in x-ccmeter-project
    ("requested_model", "claude-opus-4-8\ud800"),  # "model" of the request
    ("model", "claude-opus-4-8\ud800"),            # "model" of the answer
    ("stop_reason", "end_turn\ud800"),
    ("message_id", "msg_\ud800"),
    ("error_type", "overloaded_error\udfff"),
    ("input_tokens", 2**70),
    ("output_tokens", -(2**70)),
    ("cache_read_tokens", 10**30),
    ("cost_picousd", 2**64),
]


def row(uid: str, **extra) -> dict:
    now = time.time()
    return {"call_uid": uid, "started_at": "2026-11-30T05:00:00Z", "started_ts": now,
            "status": "ok", "model": "claude-opus-4-8", "input_tokens": 10,
            "cost_picousd": 50 * 10**6, "updated_ts": now, **extra}


def rows(path: Path) -> dict[str, dict]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return {r["call_uid"]: dict(r) for r in conn.execute("SELECT * FROM api_calls")}
    finally:
        conn.close()


@pytest.mark.parametrize(("column", "value"), KILLERS, ids=[k[0] for k in KILLERS])
def test_a_row_the_database_refuses_is_repaired_and_the_writer_goes_on(tmp_path, column, value,
                                                                        caplog):
    path = tmp_path / "ccmeter.db"
    writer = store.CallWriter(path)
    caplog.set_level(logging.WARNING)
    writer.put(row("before"))
    writer.put(row("bad", **{column: value}))
    writer.put(row("after"))
    assert writer.flush(5)
    writer.put(row("later"))
    assert writer.flush(5)
    writer.close()
    got = rows(path)
    assert set(got) == {"before", "bad", "after", "later"}
    bad = got["bad"]
    assert bad["metering_error"].startswith("stored after repair: ")
    assert column in bad["metering_error"]
    assert bad["status"] == "ok" and bad["model"] is not None
    if column == "cost_picousd":
        assert bad["cost_picousd"] is None  # unknown money is NULL, never a made-up figure
    elif isinstance(value, int):
        assert bad[column] == (writer_mod.CLAMP if value > 0 else -writer_mod.CLAMP)
    else:
        assert "\\" in bad[column] and bad[column].startswith(value[:3])
    assert writer.failing is None and writer.repaired == 1
    assert sum("stored after a repair" in r.getMessage() for r in caplog.records) == 1


def test_a_header_byte_is_shown_as_the_byte():
    fixed, notes = writer_mod.repair_row(row("x", project="caf\udce9"))
    assert fixed["project"] == "caf\\xe9" and "project" in notes


def test_each_kind_of_repair_is_logged_once(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="ccmeter.store.writer")
    writer = store.CallWriter(tmp_path / "ccmeter.db")
    for i in range(5):
        writer.put(row(f"bad{i}", project="p\udcff"))
        assert writer.flush(5)
    writer.close()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING
                and "repair" in r.getMessage()]
    assert len(warnings) == 1 and writer.repaired == 5


def test_a_row_refused_even_repaired_is_kept_as_a_metering_error(tmp_path):
    path = tmp_path / "ccmeter.db"
    writer = store.CallWriter(path)
    writer.put(row("nulls", status=None))  # NOT NULL: no repair makes it storable
    writer.put(row("fine"))
    assert writer.flush(5)
    writer.close()
    got = rows(path)
    assert got["fine"]["metering_error"] is None
    assert got["nulls"]["status"] == "incomplete"
    assert got["nulls"]["metering_error"].startswith("row refused by the database: Integrity")


def test_a_corrupt_database_fails_clearly_and_recovers_when_replaced(tmp_path, caplog):
    path = tmp_path / "ccmeter.db"
    path.write_bytes(b"this is not a database" * 100)
    states: list[str | None] = []
    writer = store.CallWriter(path, on_state=states.append)
    assert writer.failing and "not a database" in writer.failing
    writer.put(row("kept"))
    assert writer.flush(5, until_failure=True) is False  # a quick answer, not 5 s
    path.unlink()  # the user moves the broken file aside
    writer.put(row("next"))
    assert writer.flush(5)
    assert writer.failing is None and states == [states[0], None]
    writer.close()
    assert set(rows(path)) == {"kept", "next"}
    assert any("metering stopped" in r.getMessage() for r in caplog.records)
    assert any("metering works again" in r.getMessage() for r in caplog.records)


def _chattr(path: Path, flag: str) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not available")
    if subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode:
        pytest.skip("this file system has no immutable flag")


def test_a_read_only_database_is_written_once_it_is_writable(tmp_path):
    path = tmp_path / "ccmeter.db"
    store.connect(path).conn.close()
    # root ignores file modes, so the immutable flag makes the file read-only for everyone
    _chattr(path, "+i")
    try:
        writer = store.CallWriter(path)
        writer.put(row("while-read-only"))
        assert writer.flush(3, until_failure=True) is False
        assert writer.failing and "readonly" in writer.failing
    finally:
        _chattr(path, "-i")
    writer.put(row("after"))
    assert writer.flush(5)
    assert writer.failing is None
    writer.close()
    assert set(rows(path)) == {"while-read-only", "after"}


def test_a_deleted_folder_is_noticed_and_the_database_made_anew(tmp_path):
    folder = tmp_path / "data"
    path = folder / "ccmeter.db"
    writer = store.CallWriter(path)
    writer.put(row("first"))
    assert writer.flush(5)
    shutil.rmtree(folder)
    writer.put(row("second"))
    assert writer.flush(5)
    writer.close()
    assert set(rows(path)) == {"second"}  # not written on into the unlinked file
    assert writer.generation == 2


def test_a_long_lock_makes_the_writer_failing_and_it_catches_up(tmp_path):
    path = tmp_path / "ccmeter.db"
    writer = store.CallWriter(path)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        writer.put(row("queued"))
        deadline = time.monotonic() + writer_mod.STALL_S + 3
        while writer.failing is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert writer.failing and "locked by another process" in writer.failing
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert writer.flush(5)
    assert writer.failing is None
    writer.close()
    assert set(rows(path)) == {"queued"}


def test_rows_not_written_at_stop_are_logged(tmp_path, caplog):
    path = tmp_path / "ccmeter.db"
    path.write_bytes(b"corrupt" * 200)
    writer = store.CallWriter(path)
    writer.put(row("a"))
    writer.put(row("b"))
    started = time.monotonic()
    writer.close(timeout=5)
    assert time.monotonic() - started < 3
    lost = [r.getMessage() for r in caplog.records if "lost" in r.getMessage()]
    assert lost and lost[0].startswith("ccmeter: 2 call row(s) could not be written")


def test_a_read_only_database_is_seen_at_start_and_retried_on_demand(tmp_path):
    path = tmp_path / "ccmeter.db"
    store.connect(path).conn.close()
    _chattr(path, "+i")
    try:
        writer = store.CallWriter(path)
        assert writer.failing and "readonly" in writer.failing  # before any row
        started = time.monotonic()
        assert writer.retry(2) is False
        assert time.monotonic() - started < 1
    finally:
        _chattr(path, "-i")
    assert writer.retry(2) is True and writer.failing is None
    writer.close()


def test_the_cap_checker_never_waits_to_open_a_locked_database(tmp_path):
    path = tmp_path / "ccmeter.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("PRAGMA locking_mode=EXCLUSIVE")  # a rollback-journal file held by another
    other.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            store.connect_cap_checker(path, wait_ms=0)
        assert time.monotonic() - started < 1  # was 15 s: the default busy timeout
    finally:
        other.execute("ROLLBACK")
        other.close()
