"""Team share: summaries, the files on the share, identity/privacy, reading them back.

Every expectation is computed independently from the raw call rows the test wrote, never
from ccmeter's own summaries.
"""

from __future__ import annotations

import json
import os
import random
import threading
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from ccmeter import share, share_identity, sharestore, store, team
from ccmeter.config import CCMeterError, Paths

PICO = 10**12
MODELS = ("claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5")
PROJECTS = ("api-server", "web", None, "/home/someone/SECRET-PATH/infra")
FIRST_DAY = date(2026, 10, 12)  # 40 days: crosses the October/November month boundary
DAYS = 40
SECRETS = ("SECRET-PATH", "sk-ant-", "session-", "msg_", "req_", "prompt")


def local_ts(day: date, hour: int, minute: int = 0) -> float:
    return datetime(day.year, day.month, day.day, hour, minute).timestamp()


def make_rows(user: str, seed: int, *, days: int = DAYS, first: date = FIRST_DAY) -> list[dict]:
    """Realistic call rows: ok, unpriced, blocked and upstream errors across days."""
    rng = random.Random(seed)
    rows = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        for n in range(rng.randint(0, 6)):
            kind = rng.choices(["ok", "unpriced", "blocked", "error"], [75, 10, 10, 5])[0]
            model = rng.choice(MODELS)
            project = rng.choice(PROJECTS)
            row = {
                "call_uid": f"{user}-{offset}-{n}",
                "started_at": "ignored",
                "started_ts": local_ts(day, rng.randint(0, 23), rng.randint(0, 59)),
                "session_id": f"session-{user}-{offset}",
                "project": project,
                "working_dir_name": "/home/someone/SECRET-PATH",
                "request_id": f"req_{user}{offset}{n}",
                "message_id": f"msg_{user}{offset}{n}",
                "hops_json": json.dumps({"prompt": "sk-ant-secret"}),
                "requested_model": model,
                "model": model,
                "status": "ok",
                "input_tokens": rng.randint(1, 5000),
                "cache_write_5m_tokens": rng.randint(0, 20000),
                "cache_write_1h_tokens": rng.choice([0, 0, rng.randint(1, 9000)]),
                "cache_read_tokens": rng.randint(0, 200000),
                "output_tokens": rng.randint(1, 8000),
                "cost_picousd": rng.randint(10**9, 3 * PICO),
                "updated_ts": 0.0,
            }
            if kind == "unpriced":
                row.update(model="claude-future-9", requested_model="claude-future-9",
                           cost_picousd=None)
            elif kind == "blocked":
                row.update(status="blocked", model=None, cost_picousd=None, input_tokens=0,
                           cache_write_5m_tokens=0, cache_write_1h_tokens=0,
                           cache_read_tokens=0, output_tokens=0)
            elif kind == "error":
                row.update(status="upstream_error", http_status=529, cost_picousd=0,
                           input_tokens=0, cache_write_5m_tokens=0, cache_write_1h_tokens=0,
                           cache_read_tokens=0, output_tokens=0)
            rows.append(row)
    return rows


def fill_home(home: Path, rows: list[dict]) -> Paths:
    paths = Paths(config_dir=home, data_dir=home)
    db = store.connect(paths.db_file)
    store.upsert_calls(db, rows)
    db.conn.close()
    return paths


def expected_totals(rows: list[dict]) -> dict:
    """A user's totals straight from the raw rows, by the documented definitions."""
    sent = [r for r in rows if r["status"] != "blocked"]
    out = {
        "calls": len(sent),
        "unpriced_calls": sum(r["cost_picousd"] is None for r in sent),
        "blocked_calls": len(rows) - len(sent),
        "cap_hits": len(rows) - len(sent),
        "cost_picousd": sum(r["cost_picousd"] or 0 for r in sent),
    }
    for name in share.TOKEN_FIELDS:
        out[name] = sum(r[name] for r in rows)
    return out


def push_user(paths: Paths, share_dir: Path, user: str, *, rename: bool = False,
              **settings) -> share.PushResult:
    db = store.connect(paths.db_file)
    try:
        result, _ = share.push(db, paths, share_identity.ShareSettings(user=user, share=share_dir,
                                                                       **settings),
                               rename=rename)
    finally:
        db.conn.close()
    return result


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def share_dir(tmp_path: Path) -> Path:
    path = tmp_path / "team-share"
    path.mkdir()
    return path


