"""The waste report with its memo gives exactly what the code before it gave
(tests/waste_before.py, kept verbatim): every row and total, to the picodollar and the token,
on conversations as the proxy writes them (cache reads and writes, 5-minute and 1-hour
breakpoints in ``cache_key_json``, ``cache_change`` causes, subagents, auxiliary calls,
blocked and session-less rows, unpriced models, sessions resumed after hours), with
since/until at odd moments and on calls, a project filter, a session filter, pending writes,
in zones with odd offsets, memo cold and warm, and after rows are rewritten, re-projected,
added to an old session, deleted, and under another price list.
"""

from __future__ import annotations

import json
import random
import time
from datetime import UTC, datetime

import pytest
import waste_before

from ccmeter import config, store, wastememo, wastereport
from ccmeter.pricing import Catalog

NOW = datetime(2026, 10, 20, 12, 0, 7, tzinfo=UTC).timestamp()
SPAN = 12 * 86400
MODELS = ("claude-opus-4-8", "claude-opus-4-8", "claude-sonnet-5", "claude-haiku-4-5-20251001",
          "claude-unknown-7")
PROJECTS = ("api-server", "web", None)
GROUPS = list(wastereport.GROUPS)


def _key(rng: random.Random, tools: str, system: str) -> str | None:
    roll = rng.random()
    if roll < 0.1:
        return None
    if roll < 0.13:
        return "not json"
    points = [{"at": f"messages.{rng.randint(0, 40)}.0", "prefix": f"{rng.getrandbits(64):016x}",
               "ttl": rng.choice(("5m", "5m", "1h"))} for _ in range(rng.randint(0, 3))]
    return json.dumps({"tools": tools, "system": system, "messages": rng.randint(1, 40),
                       "breakpoints": points}, separators=(",", ":"))


def conversations(seed: int, sessions: int = 40) -> list[dict]:
    """Sessions of chains that mostly read what the call before left and write a little,
    with busts (a changed prefix, idle past the lifetime), unread writes and odd rows."""
    rng = random.Random(seed)
    rows: list[dict] = []
    for s in range(sessions):
        sid = f"sess-{seed}-{s:03d}"
        project = rng.choice(PROJECTS)
        t = NOW - SPAN + rng.random() * SPAN
        if s < 3:
            t = NOW - rng.uniform(60, 1800)  # running now: pending writes
        model = rng.choice(MODELS)
        chains: dict[tuple, int] = {}
        tools, system = f"{rng.getrandbits(64):016x}", f"{rng.getrandbits(64):016x}"
        for i in range(rng.randint(3, 60)):
            gap = rng.choice((rng.expovariate(1 / 20), rng.uniform(200, 400),
                              rng.uniform(3000, 4000), rng.uniform(7000, 30000)))
            t += gap if rng.random() < 0.3 else rng.expovariate(1 / 15)
            roll = rng.random()
            kind, agent = "main", None
            if roll < 0.2:
                kind, agent = "subagent", f"agent-{rng.randint(0, 2)}"
            elif roll < 0.3:
                kind = "auxiliary"
            chain = (kind, agent)
            cached = chains.get(chain, 0)
            change = None
            if rng.random() < 0.15:
                change = rng.choice(("tools", "system", "model", f"message:{rng.randint(0, 9)}",
                                     "message:x", "other"))
                if change == "tools":
                    tools = f"{rng.getrandbits(64):016x}"
                elif change == "system":
                    system = f"{rng.getrandbits(64):016x}"
            if rng.random() < 0.05:
                model = rng.choice(MODELS)
            read = min(cached, int(cached * rng.choice((1, 1, 1, 0.5, 0))))
            w5 = rng.choice((0, rng.randint(50, 4000), cached - read if cached > read else 0))
            w1 = rng.choice((0, 0, 0, rng.randint(50, 3000)))
            chains[chain] = read + w5 + w1
            status = "blocked" if rng.random() < 0.03 else "ok"
            rows.append({
                "call_uid": f"{sid}-{i:03d}", "started_ts": t,
                "started_at": datetime.fromtimestamp(t, UTC).isoformat(),
                "session_id": None if rng.random() < 0.02 else sid,
                "project": project if rng.random() < 0.9 else rng.choice(PROJECTS),
                "agent_id": agent, "call_kind": kind, "model": model, "status": status,
                "input_tokens": rng.choice((0, rng.randint(1, 3000))),
                "cache_write_5m_tokens": w5, "cache_write_1h_tokens": w1,
                "cache_read_tokens": read, "output_tokens": rng.randint(1, 900),
                "speed": "fast" if rng.random() < 0.05 else None,
                "inference_geo": "us" if rng.random() < 0.1 else None,
                "service_tier": "batch" if rng.random() < 0.05 else None,
                "provider": rng.choice(("anthropic",) * 8 + ("bedrock", "vertex")),
                "cache_key_json": _key(rng, tools, system), "cache_change": change,
                "updated_ts": t,
            })
    return rows


