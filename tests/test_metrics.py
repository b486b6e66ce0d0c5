"""The figures ccmeter exports (ccmeter.metrics): sums from the database, which calls count,
the Prometheus families, the textfile and the `ccmeter metrics` command."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ccmeter import config, store
from ccmeter.metrics import prom
from ccmeter.metrics.snapshot import Reader, read, usd

NOW = time.time()


def row(uid: str, **extra) -> dict:
    base = {"call_uid": uid, "started_at": "2026-11-27T09:00:00.000Z", "started_ts": NOW - 3600,
            "updated_ts": NOW - 3600, "status": "ok", "provider": "anthropic",
            "project": "shop", "model": "claude-opus-4-8", "call_kind": "main",
            "session_id": "s1", "input_tokens": 0, "cost_picousd": 0}
    base.update(extra)
    return base


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of an exposition: (name, its labels) -> value."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict, name: str, **labels: str) -> float:
    matching = [v for (n, ls), v in found.items()
                if n == name and set(labels.items()) <= set(ls)]
    return sum(matching)


@pytest.fixture
def db(tmp_path):
    conn = store.connect(tmp_path / "m.db")
    yield conn
    conn.conn.close()


def test_sums_are_exact_per_label_set_and_money_is_one_division(db):
    store.upsert_calls(db, [
        row("a", input_tokens=1000, output_tokens=7, cache_write_5m_tokens=3,
            cache_write_1h_tokens=4, cache_read_tokens=5, cost_picousd=5_000_000_001),
        row("b", input_tokens=2, cost_picousd=3_000_000_000_007),
        row("c", model="claude-sonnet-4-6", cost_picousd=1),
        row("d", model="mystery-1", cost_picousd=None, input_tokens=9),
        row("e", status="upstream_error", cost_picousd=None, http_status=529,
            error_type="overloaded_error"),
    ])
    text = prom.exposition(Reader(Path(db.conn.execute("PRAGMA database_list")
                                       .fetchone()[2]))).decode()
    found = samples(text)
    opus = {"project": "shop", "model": "claude-opus-4-8", "provider": "anthropic",
            "kind": "main"}
    assert value(found, "ccmeter_cost_usd_total", **opus) == usd(3_005_000_000_008)
    assert usd(3_005_000_000_008) == 3_005_000_000_008 / 10**12
    assert value(found, "ccmeter_cost_usd_total", model="claude-sonnet-4-6") == 1e-12
    assert value(found, "ccmeter_tokens_total", type="input", **opus) == 1002
    for kind, n in [("output", 7), ("cache_write_5m", 3), ("cache_write_1h", 4),
                    ("cache_read", 5)]:
        assert value(found, "ccmeter_tokens_total", type=kind, **opus) == n
    assert value(found, "ccmeter_calls_total", status="ok", **opus) == 2
    assert value(found, "ccmeter_calls_total", status="upstream_error") == 1
    # an unpriced call is counted as such, never as $0
    assert value(found, "ccmeter_unpriced_calls_total", model="mystery-1") == 1
    assert ("ccmeter_cost_usd_total", frozenset({**opus, "model": "mystery-1"}.items())) \
        not in found
    assert value(found, "ccmeter_database_up") == 1


def test_a_call_in_flight_and_a_session_without_its_project_yet_wait(db):
    """Counters only go up: a call is counted once its row is final (never first as
    `incomplete`, then as `ok`), a session's early project-less call once its project had
    time to be filled in (never first under project "", then under its project)."""
    store.upsert_calls(db, [
        row("running", status="incomplete", error_type=None, updated_ts=NOW - 5),
        row("cut", status="incomplete", error_type="stream_cut", updated_ts=NOW - 5),
        row("abandoned", status="incomplete", error_type=None, updated_ts=NOW - 7200),
        row("early", project=None, started_ts=NOW - 10, updated_ts=NOW - 10),
        row("old-early", project=None, started_ts=NOW - 900, updated_ts=NOW - 900),
        row("no-session", project=None, session_id=None, started_ts=NOW - 10),
    ])
    rows = store.call_totals(db, NOW)
    uids_counted = sum(r[6] for r in rows)
    assert uids_counted == 4  # cut, abandoned (its proxy died), old-early, no-session
    statuses: dict = {}
    for r in rows:
        statuses[(r[0], r[4])] = statuses.get((r[0], r[4]), 0) + r[6]
    assert statuses == {("shop", "incomplete"): 2, ("", "ok"): 2}


def test_refusals_by_reason_and_cap_figures_from_the_caps_code(db, tmp_path):
    store.upsert_calls(db, [
        row("spent", cost_picousd=600_000_000_000, started_ts=NOW - 60),
        row("r1", status="blocked", error_type="cap_reached", cost_picousd=0),
        row("r2", status="blocked", error_type="cap_reached", cost_picousd=0),
        row("r3", status="blocked", error_type="loop", cost_picousd=0),
    ])
    cfg = {"caps": {"daily": 10, "notify": False, "projects": {"shop": {"daily": "0.5"}}},
           "metrics": {"user": "alice"}}
    snap = read(db, cfg, NOW)
    from ccmeter.caps.guard import cap_statuses

    expected = {(s.name, s.scope): (s.spent_picousd, s.limit_picousd)
                for s in cap_statuses(db, cfg, NOW)}
    assert {(c.cap, c.scope): (c.spent_picousd, c.limit_picousd) for c in snap.caps} == expected
    found = {}
    for family in prom.families(snap):
        for s in family.samples:
            found[(s.name, frozenset(s.labels.items()))] = s.value
    assert value(found, "ccmeter_refusals_total", reason="cap_reached") == 2
    assert value(found, "ccmeter_refusals_total", reason="loop") == 1
    assert value(found, "ccmeter_unpriced_calls_total") == 0  # a refused call is not unpriced
    shop = {"cap": "daily", "scope": "project:shop", "user": "alice"}
    assert value(found, "ccmeter_cap_spend_usd", **shop) == 0.6
    assert value(found, "ccmeter_cap_limit_usd", **shop) == 0.5
    assert value(found, "ccmeter_cap_remaining_usd", **shop) == 0
    assert value(found, "ccmeter_cap_remaining_usd", cap="daily", scope="global") == 9.4
    assert all(dict(labels).get("user") == "alice" for _, labels in found)


def test_a_database_that_cannot_be_read_says_so(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a database" * 100)
    found = samples(prom.exposition(Reader(bad)).decode())
    assert value(found, "ccmeter_database_up") == 0
    assert not [n for n, _ in found if n.startswith("ccmeter_cost")]


def test_one_read_serves_every_scrape_within_a_second(db, tmp_path, monkeypatch):
    reader = Reader(tmp_path / "m.db", max_age_s=1.0)
    first = reader.snapshot()
    store.upsert_calls(db, [row("later")])
    assert reader.snapshot() is first
    reader._stamp -= 1.1
    assert reader.snapshot() is not first
    assert sum(g.calls for g in reader.snapshot().groups) == 1


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ccmeter.entry", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def test_the_textfile_is_written_whole_from_the_database_without_a_proxy(user_home, tmp_path):
    where = config.paths()
    config.ensure_private_dir(where.data_dir)
    conn = store.connect(where.db_file)
    store.upsert_calls(conn, [row("a", input_tokens=12, cost_picousd=123_456_789)])
    conn.conn.close()
    folder = tmp_path / "textfile"
    folder.mkdir()
    target = folder / "ccmeter.prom"
    target.write_text("old\n")
    result = cli("metrics", "--textfile", str(target))
    assert result.returncode == 0, result.stderr
    assert os.listdir(folder) == ["ccmeter.prom"]  # no temporary file left behind
    found = samples(target.read_text())
    assert value(found, "ccmeter_cost_usd_total", project="shop") == 123_456_789 / 10**12
    assert value(found, "ccmeter_tokens_total", type="input") == 12
    printed = cli("metrics")
    assert printed.returncode == 0 and samples(printed.stdout) == found


@pytest.mark.parametrize(("args", "error"), [
    (["--textfile", "/tmp/ccmeter-metrics.txt"], "ending in .prom"),
    (["--textfile", "/nonexistent-folder/c.prom"], "is not a folder"),
])
def test_metrics_errors_are_one_line(user_home, args, error):
    result = cli("metrics", *args)
    assert result.returncode == 2
    assert error in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_metrics_table_is_checked(user_home):
    where = config.paths()
    config.ensure_private_dir(where.config_dir)
    where.config_file.write_text("[metrics]\nport = 99999\n")
    result = cli("serve", "--port", "1")
    assert result.returncode == 2
    assert "[metrics] port must be a number from 1 to 65535" in result.stderr


def test_the_endpoint_is_on_loopback_and_a_taken_port_is_told(user_home, tmp_path, caplog):
    import socket

    from ccmeter import proxy

    where = config.paths()
    settings = proxy.ProxySettings(paths=where, metrics_port=None)
    assert proxy.start_metrics(settings) is None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        from_config = proxy.ProxySettings(paths=where, metrics_port=port)
        assert proxy.start_metrics(from_config) is None  # the proxy goes on without
        assert f"127.0.0.1:{port} is taken" in caplog.text
        asked = proxy.ProxySettings(paths=where, metrics_port=port, metrics_required=True)
        with pytest.raises(config.CCMeterError, match="pick another --metrics-port"):
            proxy.start_metrics(asked)
    server = proxy.start_metrics(proxy.ProxySettings(paths=where, metrics_port=port))
    try:
        assert server.host == "127.0.0.1" and server.url == f"http://127.0.0.1:{port}/metrics"
        import urllib.request

        with urllib.request.urlopen(server.url, timeout=10) as page:
            assert b"ccmeter_database_up 1.0" in page.read()
    finally:
        server.stop()


def test_a_long_lived_reader_keeps_old_sums_and_adds_only_new_calls(db, tmp_path,
                                                                      monkeypatch):
    """The reader's kept base (calls older than two hours) plus the rest equals one full
    sum, as time moves the base's edge and when a re-pricing changes old rows."""
    from ccmeter.metrics import snapshot

    def full() -> dict:
        return {(*g.labels, g.status, g.reason): g for g in read(db, {}, clock[0]).groups}

    clock = [NOW]
    monkeypatch.setattr(snapshot.time, "time", lambda: clock[0])
    store.upsert_calls(db, [row(f"old{i}", started_ts=NOW - 86400 + i * 600, input_tokens=i,
                                cost_picousd=i * 1000, model=f"m{i % 3}") for i in range(100)])
    reader = Reader(tmp_path / "m.db", max_age_s=0)
    mine = {(*g.labels, g.status, g.reason): g for g in reader.snapshot().groups}
    assert mine == full() and reader._base
    for step in range(1, 30):  # four hours of calls, the base's edge moving every 10 minutes
        clock[0] = NOW + step * 500
        store.upsert_calls(db, [row(f"new{step}", started_ts=clock[0] - 1, input_tokens=7,
                                    cost_picousd=None if step % 5 == 0 else 11)])
        mine = {(*g.labels, g.status, g.reason): g for g in reader.snapshot().groups}
        assert mine == full()
    edge = reader._base_edge
    assert edge is not None and edge > NOW - 7200
    db.execute("INSERT INTO cost_history (call_uid, repriced_ts, old_cost_picousd) "
               "VALUES ('old1', 1, 1000)")
    db.execute("UPDATE api_calls SET cost_picousd = 5 WHERE call_uid = 'old1'")
    mine = {(*g.labels, g.status, g.reason): g for g in reader.snapshot().groups}
    assert mine == full()


def test_the_grafana_dashboard_is_an_importable_document():
    """What Grafana's import needs: the data source as an input every panel and query uses,
    unique panel ids on a 24-column grid, queries only over metrics ccmeter exports (the
    Prometheus test runs each one)."""
    import json
    import re

    doc = json.loads((Path(__file__).resolve().parent.parent / "docs" / "grafana"
                      / "ccmeter-grafana.json").read_text())
    assert [i["name"] for i in doc["__inputs"]] == ["DS_PROMETHEUS"]
    source = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)) >= 10
    exported = {f.name for f in prom.families(read(store.connect(":memory:"), {}))}
    for panel in doc["panels"]:
        assert panel["datasource"] == source
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        for target in panel["targets"]:
            assert target["datasource"] == source and target["refId"]
            names = set(re.findall(r"\b(ccmeter_[a-z_]+)", target["expr"]))
            assert names and {n.removesuffix("_total") for n in names} <= exported, names
    assert [v["name"] for v in doc["templating"]["list"]] == ["project"]