# --- summaries ------------------------------------------------------------------------------


def test_summary_rows_match_the_raw_calls(tmp_path):
    rows = make_rows("alice", 1)
    paths = fill_home(tmp_path / "alice", rows)
    db = store.connect(paths.db_file)
    summary = share.summarise(db, share_identity.ShareSettings(user="alice"))

    expected: dict[tuple, list[dict]] = {}
    for r in rows:
        day = datetime.fromtimestamp(r["started_ts"]).date().isoformat()
        project = None if r["project"] is None else r["project"].rsplit("/", 1)[-1]
        expected.setdefault((day, project, r["model"] or r["requested_model"]), []).append(r)
    assert [(s["day"], s["project"], s["model"]) for s in summary] == sorted(
        expected, key=lambda k: (k[0], k[1] is not None, k[1] or "", k[2]))
    for s in summary:
        want = expected_totals(expected[(s["day"], s["project"], s["model"])])
        assert list(s) == list(share.ROW_FIELDS)
        assert s["schema_version"] == 1
        for name in ("calls", *share.TOKEN_FIELDS, "unpriced_calls", "blocked_calls",
                     "cap_hits"):
            assert s[name] == want[name], name
        if want["calls"] and want["unpriced_calls"] == want["calls"]:
            assert s["cost_picousd"] is None and s["cost_usd"] is None  # never $0
        else:
            assert s["cost_picousd"] == want["cost_picousd"]
            whole, frac = divmod(want["cost_picousd"], PICO)
            assert s["cost_usd"] == f"{whole}.{frac:012d}"


def test_all_unpriced_group_is_null_and_blocked_only_group_costs_zero(tmp_path):
    day = date(2026, 11, 3)
    base = {"started_at": "x", "updated_ts": 0.0, "project": "p", "input_tokens": 10}
    paths = fill_home(tmp_path, [
        base | {"call_uid": "a", "started_ts": local_ts(day, 9), "model": "new-model",
                "status": "ok", "cost_picousd": None},
        base | {"call_uid": "b", "started_ts": local_ts(day, 10), "requested_model": "m",
                "status": "blocked", "input_tokens": 0},
    ])
    db = store.connect(paths.db_file)
    by_model = {r["model"]: r for r in share.summarise(db, share_identity.ShareSettings(user="u"))}
    assert by_model["new-model"]["cost_usd"] is None
    assert by_model["new-model"]["unpriced_calls"] == 1
    assert (by_model["m"]["calls"], by_model["m"]["blocked_calls"], by_model["m"]["cap_hits"],
            by_model["m"]["cost_picousd"], by_model["m"]["cost_usd"]) == (
        0, 1, 1, 0, "0.000000000000")


def test_cap_hits_come_from_a_cap_events_table_when_there_is_one(tmp_path):
    day = date(2026, 11, 3)
    paths = fill_home(tmp_path, [
        {"call_uid": "b", "started_at": "x", "started_ts": local_ts(day, 10), "updated_ts": 0.0,
         "project": "p", "model": "m", "status": "blocked"},
    ])
    db = store.connect(paths.db_file)
    db.execute("CREATE TABLE cap_events (ts REAL, project TEXT, model TEXT, cap TEXT)")
    for hour in (9, 11, 12):
        db.execute("INSERT INTO cap_events VALUES (?, 'p', 'm', 'daily')", [local_ts(day, hour)])
    [row] = share.summarise(db, share_identity.ShareSettings(user="u"))
    assert (row["blocked_calls"], row["cap_hits"]) == (1, 3)


def test_no_prompt_path_key_or_id_leaves_the_laptop(tmp_path, share_dir):
    paths = fill_home(tmp_path / "h", make_rows("alice", 2))
    push_user(paths, share_dir, "alice")
    files = list(share_dir.rglob("*.jsonl"))
    assert files
    for path in files:
        text = path.read_text()
        for secret in SECRETS:
            assert secret not in text
        for line in text.splitlines():
            assert set(json.loads(line)) == set(share.ROW_FIELDS)
    projects = {json.loads(line)["project"] for p in files for line in p.read_text().splitlines()}
    assert projects == {"api-server", "web", None, "infra"}


# --- the files on the share -----------------------------------------------------------------