@pytest.fixture(scope="module")
def zones():
    yield
    time.tzset()


@pytest.fixture
def db(user_home):
    db = store.connect(config.paths().db_file)
    rows = conversations(1)
    # a session 40 minutes quiet: its 5-minute write is lost, its 1-hour write is pending
    base = {"session_id": "quiet", "project": "web", "call_kind": "main", "status": "ok",
            "model": "claude-opus-4-8", "input_tokens": 10, "output_tokens": 5}
    rows += [{**base, "call_uid": f"quiet-{i}", "started_ts": NOW - 2400 - 60 * (2 - i),
              "started_at": "x", "updated_ts": NOW, "cache_read_tokens": read,
              "cache_write_5m_tokens": w5, "cache_write_1h_tokens": w1}
             for i, (read, w5, w1) in enumerate([(0, 4000, 0), (4000, 0, 0), (4000, 700, 900)])]
    store.upsert_calls(db, rows)
    yield db
    db.conn.close()


def ranges(seed: int, db) -> list[tuple[float | None, float | None]]:
    rng = random.Random(seed)
    stamps = [r[0] for r in db.execute("SELECT started_ts FROM api_calls").fetchall()]
    out: list[tuple[float | None, float | None]] = [
        (None, None), (NOW - 7 * 86400, None), (NOW - 3 * 86400, NOW - 86400)]
    for _ in range(4):
        since = rng.choice(stamps) if rng.random() < 0.5 else NOW - rng.uniform(0, SPAN)
        until = rng.choice((None, since + rng.uniform(3600, 5 * 86400), rng.choice(stamps)))
        out.append((since, until if until is None or until > since else None))
    return out


def same(db, flt: wastereport.WasteFilters, catalog: Catalog, now: float = NOW,
         groups: list = GROUPS) -> list[wastereport.WasteReport]:
    new = wastereport.build_many(db, groups, flt, catalog, now)
    old = waste_before.build_many(db, groups, flt, catalog, now)
    for mine, theirs in zip(new, old, strict=True):
        where = (flt, mine.group_by)
        assert mine.rows == theirs.rows, where
        assert mine.totals == theirs.totals, where
        assert mine.pending_tokens == theirs.pending_tokens, where
        assert mine.spend == theirs.spend, where
    return new


@pytest.mark.parametrize("bulk", [0, 1000])
def test_equal_cold_and_warm_over_ranges_projects_and_sessions(db, monkeypatch, bulk):
    monkeypatch.setattr(wastememo, "BULK_SESSIONS", bulk)  # one read, or one per session
    catalog = Catalog.bundled()
    for since, until in ranges(2, db):
        for project in (None, "web"):
            flt = wastereport.WasteFilters(since=since, until=until, project=project)
            same(db, flt, catalog)  # the first fills the memo
            same(db, flt, catalog)  # the second reads it
    memo = list(wastememo.cache_folder().glob("waste-*.sqlite"))
    assert len(memo) == 1  # it was written (and in the user's cache folder), privately
    assert memo[0].stat().st_mode & 0o077 == 0 and memo[0].parent.stat().st_mode & 0o077 == 0
    for sid in ("sess-1-000", "sess-1-007"):
        flt = wastereport.WasteFilters(session_id=sid)
        same(db, flt, catalog, groups=[None, "cause"])
    # a range that finds something, and pending writes of the running sessions
    [whole] = same(db, wastereport.WasteFilters(), catalog, groups=["cause"])
    assert whole.totals["calls"] > 50 and whole.totals["unpriced"] > 0
    assert whole.pending_tokens > 0
    assert {r["cause"] for r in whole.rows} >= {"never_read", "ttl", "message", "tools"}


