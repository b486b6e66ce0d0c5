"""One cap, several mitmdump processes sharing one CCMETER_HOME, many concurrent clients:
total spend stays within the documented bound (docs/caps.md, "How far a cap can overshoot").
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from capsproxy import mitmdump, post, write_caps
from hypothesis import given, settings
from hypothesis import strategies as st
from standin import StandIn, message_events, sse_reply

from ccmeter import store
from ccmeter.caps.guard import Decision, Guard
from ccmeter.caps.policy import parse_policy

CALL_PICO = 485_000_000  # the stand-in's default answer on claude-opus-4-8 ($0.000485)
PROXIES = 3
CLIENTS = 8



def spend_until_refused(home: Path, estimate: str) -> tuple[int, int, int, int]:
    """Every client posts until refused. Returns (total spend, ok calls, refusals, upstream)."""
    limit_calls = 20
    write_caps(home, {"daily": f"{limit_calls * CALL_PICO / 10**12:.6f}", "estimate": estimate,
                      "notify": False})
    with StandIn() as api, contextlib.ExitStack() as stack:
        # slow answers so that many calls are in flight at once, on every proxy
        api.default = lambda rec: sse_reply(message_events(), chunk_sizes=64, delay_s=0.01)
        ports = [stack.enter_context(mitmdump(home, api.url, name=f"p{i}"))
                 for i in range(PROXIES)]
        results: list[int] = []
        lock = threading.Lock()

        def client(n: int) -> None:
            for attempt in range(200):
                status = post(ports[(n + attempt) % PROXIES], session=f"s{n}")[0]
                with lock:
                    results.append(status)
                if status == 429:
                    return

        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        upstream = len(api.messages_requests())
    conn = sqlite3.connect(home / "ccmeter.db")
    total = conn.execute("SELECT COALESCE(SUM(cost_picousd), 0) FROM api_calls").fetchone()[0]
    conn.close()
    return total, results.count(200), results.count(429), upstream


def test_spend_stays_within_the_in_flight_bound(home):
    total, ok, refused, upstream = spend_until_refused(home, estimate="0")
    limit = 20 * CALL_PICO
    assert refused == CLIENTS  # every client was stopped
    assert ok == upstream  # nothing refused reached the API
    assert total >= limit  # it did not stop early
    # overshoot <= calls in flight when the cap was crossed x the cost of one call; at most
    # one call per client can be in flight
    assert total - limit <= CLIENTS * CALL_PICO, (total, ok)


def test_a_full_estimate_bounds_overshoot_to_one_call(home):
    total, ok, refused, upstream = spend_until_refused(
        home, estimate=f"{CALL_PICO / 10**12:.6f}")
    limit = 20 * CALL_PICO
    assert refused == CLIENTS and ok == upstream
    assert limit <= total < limit + CALL_PICO, (total, ok)


# --- the store side of the check: correct sums, index use, speed -------------------------

def _row(uid: str, ts: float, cost: int | None, project: str | None, session: str | None):
    return {"call_uid": uid, "started_at": "x", "started_ts": ts, "status": "ok",
            "cost_picousd": cost, "project": project, "session_id": session, "updated_ts": ts}


def _truth(db, start: float, project=None, session=None) -> int:
    sql = "SELECT COALESCE(SUM(cost_picousd), 0) FROM api_calls WHERE started_ts >= ?"
    args: list = [start]
    if project is not None:
        sql += " AND project = ?"
        args.append(project)
    if session is not None:
        sql += " AND session_id = ?"
        args.append(session)
    return db.execute(sql, args).fetchone()[0]


ops = st.lists(st.tuples(
    st.integers(0, 9), st.floats(0, 20_000), st.one_of(st.none(), st.integers(0, 10**9)),
    st.sampled_from([None, "a", "b"]), st.sampled_from([None, "s1", "s2"]), st.booleans()),
    max_size=40)


@settings(max_examples=60, deadline=None)
@given(ops=ops, start=st.one_of(st.floats(0, 20_000),  # a rolling window's start, or
                                st.integers(0, 22).map(lambda k: k * 900.0)))  # a calendar one
def test_bucket_sums_always_equal_a_plain_sum(tmp_path_factory, ops, start):
    db = store.connect(tmp_path_factory.mktemp("db") / "c.db")
    base = 1_800_000_000.0
    for uid, offset, cost, project, session, delete in ops:
        if delete:
            db.execute("DELETE FROM api_calls WHERE call_uid = ?", [f"c{uid}"])
        else:
            store.upsert_calls(db, [_row(f"c{uid}", base + offset, cost, project, session)])
    now = base + 30_000
    windows, truths = [], []
    for project, session in ((None, None), ("a", None), ("b", None), (None, "s1")):
        window = store.SpendWindow(base + start, project, session)
        windows.append(window)
        truths.append(_truth(db, base + start, project, session))
        assert store.cap_spent(db, window, now) == truths[-1]
    assert store.cap_spends(db, windows, now) == truths
    assert store.cap_spends(db, windows, now, reservations=False) == truths
    db.conn.close()


def test_upgrade_backfills_buckets_from_existing_rows(tmp_path):
    import sqlite3

    import sqlite_utils

    conn = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    db = sqlite_utils.Database(conn)
    for number, step in enumerate(store.MIGRATIONS[:2], start=1):  # the schema before caps
        step(db)
        db.execute(f"PRAGMA user_version={number}")
    now = time.time()
    for i in range(50):
        db.execute("INSERT INTO api_calls (call_uid, started_at, started_ts, status, "
                   "cost_picousd, project, session_id, updated_ts) VALUES (?,?,?,?,?,?,?,?)",
                   [f"c{i}", "x", now - i * 600, "ok", 10**9 + i, f"p{i % 3}", f"s{i % 4}", now])
    conn.close()
    db = store.connect(tmp_path / "c.db")
    for start in (now - 3600, now - 86400, 0):
        for project in (None, "p1"):
            assert store.cap_spent(db, store.SpendWindow(start, project), now) == \
                _truth(db, start, project)
    db.conn.close()


def test_reservations_count_until_released_or_expired(tmp_path):
    db = store.connect(tmp_path / "c.db")
    now = time.time()
    window = store.SpendWindow(now - 60)
    reserve = store.Reservation("c1", now, 5 * 10**9, now + 900, "p", "s")
    query = store.spend_query([window])
    spent, allowed = store.cap_check_and_reserve(db, query, now, lambda s: True, reserve)
    assert spent == [0] and allowed
    assert store.cap_spent(db, window, now) == 5 * 10**9
    # the row's cost so far (message_start) replaces part of the estimate, never adds to it
    store.upsert_calls(db, [_row("c1", now, 2 * 10**9, "p", "s")])
    assert store.cap_spent(db, window, now) == 5 * 10**9
    final = _row("c1", now, 7 * 10**9, "p", "s") | {store.RELEASE_RESERVATION: True}
    store.upsert_calls(db, [final])
    assert store.cap_reservations(db) == []
    assert store.cap_spent(db, window, now) == 7 * 10**9
    # a reservation left by a process that died stops counting when it expires
    store.cap_check_and_reserve(db, store.spend_query([window]), now, lambda s: True,
                                store.Reservation("c2", now, 10**9, now + 1))
    assert store.cap_spent(db, window, now) == 8 * 10**9
    assert store.cap_spent(db, window, now + 2) == 7 * 10**9
    db.conn.close()


def test_check_queries_use_indexes(tmp_path):
    """The one statement of a check with a global, a project and a session window: each
    part is an index search; only the (small) reservations table is scanned."""
    db = store.connect(tmp_path / "c.db")
    params: dict = {"now": 0}
    for i in range(3):
        params.update({f"scope{i}": "", f"first{i}": 0, f"key{i}": "x", f"start{i}": 0,
                       f"edge{i}": 1, f"project{i}": None, f"session{i}": None})
    every_part = tuple((kind, True, True) for kind in ("", "p", "s"))
    plan = [str(r[-1]) for r in
            db.execute("EXPLAIN QUERY PLAN " + store._spends_sql(every_part), params)]
    searches = [step for step in plan if step.startswith("SEARCH")]
    assert sum("cap_spend USING PRIMARY KEY (scope=? AND bucket>?)" in s for s in searches) == 3
    assert any("api_calls USING INDEX api_calls_started_ts" in s for s in searches)
    assert any("api_calls USING INDEX api_calls_project" in s for s in searches)
    assert any("api_calls USING INDEX api_calls_session" in s for s in searches)
    scans = [s for s in plan if s.startswith("SCAN")]
    assert set(scans) <= {"SCAN r", "SCAN CONSTANT ROW"}
    db.conn.close()


def test_check_latency(tmp_path):
    """A smaller stand-in for the 1,000,000-row measurement in docs/caps.md (bench there)."""
    path = tmp_path / "c.db"
    db = store.connect(path)
    rng = random.Random(7)
    now = time.time()
    cols = ("call_uid", "started_at", "started_ts", "status", "cost_picousd", "project",
            "session_id", "updated_ts")
    store.bulk_insert_calls(db, ((f"c{i}", "x", now - rng.random() * 90 * 86400, "ok",
                                  rng.randint(10**8, 10**11), f"p{i % 20}", f"s{i // 50}", now)
                                 for i in range(100_000)), cols)
    policy = parse_policy({"caps": {
        "hourly": "1000000", "daily": "1000000", "weekly": "1000000", "monthly": "1000000",
        "projects": {"p3": {"daily": "1000000"}}, "per_session": {"total": "1000000"}}})
    guard = Guard(path)
    latencies = []
    for i in range(600):
        started = time.perf_counter()
        decision = guard.check(policy, call_uid=f"n{i}", project="p3", session_id="s77",
                               model="claude-opus-4-8")
        latencies.append(time.perf_counter() - started)
        store.cap_release(db, f"n{i}")
        assert decision.allowed
    latencies.sort()
    guard.close()
    db.conn.close()
    assert latencies[len(latencies) // 2] < 0.002  # p50 well under 1 ms on a normal laptop


def test_a_check_on_the_event_loop_never_waits_for_a_lock(tmp_path):
    """Another process in a write transaction: a non-waiting check that must reserve gives
    up at once (the proxy then retries on its caps thread), a waiting one waits its bounded
    time, and a $0 check, a plain read, decides at once."""
    path = tmp_path / "c.db"
    store.connect(path).conn.close()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    guard = Guard(path)
    reserving = parse_policy({"caps": {"daily": "10", "estimate": "0.01"}})
    free = parse_policy({"caps": {"daily": "10"}})
    try:
        started = time.perf_counter()
        assert guard.check(reserving, call_uid="a", project=None, session_id=None,
                           model=None, wait=False) is None
        assert time.perf_counter() - started < 0.1

        started = time.perf_counter()
        decision = guard.check(free, call_uid="b", project=None, session_id=None,
                               model=None, wait=False)
        assert decision is not None and decision.allowed
        assert time.perf_counter() - started < 0.1

        started = time.perf_counter()
        waited = guard.check(reserving, call_uid="c", project=None, session_id=None, model=None)
        assert waited is not None and waited.reason == "db_error"  # on_error = allow
        assert time.perf_counter() - started >= store.CAP_CHECK_WAIT_MS / 1000 * 0.9
    finally:
        other.execute("ROLLBACK")
        other.close()
    decision = guard.check(reserving, call_uid="d", project=None, session_id=None, model=None,
                           wait=False)
    assert decision is not None and decision.allowed and decision.reserved
    guard.close()


def test_a_guard_moves_to_the_next_window_at_midnight(tmp_path):
    """The Guard works each window out once and reuses it until the window ends: a call a
    second before midnight sees the day's spend, one a second after sees a new day."""
    path = tmp_path / "c.db"
    db = store.connect(path)
    tz = ZoneInfo("Europe/Paris")
    midnight = datetime(2026, 3, 29, tzinfo=tz).timestamp()  # the night clocks go forward
    store.bulk_insert_calls(db, [("a", "x", midnight - 3600, "ok", 3 * 10**12, None, "s", 0)],
                            ("call_uid", "started_at", "started_ts", "status", "cost_picousd",
                             "project", "session_id", "updated_ts"))
    db.conn.close()
    guard = Guard(path)
    policy = parse_policy({"caps": {"daily": "2", "per_session": {"total": "5"},
                                         "timezone": "Europe/Paris", "notify": False}})

    def check(now: float) -> Decision:
        decision = guard.check(policy, call_uid=f"c{now}", project=None, session_id="s",
                               model=None, now=now, wait=False)
        assert decision is not None
        return decision

    for now in (midnight - 1800, midnight - 1, midnight + 1, midnight + 7200, midnight - 1):
        decision = check(now)
        daily = next(s for s in decision.statuses if s.name == "daily")
        assert decision.allowed is (now >= midnight)
        assert daily.spent_picousd == (3 * 10**12 if now < midnight else 0)
        assert daily.window_start == (midnight if now >= midnight else
                                      datetime(2026, 3, 28, tzinfo=tz).timestamp())
    guard.close()