def test_push_writes_hive_partitions_per_month_user_and_machine(tmp_path, share_dir):
    paths = fill_home(tmp_path / "h", make_rows("alice", 3))
    result = push_user(paths, share_dir, "alice@laptop")
    machine = (tmp_path / "h" / "machine-id").read_text().strip()
    assert len(machine) == 16 and result.machine == machine
    assert sorted(str(p.relative_to(share_dir)) for p in share_dir.rglob("*.jsonl")) == [
        f"ccmeter/v1/month=2026-10/user=alice@laptop/part-{machine}.jsonl",
        f"ccmeter/v1/month=2026-11/user=alice@laptop/part-{machine}.jsonl",
    ]
    assert not [p for p in share_dir.rglob(".*")]  # no temporaries left behind
    for path in share_dir.rglob("*.jsonl"):
        month = path.parent.parent.name.removeprefix("month=")
        assert all(json.loads(line)["day"].startswith(month)
                   for line in path.read_text().splitlines())
        assert path.stat().st_mode & 0o044 == 0o044  # teammates can read it


def test_push_twice_changes_nothing_and_new_calls_rewrite_only_that_month(tmp_path, share_dir):
    rows = make_rows("alice", 4)
    paths = fill_home(tmp_path / "h", rows)
    push_user(paths, share_dir, "alice")
    before = snapshot(share_dir)
    again = push_user(paths, share_dir, "alice")
    assert snapshot(share_dir) == before  # same bytes, same mtimes
    assert again.written == [] and len(again.unchanged) == 2

    late = dict(rows[-1], call_uid="late-one", started_ts=local_ts(date(2026, 11, 20), 9))
    fill_home(tmp_path / "h", [late])
    third = push_user(paths, share_dir, "alice")
    after = snapshot(share_dir)
    assert [p.parent.parent.name for p in third.written] == ["month=2026-11"]
    changed = {k for k in after if after[k] != before.get(k)}
    assert len(changed) == 1 and "month=2026-11" in changed.pop()


def test_push_never_creates_the_share_itself(tmp_path):
    paths = fill_home(tmp_path / "h", make_rows("alice", 5))
    with pytest.raises(CCMeterError, match="does not exist"):
        push_user(paths, tmp_path / "not-mounted", "alice")
    assert not (tmp_path / "not-mounted").exists()


def test_push_never_touches_other_users_files(tmp_path, share_dir):
    bob = fill_home(tmp_path / "bob", make_rows("bob", 6))
    push_user(bob, share_dir, "bob")
    stray = share_dir / "ccmeter/v1/month=2026-11/user=bob/notes.txt"
    stray.write_text("bob's")
    bobs = snapshot(share_dir)
    alice = fill_home(tmp_path / "alice", make_rows("alice", 7))
    push_user(alice, share_dir, "alice")
    push_user(alice, share_dir, "alice")
    after = snapshot(share_dir)
    assert {k: after[k] for k in bobs} == bobs


def test_a_rename_withdraws_this_machines_copy_under_the_old_name(tmp_path, share_dir):
    rows = make_rows("alice", 21)
    paths = fill_home(tmp_path / "laptop", rows)
    first = push_user(paths, share_dir, "alice")
    machine = first.machine
    desk = fill_home(tmp_path / "desk", make_rows("alice-desk", 22))  # alice's other machine
    desk_id = push_user(desk, share_dir, "alice").machine
    old_dir = share_dir / "ccmeter/v1/month=2026-11/user=alice"
    kept = [old_dir / f"part-{machine}.jsonl.bak", old_dir / f"part-{machine}-copy.jsonl",
            old_dir / f".part-{machine}.jsonl.x.tmp"]  # not exactly this machine's name
    for path in kept:
        path.write_text("{}\n")

    renamed = push_user(paths, share_dir, "bob", rename=True)
    mine = sorted(share_dir.rglob(f"part-{machine}.jsonl"))
    assert [p.parent.name for p in mine] == ["user=bob", "user=bob"]
    assert renamed.removed == {"alice": [
        share_dir / f"ccmeter/v1/month={m}/user=alice/part-{machine}.jsonl"
        for m in ("2026-10", "2026-11")]}
    assert len(list(share_dir.rglob(f"part-{desk_id}.jsonl"))) == 2  # other machines stay
    assert all(p.exists() for p in kept)

    data = team.read_share(share_dir)
    got = {g["user"]: g for g in team.aggregate(data.rows, ["user"])}
    want = expected_totals(rows)
    assert {k: got["bob"][k] for k in want} == want  # counted once, not twice
    assert got["alice"]["calls"] == expected_totals(make_rows("alice-desk", 22))["calls"]
    assert push_user(paths, share_dir, "bob").removed == {}  # nothing left to withdraw
    assert push_user(paths, share_dir, "bob", rename=True).removed == {}


