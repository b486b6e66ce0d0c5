"""Storage: migrations, idempotent upserts, concurrent writers, the documented view."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from ccmeter import store

VIEW_COLUMNS = {
    "started_at", "session_id", "project", "model", "input_tokens", "cache_write_5m_tokens",
    "cache_write_1h_tokens", "cache_read_tokens", "output_tokens", "cost_usd", "status",
}


def row(uid: str, **extra) -> dict:
    now = time.time()
    base = {"call_uid": uid, "started_at": "2026-11-27T09:00:00.000Z", "started_ts": now,
            "status": "incomplete", "updated_ts": now, "input_tokens": 10}
    base.update(extra)
    return base


def test_blank_migrate_gives_wal_the_table_and_the_stable_view(tmp_path):
    db = store.connect(tmp_path / "c.db")
    assert store.schema_version(db) == len(store.MIGRATIONS)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert set(store.CALL_COLUMNS) == {c.name for c in db["api_calls"].columns}
    assert {c.name for c in db["calls"].columns} >= VIEW_COLUMNS


def test_upgrade_from_an_older_schema_keeps_rows(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.isolation_level = None
    import sqlite_utils

    old = sqlite_utils.Database(conn)
    store.MIGRATIONS[0](old)
    old.execute("PRAGMA user_version=1")
    store.upsert_calls(old, [row("kept")])
    conn.close()
    db = store.connect(path)
    assert store.schema_version(db) == len(store.MIGRATIONS)
    assert store.get_call(db, "kept")["input_tokens"] == 10


FALLBACK = {"requested_model": "claude-opus-4-8", "model": "claude-sonnet-4-5",
            "fallback_from_model": "claude-opus-4-8"}


def _fallback_from_view(db) -> dict:
    return store.query(db, "SELECT requested_model, model, fallback_from_model FROM calls "
                           "WHERE call_uid = 'fb'")[0]


def test_the_view_shows_the_fallback_model_on_a_fresh_database(tmp_path):
    db = store.connect(tmp_path / "c.db")
    assert {"requested_model", "fallback_from_model"} <= {c.name for c in db["calls"].columns}
    store.upsert_calls(db, [row("fb", status="ok", **FALLBACK)])
    assert _fallback_from_view(db) == FALLBACK


def test_the_view_shows_the_fallback_model_after_an_upgrade(tmp_path):
    """A database at the schema before the view knew the column (m005 added it to
    api_calls only): opening it rebuilds the view, and a row written before shows."""
    path = tmp_path / "v5.db"
    conn = sqlite3.connect(path)
    conn.isolation_level = None
    import sqlite_utils

    old = sqlite_utils.Database(conn)
    for number, step in enumerate(store.MIGRATIONS[:5], start=1):
        step(old)
        old.execute(f"PRAGMA user_version={number}")
    assert "fallback_from_model" not in {c.name for c in old["calls"].columns}
    store.upsert_calls(old, [row("fb", status="ok", **FALLBACK)])
    conn.close()
    db = store.connect(path)
    assert store.schema_version(db) == len(store.MIGRATIONS)
    assert {"requested_model", "fallback_from_model"} <= {c.name for c in db["calls"].columns}
    assert _fallback_from_view(db) == FALLBACK


def test_upsert_is_idempotent_and_later_writes_complete_the_row(tmp_path):
    db = store.connect(tmp_path / "c.db")
    store.upsert_calls(db, [row("a")])
    store.upsert_calls(db, [row("a")])
    store.upsert_calls(db, [row("a", status="ok", output_tokens=5, cost_picousd=123)])
    rows = store.query(db, "SELECT * FROM calls")
    assert len(rows) == 1
    assert (rows[0]["status"], rows[0]["output_tokens"], rows[0]["cost_usd"]) == ("ok", 5, 1.23e-10)


def test_cost_usd_is_null_when_unpriced(tmp_path):
    db = store.connect(tmp_path / "c.db")
    store.upsert_calls(db, [row("u", cost_picousd=None)])
    assert store.query(db, "SELECT cost_usd FROM calls")[0]["cost_usd"] is None


@pytest.mark.parametrize("writers", [4])
def test_concurrent_writers_lose_nothing(tmp_path, writers):
    path = tmp_path / "c.db"
    store.connect(path).conn.close()
    per_writer = 150
    errors: list[BaseException] = []

    def work(n: int) -> None:
        writer = store.CallWriter(path)
        try:
            for i in range(per_writer):
                writer.put(row(f"{n}-{i}"))
                writer.put(row(f"{n}-{i}", status="ok"))
        except BaseException as exc:
            errors.append(exc)
        finally:
            writer.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    db = store.connect(path)
    rows = store.query(db, "SELECT status, COUNT(*) AS n FROM api_calls GROUP BY status")
    assert not errors
    assert rows == [{"status": "ok", "n": writers * per_writer}]


def test_concurrent_first_open_migrates_once(tmp_path):
    path = tmp_path / "race.db"
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            store.connect(path).conn.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.schema_version(store.connect(path)) == len(store.MIGRATIONS)
