"""Team and group budgets enforced on each laptop from a shared bucket.

Several simulated laptops (each its own HOME, hence its own config, database and machine
id, each its own real ``mitmdump -s addons/ccmeter.py``) push to and read from a real S3 API
(moto's server on loopback) in front of the stand-in Anthropic API, and spend concurrently
against one group budget. The overshoot is measured against the documented bound
(docs/team-budgets.md): overshoot <= team spend rate x (P + R + L + d) + calls in flight.
"""

from __future__ import annotations

import http.client
import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto")

from capsproxy import request_body
from motoserver import moto_server, s3_env
from standin import StandIn
from userproxy import UserProxy

from ccmeter import config, sharestore, tiers
from ccmeter.money import usd_text

P = R = 0.5  # push and refresh intervals, seconds
s3 = pytest.fixture(scope="module")(moto_server)


@pytest.fixture
def api():
    with StandIn() as server:
        yield server


class Laptop:
    """One teammate's machine: its own HOME and its own proxy."""

    def __init__(self, root: Path, name: str, share: str, endpoint: str, api_url: str,
                 monkeypatch, *, group: str, on_error: str = "allow") -> None:
        self.name = name
        self.home = root / name
        self.paths = config.Paths(self.home / ".config" / "ccmeter",
                                  self.home / ".local" / "share" / "ccmeter")
        self.paths.config_dir.mkdir(parents=True)
        self.paths.config_file.write_text(
            f'[share]\npath = "{share}"\nuser = "{name}"\nteam = "platform"\n'
            f'group = "{group}"\npush_interval = {P}\nrefresh_interval = {R}\n\n'
            f'[caps]\nnotify = false\non_error = "{on_error}"\n')
        with monkeypatch.context() as m:
            m.setenv("HOME", str(self.home))
            for key, value in s3_env(endpoint).items():
                m.setenv(key, value)
            self.proxy = UserProxy(api_url, self.home)

    def post(self, session: str = "s") -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.proxy.port, timeout=30)
        try:
            conn.request("POST", "/v1/messages?beta=true",
                         body=json.dumps(request_body(session=session)),
                         headers={"content-type": "application/json",
                                  "x-api-key": "sk-ant-test"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def spent(self) -> int:
        """Picodollars this laptop actually sent upstream (its own database, all of it)."""
        conn = sqlite3.connect(self.paths.db_file, timeout=10)
        try:
            (total,) = conn.execute("SELECT COALESCE(SUM(cost_picousd), 0) FROM api_calls "
                                    "WHERE status != 'blocked'").fetchone()
        finally:
            conn.close()
        return int(total)

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.home.glob("mitmdump-*"))

    def status(self) -> list[dict]:
        folder = self.paths.data_dir / "proxies"
        return [json.loads(p.read_text()) for p in folder.glob("*.json")] if folder.is_dir() \
            else []


def wait_until(predicate, timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def set_budget(laptop: Laptop, **budgets: int | None) -> None:
    """As ``ccmeter caps set --group-daily N`` on that laptop."""
    cfg = config.load_config(laptop.paths)
    given = {k.replace("_", "-"): "off" if v is None else usd_text(v)
             for k, v in budgets.items()}
    tiers.change_budgets(cfg, laptop.paths, given)


def test_laptops_enforce_a_group_budget_together_within_the_bound(tmp_path, s3, api,
                                                                   monkeypatch):
    for key, value in s3_env(s3.endpoint).items():
        monkeypatch.setenv(key, value)
    share = f"s3://{s3.bucket()}/ccmeter"
    make = lambda name, group: Laptop(tmp_path, name, share, s3.endpoint, api.url,  # noqa: E731
                                      monkeypatch, group=group)
    ana, ben, cyd = make("ana", "backend"), make("ben", "backend"), make("cyd", "frontend")
    try:
        assert ana.post()[0] == 200  # one call to learn what a call costs
        wait_until(lambda: ana.paths.db_file.exists() and ana.spent() > 0, what="a cost")
        cost = ana.spent()
        budget = 40 * cost
        set_budget(ana, group_daily=budget, team_daily=1000 * cost)
        for laptop in (ana, ben, cyd):  # each proxy has read the budget from the bucket
            wait_until(lambda lp=laptop: _has_budget(lp), what=f"{laptop.name}'s view")

        refused: dict[str, bytes] = {}
        calls = {"ana": 0, "ben": 0}
        started = time.monotonic()

        def spend(laptop: Laptop) -> None:
            while time.monotonic() - started < 60:
                status, body = laptop.post(session=laptop.name)
                if status == 429:
                    refused[laptop.name] = body
                    return
                assert status == 200, body
                calls[laptop.name] += 1
                time.sleep(0.02)

        threads = [threading.Thread(target=spend, args=(lp,)) for lp in (ana, ben)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        assert set(refused) == {"ana", "ben"}, (ana.log()[-3000:], ben.log()[-3000:])
        for body in refused.values():
            message = json.loads(body)["error"]["message"]
            assert message.startswith("ccmeter: group backend daily budget"), message
            assert "reached" in message and "ccmeter caps set --group-daily N" in message
        # the other group's laptop is not held back by backend's budget
        assert cyd.post(session="cyd")[0] == 200

        group_spent = ana.spent() + ben.spent()
        overshoot = group_spent - budget
        rate = group_spent / elapsed  # the group's spend per second while it spent
        call_s = elapsed / max(1, sum(calls.values()) / 2)  # one laptop's time per call
        bound = rate * (P + R + 1.0 + call_s) + 2 * cost  # L = 1 s of push + read latency
        print(f"group budget {budget} pico ({budget // cost} calls), spent {group_spent} "
              f"({group_spent / cost:.1f} calls) in {elapsed:.2f} s: overshoot "
              f"{overshoot / cost:.1f} calls, bound {bound / cost:.1f} calls")
        assert group_spent >= budget  # the group did reach its budget
        assert overshoot <= bound

        # a team budget below what the team spent stops every laptop, naming the team
        set_budget(cyd, team_daily=group_spent)
        wait_until(lambda: cyd.post(session="cyd")[0] == 429, what="the team budget")
        status, body = cyd.post(session="cyd")
        assert status == 429
        assert json.loads(body)["error"]["message"].startswith(
            "ccmeter: team platform daily budget")
    finally:
        for laptop in (ana, ben, cyd):
            laptop.proxy.stop()
    # what went to the bucket: only the summaries, with team and group, no prompts or keys
    target = sharestore.open_share(share)
    keys = target.keys("ccmeter/v1")
    assert len(keys) == 3
    text = b"".join(target.read(k) or b"" for k in keys).decode()
    assert '"team":"platform"' in text and '"group":"backend"' in text
    assert "sk-ant" not in text and "hi" not in text.replace("\"", " ").split()


def _has_budget(laptop: Laptop) -> bool:
    view = tiers.load_view(laptop.paths.data_dir)
    return bool(view and view["budgets"].get("group.backend.daily"))


def test_an_unreachable_share_falls_back_as_on_error_says(tmp_path, s3, api, monkeypatch):
    dead = "http://127.0.0.1:9"  # nothing listens there
    allow = Laptop(tmp_path, "allow", "s3://gone/ccmeter", dead, api.url, monkeypatch,
                   group="g")
    block = Laptop(tmp_path, "block", "s3://gone/ccmeter", dead, api.url, monkeypatch,
                   group="g", on_error="block")
    try:
        wait_until(lambda: any(d.get("share_error") for d in allow.status()), timeout=60,
                   what="the share error in the status file")
        wait_until(lambda: any(d.get("share_error") for d in block.status()), timeout=60,
                   what="the share error in the status file")
        assert allow.post()[0] == 200  # personal caps only
        status, body = block.post()
        assert status == 429
        message = json.loads(body)["error"]["message"]
        assert message.startswith("ccmeter: team budgets cannot be checked (team share "
                                  "s3://gone/ccmeter unreachable"), message
        assert "team share s3://gone/ccmeter unreachable" in allow.log()
    finally:
        allow.proxy.stop()
        block.proxy.stop()


def test_a_folder_share_works_the_same(tmp_path, api, monkeypatch):
    share_dir = tmp_path / "share"
    share_dir.mkdir()
    make = lambda name: Laptop(tmp_path, name, str(share_dir), "http://127.0.0.1:9",  # noqa: E731
                               api.url, monkeypatch, group="backend")
    ana, ben = make("ana"), make("ben")
    try:
        assert ana.post()[0] == 200
        wait_until(lambda: ana.paths.db_file.exists() and ana.spent() > 0, what="a cost")
        cost = ana.spent()
        set_budget(ben, group_daily=cost * 3 // 2)

        def sees_ana(laptop: Laptop) -> bool:
            view = tiers.load_view(laptop.paths.data_dir) or {}
            return _has_budget(laptop) and sum(view["others"]["group"].values()) == cost

        wait_until(lambda: sees_ana(ben), what="ben's view of ana's spend")
        assert ben.post()[0] == 200  # 0 of his own + ana's 1 call: under 1.5 calls
        status, body = ben.post()
        assert status == 429
        assert json.loads(body)["error"]["message"].startswith(
            "ccmeter: group backend daily budget")
        wait_until(lambda: ana.post()[0] == 429, what="ana to see ben's call")
    finally:
        ana.proxy.stop()
        ben.proxy.stop()