def test_a_rename_with_since_withdraws_only_the_months_it_rewrites(tmp_path, share_dir):
    paths = fill_home(tmp_path / "h", make_rows("alice", 23))
    push_user(paths, share_dir, "alice")
    db = store.connect(paths.db_file)
    try:
        result, _ = share.push(db, paths, share_identity.ShareSettings(user="bob", share=share_dir),
                               since=date(2026, 11, 1), rename=True)
    finally:
        db.conn.close()
    assert [p.parent.parent.name for p in result.removed["alice"]] == ["month=2026-11"]
    users = {(p.parent.parent.name, p.parent.name) for p in share_dir.rglob("part-*.jsonl")}
    assert users == {("month=2026-10", "user=alice"), ("month=2026-11", "user=bob")}


def test_dry_run_lists_the_copies_a_rename_would_withdraw(tmp_path, share_dir):
    paths = fill_home(tmp_path / "h", make_rows("alice", 24))
    push_user(paths, share_dir, "alice@laptop")
    before = snapshot(share_dir)
    db = store.connect(paths.db_file)
    try:
        result, _ = share.push(db, paths, share_identity.ShareSettings(user="bob", share=share_dir),
                               dry_run=True, rename=True)
    finally:
        db.conn.close()
    assert list(result.removed) == ["alice@laptop"] and len(result.removed["alice@laptop"]) == 2
    assert snapshot(share_dir) == before


def test_two_names_pushing_at_once_from_one_machine_leave_one_copy(tmp_path, share_dir):
    rows = make_rows("alice", 26)
    paths = fill_home(tmp_path / "h", rows)
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def run(user: str) -> None:
        try:
            barrier.wait()
            push_user(paths, share_dir, user, rename=user == "bob")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(u,)) for u in ("alice", "bob") * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # alice's pushes after bob's rename are refused (never moving bob's files back)
    assert all(isinstance(exc, CCMeterError) and "publishes to the share as bob" in str(exc)
               for exc in errors), errors
    months = Counter(p.parent.parent.name for p in share_dir.rglob("part-*.jsonl"))
    assert months == {"month=2026-10": 1, "month=2026-11": 1}
    data = team.read_share(share_dir)
    assert team.totals(team.aggregate(data.rows, ["user"]), data.rows)["calls"] == \
        expected_totals(rows)["calls"]


def test_pushes_of_one_machine_take_turns(tmp_path, share_dir):
    paths = fill_home(tmp_path / "h", make_rows("alice", 25))
    busy = pytest.raises(CCMeterError, match="another `ccmeter push` from this machine")
    with share._machine_lock(paths), busy, share._machine_lock(paths, timeout=0.2):
        pass
    with share._machine_lock(paths, timeout=0.2):  # released
        pass


def test_concurrent_pushes_from_many_users_and_two_machines_of_one(tmp_path, share_dir):
    users = {f"user{i}": make_rows(f"user{i}", 100 + i) for i in range(6)}
    homes = {name: fill_home(tmp_path / name, rows) for name, rows in users.items()}
    # carol works on two machines: two homes (two machine ids), one user name
    carol_rows = {"m1": make_rows("carol-m1", 201), "m2": make_rows("carol-m2", 202)}
    carol_homes = [fill_home(tmp_path / f"carol-{m}", rows) for m, rows in carol_rows.items()]
    jobs = [(paths, name) for name, paths in homes.items()]
    jobs += [(paths, "carol") for paths in carol_homes]
    jobs *= 3  # every machine pushes three times, all at once
    barrier = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def run(paths: Paths, user: str) -> None:
        try:
            barrier.wait()
            push_user(paths, share_dir, user)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert not list(share_dir.rglob(".*.tmp"))

    data = team.read_share(share_dir)
    assert data.skipped == []
    got = {g["user"]: g for g in team.aggregate(data.rows, ["user"])}
    users["carol"] = carol_rows["m1"] + carol_rows["m2"]
    assert set(got) == set(users)
    for name, rows in users.items():
        want = expected_totals(rows)
        assert {k: got[name][k] for k in want} == want, name
    carol_parts = {p.name for p in share_dir.rglob("part-*.jsonl") if "user=carol" in str(p)}
    assert len(carol_parts) == 2  # one file per machine, per month
    whole = team.totals(team.aggregate(data.rows, ["user"]), data.rows)
    assert whole["cost_picousd"] == sum(expected_totals(r)["cost_picousd"]
                                       for r in users.values())