def test_the_memo_follows_every_change_to_a_session(db):
    catalog = Catalog.bundled()
    flt = wastereport.WasteFilters(since=NOW - SPAN - 86400)
    same(db, flt, catalog)
    old_row = store.query(db, "SELECT call_uid, session_id FROM api_calls WHERE started_ts < ? "
                              "AND cache_write_5m_tokens > 0 ORDER BY started_ts LIMIT 1",
                          (NOW - 5 * 86400,))[0]
    sid = old_row["session_id"]
    steps = [
        "UPDATE api_calls SET cache_read_tokens = cache_read_tokens + 5000 WHERE call_uid = :uid",
        "UPDATE api_calls SET project = 'moved' WHERE call_uid = :uid",
        "UPDATE api_calls SET model = 'claude-sonnet-5' WHERE call_uid = :uid",
        "UPDATE api_calls SET status = 'blocked' WHERE call_uid = :uid",
        "DELETE FROM api_calls WHERE call_uid = :uid",
    ]
    for step in steps:
        db.execute(step, {"uid": old_row["call_uid"]})
        same(db, flt, catalog)
        same(db, flt._replace(project="moved"), catalog, groups=["session"])
    # a call added to the old session, between two of its calls (it now re-writes)
    first = store.query(db, "SELECT * FROM api_calls WHERE session_id = ? ORDER BY started_ts "
                            "LIMIT 1", (sid,))[0]
    store.upsert_calls(db, [{**first, "call_uid": "late-import", "started_ts":
                             first["started_ts"] + 1, "cache_read_tokens": 0,
                             "cache_write_5m_tokens": 90_000}])
    same(db, flt, catalog)
    # another price list: the same memo file is never read for it
    cheaper = catalog.with_overrides({"models": {"claude-opus-4-8": {
        "input": "1", "cache_write_5m": "2", "cache_write_1h": "3", "cache_read": "0.1",
        "output": "4"}}})
    assert cheaper.fingerprint() != catalog.fingerprint()
    same(db, flt, cheaper)
    same(db, flt, catalog)


def test_a_database_restored_from_a_backup_is_not_read_from_the_memo(db):
    """Back the file up, change a session once (the memo learns it), restore the backup and
    change the same session once again, differently: a count of writes would be back at the
    memo's, a random version is not."""
    import shutil

    catalog = Catalog.bundled()
    flt = wastereport.WasteFilters(since=NOW - SPAN - 86400)
    path = config.paths().db_file
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    backup = path.with_name("backup.db")
    shutil.copyfile(path, backup)
    sid = store.query(db, "SELECT session_id FROM api_calls WHERE started_ts < ? AND "
                          "cache_write_5m_tokens > 0 ORDER BY started_ts LIMIT 1",
                      (NOW - 5 * 86400,))[0]["session_id"]
    change = ("UPDATE api_calls SET cache_write_5m_tokens = cache_write_5m_tokens + :n "
              "WHERE session_id = :sid AND cache_write_5m_tokens > 0")
    session = wastereport.WasteFilters(since=flt.since, project=None)
    db.execute(change, {"n": 5000, "sid": sid})
    [first] = same(db, session, catalog, groups=["session"])  # the memo holds it now
    db.conn.close()
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    shutil.copyfile(backup, path)
    restored = store.connect(path)
    restored.execute(change, {"n": 70_000, "sid": sid})
    [second] = same(restored, session, catalog, groups=["session"])
    restored.conn.close()
    mine = [r for r in second.rows if r["session"] == sid]
    assert mine and mine != [r for r in first.rows if r["session"] == sid]


def test_a_session_resumed_after_hours_and_time_passing(db):
    catalog = Catalog.bundled()
    flt = wastereport.WasteFilters(since=NOW - 2 * 86400)
    same(db, flt, catalog)
    sid = store.query(db, "SELECT session_id FROM api_calls WHERE session_id IS NOT NULL "
                          "AND started_ts < ? ORDER BY started_ts LIMIT 1", (NOW - 9 * 86400,))
    row = store.query(db, "SELECT * FROM api_calls WHERE session_id = ? ORDER BY started_ts "
                          "DESC LIMIT 1", (sid[0]["session_id"],))[0]
    store.upsert_calls(db, [{**row, "call_uid": "resumed", "started_ts": NOW - 86400,
                             "cache_read_tokens": 0, "cache_change": None}])
    for now in (NOW, NOW + 200, NOW + 3000, NOW + 4000, NOW + 86400):
        same(db, flt, catalog, now=now)
        same(db, wastereport.WasteFilters(), catalog, now=now, groups=["session", "day"])


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "Asia/Kathmandu", "America/St_Johns",
                                  "XXX-0:07"])
def test_days_in_odd_zones(db, zones, monkeypatch, zone):
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    catalog = Catalog.bundled()
    for flt in (wastereport.WasteFilters(), wastereport.WasteFilters(since=NOW - 6 * 86400)):
        same(db, flt, catalog, groups=["day"])
        same(db, flt, catalog, groups=["day", "cause"])


def test_a_database_without_the_session_versions_is_read_as_before(db, tmp_path):
    catalog = Catalog.bundled()
    db.execute("DROP TABLE waste_sessions")
    same(db, wastereport.WasteFilters(since=NOW - 5 * 86400), catalog)
    assert not list(wastememo.cache_folder().glob("waste-*.sqlite"))


