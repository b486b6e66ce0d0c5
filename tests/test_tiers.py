"""Team budgets on a folder share: the change log, the view of the others' spend, the caps
it makes, the check that adds this laptop's live spend, and the commands."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from ccmeter import config, share, share_identity, sharestore, store, team, tiers
from ccmeter.caps.guard import Guard
from ccmeter.caps.policy import Policy, checks_for, status_of
from ccmeter.config import CCMeterError, Paths

PICO = 10**12
NOW = datetime(2026, 11, 18, 15, 0).timestamp()  # a Wednesday


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ccmeter.entry", *args], capture_output=True,
                          text=True, timeout=120)


def laptop(root: Path, name: str, group: str | None, spend: dict[str, float],
           share_dir: Path, team_name: str = "platform") -> Paths:
    """A laptop that spent ``spend`` (day -> dollars) and pushed it to ``share_dir``."""
    paths = Paths(root / name, root / name)
    db = store.connect(paths.db_file)
    store.upsert_calls(db, [{
        "call_uid": f"{name}-{day}", "started_at": "x", "status": "ok",
        "started_ts": datetime.fromisoformat(day + "T12:00").timestamp(),
        "cost_picousd": int(usd * PICO), "model": "claude-opus-4-8", "updated_ts": 0.0,
    } for day, usd in spend.items()])
    share.push(db, paths, share_identity.ShareSettings(user=name, share=share_dir,
                                                       team=team_name, group=group))
    db.conn.close()
    return paths


@pytest.fixture
def share_dir(tmp_path: Path) -> Path:
    path = tmp_path / "share"
    path.mkdir()
    return path


def test_changes_fold_in_time_order_and_keep_who_and_when(share_dir):
    target = sharestore.open_share(share_dir)
    tiers.write_change(target, team="platform", by="ana", machine="m1", now=NOW,
                       budgets={"team.monthly": 5000 * PICO, "group.backend.monthly": 1500 * PICO})
    tiers.write_change(target, team="platform", by="ben", machine="m2", now=NOW + 60,
                       budgets={"group.backend.monthly": None, "team.daily": 300 * PICO})
    tiers.write_change(target, team="other", by="eve", machine="m3", now=NOW + 120,
                       budgets={"team.monthly": 1 * PICO})
    (share_dir / "ccmeter/budgets/change-zzz-broken.json").write_text("{not json")
    changes = tiers.read_changes(target, "platform")
    assert [(c["by"], c["at"]) for c in changes] == [
        ("ana", "2026-11-18T15:00:00.000000Z"), ("ben", "2026-11-18T15:01:00.000000Z")]
    assert tiers.fold(changes) == {"team.monthly": 5000 * PICO, "team.daily": 300 * PICO}


def test_two_changes_at_the_same_moment_are_both_kept(share_dir):
    target = sharestore.open_share(share_dir)
    barrier = threading.Barrier(8)

    def change(n: int) -> None:
        barrier.wait()
        tiers.write_change(target, team="t", by=f"u{n}", machine="m", now=NOW,
                           budgets={f"group.g{n}.daily": (n + 1) * PICO})

    threads = [threading.Thread(target=change, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(tiers.fold(tiers.read_changes(target, "t"))) == 8


def test_the_view_is_the_others_spend_by_tier_and_day(tmp_path, share_dir):
    me = laptop(tmp_path, "me", "backend", {"2026-11-18": 7}, share_dir)
    laptop(tmp_path, "ana", "backend", {"2026-11-18": 10, "2026-11-16": 20, "2026-11-02": 40,
                                        "2026-10-30": 80}, share_dir)
    laptop(tmp_path, "cyd", "frontend", {"2026-11-18": 1}, share_dir)
    laptop(tmp_path, "out", "backend", {"2026-11-18": 1000}, share_dir, team_name="other")
    target = sharestore.open_share(share_dir)
    tiers.write_change(target, team="platform", by="me", machine="m", now=NOW, budgets={
        "team.monthly": 100 * PICO, "group.backend.daily": 12 * PICO,
        "group.backend.weekly": 50 * PICO, "group.frontend.daily": 1 * PICO})
    view = tiers.build_view(target, team="platform", group="backend",
                            machine=share_identity.machine_id(me), now=NOW)
    assert view["others"]["group"] == {"2026-11-18": 10 * PICO, "2026-11-16": 20 * PICO,
                                       "2026-11-02": 40 * PICO}  # not me, not October
    caps = {(c.scope, c.name): c.others_picousd for c in tiers.tier_caps(view, NOW)}
    assert caps == {  # frontend's budget is not this laptop's
        ("team:platform", "monthly"): 71 * PICO,
        ("group:platform/backend", "daily"): 10 * PICO,
        ("group:platform/backend", "weekly"): 30 * PICO,  # the week began Monday the 16th
    }
    # the view survives on disk for the next start, for this share, team and group only
    tiers.save_view(me.data_dir, view)
    assert tiers.load_view(me.data_dir, share=str(share_dir), team="platform",
                           group="backend") == json.loads(json.dumps(view))
    assert tiers.load_view(me.data_dir, share=str(share_dir), team="platform",
                           group="frontend") is None


def test_the_check_adds_this_laptops_live_spend_and_names_the_tier(tmp_path, share_dir):
    me = laptop(tmp_path, "me", "backend", {}, share_dir)
    view = {"team": "platform", "group": "backend", "refreshed_at": time.time(),
            "budgets": {"group.backend.daily": 10 * PICO},
            "others": {"team": {}, "group": {time.strftime("%Y-%m-%d"): 6 * PICO}}}
    policy = Policy(caps=tiers.tier_caps(view, time.time()), notify=False)
    assert not policy.needs_request_details  # a team budget needs no request body
    guard = Guard(me.db_file, notify=lambda _text: None)
    try:
        def check(uid: str):
            return guard.check(policy, call_uid=uid, project=None, session_id=None,
                               model=None)

        assert check("a").allowed
        db = store.connect(me.db_file)
        store.upsert_calls(db, [{"call_uid": "live", "started_at": "x", "status": "ok",
                                 "started_ts": time.time() - 1, "cost_picousd": 4 * PICO,
                                 "model": "claude-opus-4-8", "updated_ts": 0.0}])
        db.conn.close()
        decision = check("b")
        assert not decision.allowed
        assert decision.message.startswith(
            "ccmeter: group backend daily budget $10.00 reached ($10.00 spent); resets 00:00")
        assert decision.message.endswith("Raise it with: ccmeter caps set --group-daily N")
    finally:
        guard.close()
    [check_] = checks_for(policy, time.time())
    assert status_of(check_, 1 * PICO, policy).spent_picousd == 7 * PICO


def test_rows_carry_team_and_group_and_report_groups_by_them(tmp_path, share_dir):
    laptop(tmp_path, "ana", "backend", {"2026-11-18": 10}, share_dir)
    laptop(tmp_path, "cyd", "frontend", {"2026-11-18": 1}, share_dir)
    solo = Paths(tmp_path / "solo", tmp_path / "solo")  # no team: rows as before
    db = store.connect(solo.db_file)
    store.upsert_calls(db, [{"call_uid": "s", "started_at": "x", "status": "ok",
                             "started_ts": NOW, "cost_picousd": PICO, "updated_ts": 0.0}])
    share.push(db, solo, share_identity.ShareSettings(user="solo", share=share_dir))
    db.conn.close()
    solo_file = next(share_dir.glob("ccmeter/v1/*/user=solo/*.jsonl")).read_text()
    assert '"team"' not in solo_file and list(json.loads(solo_file)) == list(share.ROW_FIELDS)
    data = team.read_share(share_dir)
    groups = {g["group"]: g["cost_picousd"] for g in team.aggregate(data.rows, ["group"])}
    assert groups == {"backend": 10 * PICO, "frontend": 1 * PICO, None: PICO}


def test_commands_join_a_team_set_budgets_and_show_them(tmp_path, share_dir, user_dirs):
    out = cli("caps", "set", "--team-monthly", "5000")
    assert out.returncode == 2
    assert out.stderr.strip() == ("ccmeter: team budgets need a team share: ccmeter team set "
                                  "--share URL --team NAME [--group NAME]")
    out = cli("team", "set", "--share", str(share_dir), "--team", "platform", "--group",
              "backend", "--push-interval", "30s", "--refresh-interval", "2m")
    assert out.returncode == 0, out.stderr
    assert "push every 30 s" in out.stdout and "every 120 s" in out.stdout
    cfg = config.load_config(user_dirs)
    assert cfg["share"] == {"path": str(share_dir), "team": "platform", "group": "backend",
                            "push_interval": "30s", "refresh_interval": "2m"}
    out = cli("caps", "set", "--team-monthly", "5000", "--group-monthly", "1500")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("team platform budgets: team monthly $5,000.00, group "
                                 "backend monthly $1,500.00")
    assert cli("caps", "set", "--group-monthly", "off").returncode == 0
    out = cli("team", "budgets", "--format", "json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert [b["budget"] for b in doc["budgets"]] == ["team platform monthly budget"]
    assert [c["set"] for c in doc["changes"]] == [
        {"group.backend.monthly": "$1,500.00", "team.monthly": "$5,000.00"},
        {"group.backend.monthly": None}]
    out = cli("caps", "set", "--team-monthly", "lots")
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    out = cli("team", "set", "--push-interval", "soon")
    assert out.returncode == 2 and "push_interval" in out.stderr
    out = cli("caps", "set", "--team-daily", "5", "--daily", "3")
    assert out.returncode == 2 and "command of their own" in out.stderr


def test_bad_team_names_are_refused():
    with pytest.raises(CCMeterError, match="team must be a short name"):
        share_identity.resolve_settings({"share": {"team": "a/b"}}, {})


def test_caps_shows_the_team_budgets_from_the_last_view_without_the_share(tmp_path, user_dirs):
    config.save_config({"share": {"path": "s3://unreachable-bucket/x", "team": "platform",
                                  "group": "backend"}}, user_dirs)
    db = store.connect(user_dirs.db_file)  # this laptop spent $2 just now
    store.upsert_calls(db, [{"call_uid": "c", "started_at": "x", "status": "ok",
                             "started_ts": time.time() - 5, "cost_picousd": 2 * PICO,
                             "model": "claude-opus-4-8", "updated_ts": 0.0}])
    db.conn.close()
    tiers.save_view(user_dirs.data_dir, {
        "version": 1, "share": "s3://unreachable-bucket/x", "team": "platform",
        "group": "backend", "refreshed_at": time.time(),
        "budgets": {"team.monthly": 100 * PICO}, "others": {"team": {
            time.strftime("%Y-%m-%d"): 30 * PICO}, "group": {}}})
    out = cli("caps", "--format", "json")
    assert out.returncode == 0, out.stderr
    [row] = json.loads(out.stdout)["rows"]
    assert (row["cap"], row["scope"], row["spent_usd"]) == ("monthly", "team:platform",
                                                            "32.000000000000")


def test_anonymized_pushes_and_budget_changes_carry_no_name(tmp_path, share_dir, user_dirs):
    salt = "a long team secret"
    config.save_config({"share": {"path": str(share_dir), "team": "platform", "user": "ana",
                                  "salt": salt, "anonymize": True}}, user_dirs)
    tiers.change_budgets(config.load_config(user_dirs), user_dirs, {"team-daily": "9"})
    public = share_identity.ShareSettings(user="ana", anonymize=True, salt=salt).public_user()
    [change] = tiers.read_changes(sharestore.open_share(share_dir), "platform")
    assert change["by"] == public and public.startswith("u-")
    text = "".join(p.read_text() for p in share_dir.rglob("*") if p.is_file())
    assert "ana" not in text



def test_a_refresh_fetches_only_what_changed(tmp_path, share_dir):
    me = laptop(tmp_path, "me", "backend", {}, share_dir)
    ana = laptop(tmp_path, "ana", "backend", {"2026-11-18": 10}, share_dir)
    laptop(tmp_path, "ben", "backend", {"2026-11-17": 5}, share_dir)
    target = sharestore.open_share(share_dir)
    tiers.write_change(target, team="platform", by="x", machine="m", now=NOW,
                       budgets={"team.monthly": 100 * PICO})
    reads: list[str] = []
    real_read = target.read
    target.read = lambda key: reads.append(key) or real_read(key)  # type: ignore[method-assign]
    cache: dict = {}
    machine = share_identity.machine_id(me)
    first = tiers.build_view(target, team="platform", group="backend", machine=machine,
                             now=NOW, cache=cache)
    assert len(reads) == 3  # the budget change and two part files (not mine)
    reads.clear()
    assert tiers.build_view(target, team="platform", group="backend", machine=machine,
                            now=NOW, cache=cache)["others"] == first["others"]
    assert reads == []
    time.sleep(0.01)
    db = store.connect(ana.db_file)
    store.upsert_calls(db, [{"call_uid": "more", "started_at": "x", "status": "ok",
                             "started_ts": NOW, "cost_picousd": PICO,
                             "model": "claude-opus-4-8", "updated_ts": 0.0}])
    share.push(db, ana, share_identity.ShareSettings(user="ana", share=share_dir,
                                                     team="platform", group="backend"))
    db.conn.close()
    view = tiers.build_view(target, team="platform", group="backend", machine=machine,
                            now=NOW, cache=cache)
    assert [k.rsplit("/", 2)[-2] for k in reads] == ["user=ana"]
    assert view["others"]["team"]["2026-11-18"] == 11 * PICO