def test_write_atomic_leaves_old_or_new_never_half(tmp_path, monkeypatch):
    target = tmp_path / "part-x.jsonl"
    sharestore.write_atomic(target, b"old\n")

    def boom(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sharestore.os, "replace", boom)
    with pytest.raises(OSError):
        sharestore.write_atomic(target, b"new\n" * 1000)
    assert target.read_bytes() == b"old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-x.jsonl"]


def test_stale_temporaries_of_this_machine_are_cleaned_others_kept(tmp_path, share_dir):
    paths = fill_home(tmp_path / "h", make_rows("alice", 8))
    push_user(paths, share_dir, "alice")
    [part] = [p for p in share_dir.rglob("part-*.jsonl") if "2026-11" in str(p)]
    stale = part.parent / f".{part.name}.abc.tmp"
    fresh = part.parent / f".{part.name}.def.tmp"
    other = part.parent / ".part-othermachine.jsonl.ghi.tmp"
    for tmp in (stale, fresh, other):
        tmp.write_text('{"half')
    os.utime(stale, (1, 1))
    os.utime(other, (1, 1))
    push_user(paths, share_dir, "alice")
    assert not stale.exists() and fresh.exists() and other.exists()
    assert team.read_share(share_dir).skipped == []  # readers never see temporaries


# --- reading the share back -----------------------------------------------------------------


def _two_users(tmp_path: Path, share_dir: Path) -> dict[str, list[dict]]:
    users = {"alice": make_rows("alice", 11), "bob": make_rows("bob", 12)}
    for name, rows in users.items():
        push_user(fill_home(tmp_path / name, rows), share_dir, name)
    return users


def test_corrupt_and_half_written_files_are_skipped_by_name(tmp_path, share_dir):
    users = _two_users(tmp_path, share_dir)
    month = share_dir / "ccmeter/v1/month=2026-11"
    half = month / "user=mallory/part-0000000000000001.jsonl"
    half.parent.mkdir()
    half.write_text('{"schema_version":1,"day":"2026-11-02","project":"x","model":"m","ca')
    junk = month / "user=trent/part-0000000000000002.jsonl"
    junk.parent.mkdir()
    junk.write_bytes(b"\x00\xff not json at all\n")
    wrong = month / "user=eve/part-0000000000000003.jsonl"
    wrong.parent.mkdir()
    good_line = (share_dir / "ccmeter/v1/month=2026-11/user=alice").glob("*.jsonl")
    line = json.loads(next(good_line).read_text().splitlines()[0])
    wrong.write_text(json.dumps(line) + "\n" + json.dumps(line | {"calls": "12"}) + "\n")
    future = month / "user=zed/part-0000000000000004.jsonl"
    future.parent.mkdir()
    future.write_text(json.dumps(line | {"schema_version": 2}) + "\n")

    conflict = next((share_dir / "ccmeter/v1/month=2026-10/user=bob").glob("*.jsonl"))
    conflict = conflict.with_name(conflict.stem + " (conflicted copy).jsonl")
    conflict.write_text(json.dumps(line | {"day": "2026-10-20"}) + "\n")

    data = team.read_share(share_dir)
    skipped = {path: reason for path, reason in data.skipped}
    assert set(skipped) == {half, junk, wrong, future, conflict}
    assert "conflict" in skipped[conflict]
    assert "cut short" in skipped[half]
    assert "calls" in skipped[wrong] and "line 2" in skipped[wrong]
    assert "schema_version 2" in skipped[future]
    assert all(str(path) in warning for path, warning in zip(skipped, data.warnings,
                                                              strict=True))
    got = {g["user"]: g for g in team.aggregate(data.rows, ["user"])}
    assert set(got) == {"alice", "bob"}  # eve's good first line is not half-counted
    for name, rows in users.items():
        assert got[name]["cost_picousd"] == expected_totals(rows)["cost_picousd"]