def test_in_flight_reservations_count_only_under_caps_that_reserve(tmp_path):
    """Another call holds a $3 reservation. Caps with an estimate count it; caps without one
    (the default) count in-flight calls at $0 until their rows, as documented."""
    path = tmp_path / "c.db"
    db = store.connect(path)
    now = time.time()
    store.cap_check_and_reserve(db, store.spend_query([store.SpendWindow(0.0)]), now,
                                lambda spent: True,
                                store.Reservation("other", now, 3 * 10**12, now + 600))
    db.conn.close()
    guard = Guard(path)
    for table, counted in (({"daily": "5"}, 0),
                           ({"daily": "5", "estimates": {"claude-opus": "1"}}, 3 * 10**12),
                           ({"daily": "5", "estimate": "0.5"}, 3 * 10**12)):
        decision = guard.check(parse_policy({"caps": {**table, "notify": False}}),
                               call_uid="mine", project=None, session_id=None,
                               model="claude-haiku-4-5", now=now, wait=False)
        assert decision is not None and decision.allowed
        assert decision.statuses[0].spent_picousd == counted, table
    guard.close()


def test_a_warning_on_the_event_loop_does_not_wait_for_a_locked_database(tmp_path):
    """Crossing a warning threshold records it in cap_warnings; on the event loop a lock
    held by another process is not waited for: the warning is still given, at once."""
    path = tmp_path / "c.db"
    db = store.connect(path)
    now = time.time()
    store.bulk_insert_calls(db, [("a", "x", now - 60, "ok", 9 * 10**12, None, "s", now)],
                            ("call_uid", "started_at", "started_ts", "status", "cost_picousd",
                             "project", "session_id", "updated_ts"))
    db.conn.close()
    given: list[str] = []
    guard = Guard(path, notify=given.append)
    policy = parse_policy({"caps": {"daily": "10", "warn_at": [0.8]}})
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        started = time.perf_counter()
        decision = guard.check(policy, call_uid="c", project=None, session_id=None,
                               model=None, now=now, wait=False)
        assert time.perf_counter() - started < 0.2
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert decision is not None and decision.allowed
    assert len(given) == 1 and "daily" in given[0]
    guard.check(policy, call_uid="d", project=None, session_id=None, model=None, now=now)
    assert len(given) == 1  # once per cap, window and threshold
    guard.close()