@pytest.mark.parametrize("discount", [None, "7.5", "33.3333"])
def test_waste_priced_as_the_catalog_prices_a_call(db, discount):
    """The per-token rates behind the quick pricing give Catalog.price's picodollars (fast,
    US, batch, cloud, long-context, a discount that leaves whole picodollars and one that
    does not), and the report with that price list equals the one before."""
    from ccmeter import waste
    from ccmeter.usage import Usage

    catalog = Catalog.bundled()
    if discount:
        catalog = catalog.with_overrides({"discount_percent": discount})
    rng = random.Random(5)
    checked = long_context = 0
    for _ in range(600):
        model = rng.choice((*MODELS, "claude-sonnet-4-5-20250929", "claude-haiku-5-5"))
        traits = {"speed": rng.choice((None, None, "fast")),
                  "service_tier": rng.choice((None, "batch")),
                  "inference_geo": rng.choice((None, "us"))}
        provider = rng.choice(("anthropic", "anthropic", "bedrock", "vertex"))
        back = rng.choice((rng.uniform(0, 10 * 86400), rng.uniform(0, 400 * 86400)))
        at = datetime.fromtimestamp(NOW - back, UTC)
        counts = [rng.randint(0, 150_000) for _ in range(4)]
        usage = Usage(input_tokens=counts[0], cache_write_5m_tokens=counts[1],
                      cache_write_1h_tokens=counts[2], cache_read_tokens=counts[3], **traits)
        expected = catalog.price(model, usage, at, provider=provider).cost_picousd
        rates = catalog.prompt_rates(model, at, provider=provider, **traits)
        if rates is None:
            assert expected is None
            continue
        threshold, below, above = rates
        row = above if threshold is not None and sum(counts) > threshold else below
        if row is not None:
            assert sum(c * r for c, r in zip(counts, row, strict=True)) == expected
            checked += 1
            long_context += row is above
        call = waste.CacheCall("c", at.timestamp(), "s", None, "main", None, model,
                               counts[0], counts[1], counts[2], counts[3], provider=provider,
                               **traits)
        for instead in ("read", "input"):
            quick = waste.Pricer(catalog).saving(call, t5=counts[1] // 2, t1=counts[2],
                                                 instead=instead)
            slow = waste_before.Pricer(catalog).saving(
                waste_before.CacheCall(*call._values()[:-1]), t5=counts[1] // 2,
                t1=counts[2], instead=instead)
            assert quick == slow
    # a third off leaves fractions of a picodollar: every price is the catalog's own then
    assert checked == 0 if discount == "33.3333" else checked > 200 and long_context > 10
    same(db, wastereport.WasteFilters(), catalog)


def test_the_dashboard_fills_the_memo_at_start_and_its_page_reads_it(db, monkeypatch):
    import sqlite3

    from ccmeter.dashboard.server import Dashboard

    dashboard = Dashboard(config.paths().db_file)
    later = NOW + 30 * 86400  # every session finished
    dashboard.warm_waste(now=later)
    [memo] = wastememo.cache_folder().glob("waste-*.sqlite")
    kept = sqlite3.connect(memo).execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
    assert kept == 41  # every session with calls, each once
    read: list[int] = []
    account = waste_before.account
    monkeypatch.setattr("ccmeter.waste.account",
                        lambda calls, *a: read.append(len(list(calls))) or account([], *a))
    status, _kind, body = dashboard.render("/waste", "since=all", now=later)
    assert status == 200 and "Waste" in body
    assert read == []  # every session came from the memo
    dashboard.close()


def test_memo_files_nobody_opens_are_deleted(db, tmp_path):
    """A memo of another price list (or of a database that is gone) is deleted once no one
    has opened it for a month; the one in use is kept, however old it was."""
    import os

    catalog = Catalog.bundled()
    same(db, wastereport.WasteFilters(since=NOW - SPAN - 86400), catalog)
    [current] = wastememo.cache_folder().glob("waste-*.sqlite")
    old = current.with_name("waste-0123456789abcdef.sqlite")
    old.write_bytes(b"")
    recent = current.with_name("waste-fedcba9876543210.sqlite")
    recent.write_bytes(b"")
    month_ago = time.time() - wastememo.STALE_AFTER_S - 60
    for path in (old, current):
        os.utime(path, (month_ago, month_ago))
    same(db, wastereport.WasteFilters(since=NOW - SPAN - 86400), catalog)
    assert current.exists() and recent.exists() and not old.exists()
    assert current.stat().st_mtime > month_ago + 3600