@pytest.mark.parametrize(("change", "reason"), [
    ({"day": "2026-11-31"}, "day"),
    ({"day": "2026-10-30"}, "month 2026-11"),
    ({"calls": True}, "calls"),
    ({"output_tokens": -1}, "output_tokens"),
    ({"cost_picousd": 1.5}, "cost_picousd"),
    ({"project": 7}, "project"),
    ({"schema_version": None}, "schema_version"),
])
def test_each_schema_rule_skips_the_file(share_dir, change, reason):
    good = {"schema_version": 1, "day": "2026-11-02", "project": "p", "model": "m",
            "calls": 1, **dict.fromkeys(share.TOKEN_FIELDS, 1), "cost_usd": "0.000000000001",
            "cost_picousd": 1, "unpriced_calls": 0, "blocked_calls": 0, "cap_hits": 0,
            "added_in_a_later_v1": "ignored"}
    folder = share_dir / "ccmeter/v1/month=2026-11/user=u"
    folder.mkdir(parents=True)
    (folder / "part-a.jsonl").write_text(json.dumps(good) + "\n")
    (folder / "part-b.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(good | change)
                                         + "\n")
    data = team.read_share(share_dir)
    assert [(p.name, reason in why) for p, why in data.skipped] == [("part-b.jsonl", True)]
    assert len(data.rows) == 1 and data.rows[0]["user"] == "u"
    assert team.aggregate(data.rows, ["week"])[0]["week"] == "2026-W45"


def test_since_until_and_dimensions(tmp_path, share_dir):
    users = _two_users(tmp_path, share_dir)
    since, until = date(2026, 10, 25), date(2026, 11, 5)
    data = team.read_share(share_dir, since=since, until=until)

    def day_of(r):
        return datetime.fromtimestamp(r["started_ts"]).date()

    inside = [r for rows in users.values() for r in rows if since <= day_of(r) <= until]
    groups = team.aggregate(data.rows, ["week"])
    assert [g["week"] for g in groups] == sorted({
        f"{day_of(r).isocalendar()[0]}-W{day_of(r).isocalendar()[1]:02d}" for r in inside})
    assert sum(g["calls"] for g in groups) == expected_totals(inside)["calls"]
    by_month = team.aggregate(data.rows, ["month", "user"])
    assert {(g["month"], g["user"]) for g in by_month} == {
        (m, u) for m in ("2026-10", "2026-11") for u in ("alice", "bob")}
    for g in by_month:
        mine = [r for r in users[g["user"]] if since <= day_of(r) <= until
                and day_of(r).isoformat()[:7] == g["month"]]
        assert g["cost_picousd"] == expected_totals(mine)["cost_picousd"]
    models = team.aggregate(data.rows, ["project", "model"])
    costs = [g["cost_picousd"] for g in models if g["cost_picousd"] is not None]
    assert costs == sorted(costs, reverse=True)
    assert any(g["model"] == "claude-future-9" and g["cost_picousd"] is None for g in models)
    with pytest.raises(CCMeterError):
        team.aggregate(data.rows, ["user", "project", "model"])
    with pytest.raises(CCMeterError, match="session"):
        team.aggregate(data.rows, ["session"])


def test_read_back_with_the_standard_library_alone(tmp_path, share_dir):
    """What a teammate without ccmeter does: glob, parse the path, json.loads each line."""
    users = _two_users(tmp_path, share_dir)
    from decimal import Decimal
    from urllib.parse import unquote

    totals: Counter = Counter()
    dollars: dict[str, Decimal] = {}
    for path in share_dir.glob("ccmeter/v1/month=*/user=*/*.jsonl"):
        user = unquote(path.parent.name.split("=", 1)[1])
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            totals[user] += row["cost_picousd"] or 0
            dollars[user] = dollars.get(user, Decimal(0)) + Decimal(row["cost_usd"] or "0")
    for name, rows in users.items():
        want = expected_totals(rows)["cost_picousd"]
        assert totals[name] == want
        assert dollars[name] == Decimal(want) / PICO


def test_read_back_with_duckdb(tmp_path, share_dir):
    duckdb = pytest.importorskip("duckdb")
    users = _two_users(tmp_path, share_dir)
    push_user(fill_home(tmp_path / "odd", make_rows("o", 13)), share_dir, "o'd d/y@x")
    users["o'd d/y@x"] = make_rows("o", 13)
    # a half-written temporary next to the files must not trip the engine
    tmp = next(share_dir.rglob("part-*.jsonl")).parent / ".part-zz.jsonl.1.tmp"
    tmp.write_text('{"schema_versi')
    glob = str(share_dir / "ccmeter/v1/*/*/*.jsonl")
    result = duckdb.sql(f"""
        SELECT user, SUM(calls)::BIGINT, SUM(cost_picousd)::HUGEINT,
               SUM(cost_usd::DECIMAL(38, 12)), SUM(blocked_calls)::BIGINT, COUNT(DISTINCT month)
        FROM read_json_auto('{glob}', hive_partitioning = true)
        GROUP BY user ORDER BY user
    """).fetchall()
    assert [r[0] for r in result] == sorted(users)
    from decimal import Decimal
    for user, calls, picousd, usd, blocked, months in result:
        want = expected_totals(users[user])
        assert (calls, picousd, blocked, months) == (
            want["calls"], want["cost_picousd"], want["blocked_calls"], 2)
        assert usd == Decimal(want["cost_picousd"]) / PICO


# --- identity and privacy -------------------------------------------------------------------


def test_user_is_option_then_env_then_config_then_login_at_host(monkeypatch):
    cfg = {"share": {"user": "from-config", "path": "~/team"}}
    env = {"CCMETER_USER": "from-env"}
    assert share_identity.resolve_settings(cfg, env, user="from-option").user == "from-option"
    assert share_identity.resolve_settings(cfg, env).user == "from-env"
    assert share_identity.resolve_settings(cfg, {}).user == "from-config"
    monkeypatch.setattr(share_identity.getpass, "getuser", lambda: "ana")
    monkeypatch.setattr(share_identity.socket, "gethostname", lambda: "laptop.corp.example")
    assert share_identity.resolve_settings({}, {}).user == "ana@laptop"
    assert share_identity.resolve_settings(cfg, {}).share == Path("~/team").expanduser()
    assert share_identity.resolve_settings(cfg, {}, share="/x").share == Path("/x")
    with pytest.raises(CCMeterError):
        share_identity.resolve_settings({}, {}, user="  ")


def test_anonymize_needs_a_salt_and_is_stable_across_machines(tmp_path, share_dir):
    with pytest.raises(CCMeterError, match="salt"):
        share_identity.resolve_settings({}, {}, user="alice", anonymize=True).public_user()
    cfg = {"share": {"salt": "team-salt-123", "anonymize": True}}
    one = share_identity.resolve_settings(cfg, {}, user="alice").public_user()
    assert one == share_identity.resolve_settings(cfg, {}, user="alice").public_user()
    assert one.startswith("u-") and len(one) == 18 and "alice" not in one
    assert one != share_identity.resolve_settings(cfg, {}, user="bob").public_user()
    other_salt = {"share": {"salt": "another", "anonymize": True}}
    assert one != share_identity.resolve_settings(other_salt, {}, user="alice").public_user()
    plain = share_identity.resolve_settings(cfg, {}, user="alice", anonymize=False)
    assert plain.public_user() == "alice"

    for machine in ("m1", "m2"):
        paths = fill_home(tmp_path / machine, make_rows(machine, 21))
        push_user(paths, share_dir, "alice", anonymize=True, salt="team-salt-123")
    users = {p.parent.name for p in share_dir.rglob("*.jsonl")}
    assert users == {f"user={one}"}
    assert "alice" not in "".join(str(p) + p.read_text() for p in share_dir.rglob("*.jsonl"))


def test_projects_hashed_or_mapped(tmp_path):
    settings = share_identity.ShareSettings(user="u", hash_projects=True, salt="s",
                                   project_names={"secret-proj": "Project A", "web": "Web"})
    assert settings.public_project("secret-proj") == "Project A"
    assert settings.public_project("/Users/x/code/secret-proj") == "Project A"
    hashed = settings.public_project("api-server")
    assert hashed.startswith("p-") and len(hashed) == 14 and "api" not in hashed
    assert hashed == settings.public_project("api-server")
    assert settings.public_project(None) is None
    assert share_identity.ShareSettings(user="u").public_project("C:\\work\\thing") == "thing"
    with pytest.raises(CCMeterError, match="salt"):
        share_identity.ShareSettings(user="u", hash_projects=True).public_project("x")

    # two local projects mapped to one public name merge into one row
    day = date(2026, 11, 4)
    base = {"started_at": "x", "updated_ts": 0.0, "model": "m", "status": "ok"}
    paths = fill_home(tmp_path, [
        base | {"call_uid": "1", "started_ts": local_ts(day, 9), "project": "a",
                "cost_picousd": 5, "input_tokens": 1},
        base | {"call_uid": "2", "started_ts": local_ts(day, 10), "project": "b",
                "cost_picousd": 7, "input_tokens": 2},
    ])
    db = store.connect(paths.db_file)
    cfg = {"share": {"project_names": {"a": "AB", "b": "AB"}}}
    [row] = share.summarise(db, share_identity.resolve_settings(cfg, {}, user="u"))
    assert (row["project"], row["calls"], row["cost_picousd"], row["input_tokens"]) == (
        "AB", 2, 12, 3)


def test_bad_share_config_is_a_user_error():
    with pytest.raises(CCMeterError, match="project_names"):
        share_identity.resolve_settings({"share": {"project_names": {"a": 3}}}, {}, user="u")
    with pytest.raises(CCMeterError, match="table"):
        share_identity.resolve_settings({"share": "oops"}, {}, user="u")


def test_machine_id_is_created_once(tmp_path):
    paths = Paths(config_dir=tmp_path, data_dir=tmp_path)
    ids = set()
    threads = [threading.Thread(target=lambda: ids.add(share_identity.machine_id(paths)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 1 and ids == {share_identity.machine_id(paths)}


# --- the name a machine publishes under -----------------------------------------------------


def test_a_push_under_another_name_never_moves_or_deletes_the_published_files(
        tmp_path, share_dir):
    paths = fill_home(tmp_path / "h", make_rows("alice", 41))
    push_user(paths, share_dir, "alice")
    before = snapshot(share_dir)
    with pytest.raises(CCMeterError) as refused:
        push_user(paths, share_dir, "root@host")
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("this machine publishes to the share as alice, not root@host")
    assert "ccmeter push --rename-to root@host" in message
    assert snapshot(share_dir) == before  # nothing written, nothing removed
    with pytest.raises(CCMeterError):
        db = store.connect(paths.db_file)
        try:
            share.push(db, paths, share_identity.ShareSettings(user="root@host", share=share_dir),
                       dry_run=True)
        finally:
            db.conn.close()


def test_a_push_that_names_no_user_publishes_under_the_kept_name(tmp_path, share_dir):
    paths = fill_home(tmp_path / "h", make_rows("alice", 42))
    push_user(paths, share_dir, "alice")
    cron = share_identity.ShareSettings(user="root@host", share=share_dir,
                                        user_source="default")  # login@host under cron
    db = store.connect(paths.db_file)
    try:
        result, _ = share.push(db, paths, cron)
    finally:
        db.conn.close()
    assert result.user == "alice" and result.removed == {}
    assert {p.parent.name for p in share_dir.rglob("part-*.jsonl")} == {"user=alice"}


def test_before_the_name_was_kept_the_share_says_who_the_machine_is(tmp_path, share_dir):
    """Machines that pushed before ccmeter kept the name: their files tell it."""
    paths = fill_home(tmp_path / "h", make_rows("alice", 43))
    push_user(paths, share_dir, "alice")
    (paths.data_dir / share_identity.IDENTITY_FILE).unlink()
    before = snapshot(share_dir)
    with pytest.raises(CCMeterError, match="as alice, not bob"):
        push_user(paths, share_dir, "bob")
    assert snapshot(share_dir) == before
    cron = share_identity.ShareSettings(user="root@host", share=share_dir, user_source="default")
    db = store.connect(paths.db_file)
    try:
        assert share.push(db, paths, cron)[0].user == "alice"
    finally:
        db.conn.close()


def test_switching_anonymize_is_a_change_of_name_too(tmp_path, share_dir):
    paths = fill_home(tmp_path / "h", make_rows("alice", 44))
    push_user(paths, share_dir, "alice")
    with pytest.raises(CCMeterError, match="--rename-to alice --anonymize"):
        push_user(paths, share_dir, "alice", anonymize=True, salt="s" * 20)
    moved = push_user(paths, share_dir, "alice", anonymize=True, salt="s" * 20, rename=True)
    assert moved.user.startswith("u-") and list(moved.removed) == ["alice"]


def test_a_damaged_kept_name_is_a_one_line_error(tmp_path, share_dir):
    paths = fill_home(tmp_path / "h", make_rows("alice", 45))
    push_user(paths, share_dir, "alice")
    (paths.data_dir / share_identity.IDENTITY_FILE).write_bytes(b"\xff{")
    with pytest.raises(CCMeterError, match="is damaged") as caught:
        push_user(paths, share_dir, "alice")
    assert "\n" not in str(caught.value)
