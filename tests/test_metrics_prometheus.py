"""A real Prometheus scrapes a real `ccmeter serve --metrics-port` while the stand-in API
serves calls through it and a second proxy sharing the database: PromQL's sums equal the
database's. The Grafana dashboard's every query runs on the same server and returns data.

Costs are chosen as binary fractions of a dollar (token counts that are multiples of 62,500,
or 625,000 at the $0.10 and $0.30 rates), so a float sum of them is exact and the totals
compare with ``==``: a priced call counted twice or missed changes a total by at least
$0.0625, the cheapest one here.
One project ("odd") has a cost that is no binary fraction: its series is compared with the
database's sum converted the one way every exporter converts (picodollars / 10**12).
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

from mitm import free_port, wait_for_port
from prometheus_client.parser import text_string_to_metric_families
from promserver import Prometheus
from standin import StandIn, error_reply, message_events, sse_reply

from ccmeter import config

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana" / "ccmeter-grafana.json"
UNIT = 62_500  # tokens: $rate/16 at a rate in $ per million tokens (x10 for $0.10, $0.30)

# (proxy, project, model, session, tokens) per call; tokens in UNITs unless "odd"
CALLS = [
    (0, "web", "claude-opus-4-8", "s1", {"input": 1, "output": 1}),
    (0, "web", "claude-opus-4-8", "s1", {"input": 2, "output": 1, "cache_read": 4}),
    (0, "web", "claude-sonnet-4-6", "s2", {"input": 2, "cache_write_5m": 1,
                                           "cache_write_1h": 1, "cache_read": 10, "output": 1}),
    (0, "web", "claude-unknown-9", "s2", {"input": 1, "output": 1}),  # unpriced
    (0, "web", "overloaded", "s2", {}),  # an upstream error (529)
    (1, "api", "claude-opus-4-8", "s3", {"input": 1, "output": 3}),
    (1, "api", "claude-haiku-4-5-20251001", "s3", {"input": 4, "cache_read": 10}),
    (0, "capped", "claude-opus-4-8", "s4", {"input": 2}),  # $0.625
    (1, "capped", "claude-opus-4-8", "s4", {"input": 2}),  # $1.25 spent
    (0, "capped", "claude-opus-4-8", "s4", {"input": 2}),  # refused: cap $1
    (1, "odd", "claude-opus-4-8", "s5", {"input": 1234, "output": 77, "raw": True}),
]
CONFIG = """
[caps]
notify = false
[caps.projects.capped]
daily = 1
"""


def answer(rec):
    body = rec.json or {}
    model = body.get("model")
    if model == "overloaded":
        return error_reply(529, "overloaded_error", "Overloaded")
    tokens = dict(body.get("metadata", {}).get("tokens", {}))
    scale = 1 if tokens.pop("raw", False) else UNIT
    n = {k: v * scale for k, v in tokens.items()}
    return sse_reply(message_events(
        model, input_tokens=n.get("input", 0), output_tokens=n.get("output", 0),
        cache_write_5m=n.get("cache_write_5m", 0), cache_write_1h=n.get("cache_write_1h", 0),
        cache_read=n.get("cache_read", 0)))


def post(port: int, project: str, model: str, session: str, tokens: dict) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = json.dumps({"model": model, "max_tokens": 100, "stream": True,
                       "metadata": {"tokens": tokens},
                       "messages": [{"role": "user", "content": "hi"}]})
    conn.request("POST", "/v1/messages", body=body, headers={
        "content-type": "application/json", "x-api-key": "sk-ant-api03-dummy",
        "x-claude-code-session-id": session, "x-ccmeter-project": project})
    reply = conn.getresponse()
    reply.read()
    conn.close()
    return reply.status


def serve(upstream: str, metrics_port: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccmeter.entry", "serve", "--reverse", "--upstream", upstream,
         "--port", str(port), "--metrics-port", str(metrics_port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_port(port, proc=proc)
    wait_for_port(metrics_port, proc=proc)
    return proc, port


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
        text = page.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def database_rows(db: Path) -> list[dict]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM api_calls")]
    finally:
        conn.close()


def settled(db: Path, n: int) -> list[dict]:
    deadline = time.monotonic() + 30
    while True:
        rows = database_rows(db) if db.exists() else []
        if len(rows) == n and all(r["status"] != "incomplete" for r in rows):
            return rows
        assert time.monotonic() < deadline, rows
        time.sleep(0.1)


def expected(rows: list[dict]) -> dict[str, dict[frozenset, float]]:
    """What PromQL must answer, from the rows alone (ccmeter's own code is not asked)."""
    cost: dict = defaultdict(int)
    tokens: dict = defaultdict(int)
    calls: dict = defaultdict(int)
    for r in rows:
        key = frozenset({"project": r["project"], "model": r["model"],
                         "provider": r["provider"], "kind": r["call_kind"]}.items())
        if r["cost_picousd"] is not None:
            cost[key] += r["cost_picousd"]
        for kind in ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output"):
            tokens[frozenset({("type", kind)})] += r[f"{kind}_tokens"]
        calls[frozenset({("status", r["status"])})] += 1
    return {
        "sum by (project, model, provider, kind) (ccmeter_cost_usd_total)":
            {k: v / 10**12 for k, v in cost.items()},
        "sum by (type) (ccmeter_tokens_total)": dict(tokens),
        "sum by (status) (ccmeter_calls_total)": dict(calls),
    }


def grafana_queries() -> list[tuple[str, str]]:
    """Every panel's PromQL, with Grafana's variables as Grafana would fill them in."""
    doc = json.loads(DASHBOARD.read_text())
    out = []
    for panel in doc["panels"]:
        for target in panel["targets"]:
            expr = (target["expr"].replace("$__rate_interval", "30s")
                    .replace("$__range", "1h").replace("$project", ".*"))
            assert "$" not in expr, expr
            out.append((panel["title"], expr))
    return out


def test_prometheus_sums_equal_the_database_and_the_dashboard_queries_run(residents, tmp_path):
    config.ensure_private_dir(residents.config_dir)
    residents.config_file.write_text(CONFIG)
    metrics_ports = [free_port(), free_port()]
    procs: list[subprocess.Popen] = []
    with StandIn() as standin:
        standin.default = answer
        try:
            for metrics_port in metrics_ports:
                procs.append(serve(standin.url, metrics_port)[0])
            ports = [int(re.search(r"on http://127\.0\.0\.1:(\d+)", p.stderr.readline())[1])
                     for p in procs]
            with Prometheus(tmp_path / "prometheus",
                            [f"127.0.0.1:{metrics_ports[0]}"]) as prometheus:
                statuses = []
                for n, (i, *rest) in enumerate(CALLS):
                    # the calls before it have landed: the other proxy's cap reads them
                    # from the database (a call's final row is written just after its
                    # answer ends; across proxies that window is the caps' documented
                    # overshoot, not what this test is about)
                    settled(residents.db_file, n)
                    statuses.append(post(ports[i], *rest))
                assert statuses == [200] * 4 + [529] + [200] * 4 + [429, 200]
                rows = settled(residents.db_file, len(CALLS))
                want = expected(rows)
                # the one exact money check: every summed cost is a binary fraction here
                binary = [r["cost_picousd"] for r in rows
                          if r["project"] != "odd" and r["cost_picousd"] is not None]
                assert all((Fraction(c, 10**12) * 1024).denominator == 1 for c in binary), [
                    (r["model"], r["cost_picousd"]) for r in rows]
                total = sum(binary) / 10**12
                assert total > 5  # the calls happened and were priced
                want['sum(ccmeter_cost_usd_total{project!="odd"})'] = {frozenset(): total}
                want["sum(ccmeter_refusals_total)"] = {frozenset(): 1.0}
                want["sum(ccmeter_unpriced_calls_total)"] = {
                    frozenset(): float(sum(r["cost_picousd"] is None for r in rows))}
                capped = frozenset({"cap": "daily", "scope": "project:capped",
                                    "window": "calendar"}.items())
                for name, figure in [("spend", 1.25), ("limit", 1.0), ("remaining", 0.0)]:
                    want[f"sum by (cap, scope, window) (ccmeter_cap_{name}_usd)"] = {
                        capped: figure}
                assert want["sum(ccmeter_unpriced_calls_total)"][frozenset()] >= 1
                got: dict = {}
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    got = {expr: prometheus.query(expr) for expr in want}
                    if got == want:
                        break
                    time.sleep(0.5)
                assert got == want
                # the odd project's cost is the database's sum, converted once
                odd = sum(r["cost_picousd"] for r in rows if r["project"] == "odd")
                assert odd % (10**12 // 16) != 0
                assert prometheus.query('sum(ccmeter_cost_usd_total{project="odd"})') == {
                    frozenset(): odd / 10**12}
                # the dashboard: each query parses, runs and returns data
                time.sleep(2)  # two samples at least for rate() over 30 s
                for title, expr in grafana_queries():
                    answer_doc = prometheus.api(expr)
                    assert answer_doc["status"] == "success", (title, expr, answer_doc)
                    assert answer_doc["data"]["result"], (title, expr)
            doctor = subprocess.run([sys.executable, "-m", "ccmeter.entry", "doctor"],
                                    capture_output=True, text=True, timeout=120)
            for metrics_port in metrics_ports:
                assert f"serves Prometheus metrics at http://127.0.0.1:{metrics_port}/metrics" \
                    in doctor.stdout.replace("\n     ", " "), doctor.stdout
            # both proxies share the database and each shows its totals: not one the other's
            first, second = scrape(metrics_ports[0]), scrape(metrics_ports[1])
            assert first == second
            # the textfile, written from the database without any proxy, says the same
            textfile = tmp_path / "ccmeter.prom"
            done = subprocess.run([sys.executable, "-m", "ccmeter.entry", "metrics",
                                   "--textfile", str(textfile)], capture_output=True,
                                  text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            written = {(s.name, frozenset(s.labels.items())): s.value
                       for family in text_string_to_metric_families(textfile.read_text())
                       for s in family.samples}
            assert written == first
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGINT)
            for proc in procs:
                proc.wait(20)


def test_the_proxy_a_run_starts_serves_the_configured_metrics_port(residents, work):
    """`[metrics] port` in the config: the resident proxy `ccmeter run` starts serves it, and
    its totals are the database's."""
    from test_resident import CLIENT
    from test_resident import answer as thousands

    metrics_port = free_port()
    config.ensure_private_dir(residents.config_dir)
    residents.config_file.write_text(f'[metrics]\nport = {metrics_port}\nuser = "alice"\n')
    with StandIn() as standin:
        standin.default = thousands
        done = subprocess.run(
            [sys.executable, "-m", "ccmeter.entry", "run", "--upstream", standin.url, "--",
             sys.executable, "-c", CLIENT, "s1:2", "s1:3"],
            capture_output=True, text=True, timeout=120, cwd=work)
        assert done.returncode == 0, done.stderr
        rows = settled(residents.db_file, 2)
        deadline = time.monotonic() + 10
        while True:
            found = scrape(metrics_port)
            calls = sum(v for (n, _), v in found.items() if n == "ccmeter_calls_total")
            if calls == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        cost = sum(v for (n, _), v in found.items() if n == "ccmeter_cost_usd_total")
        assert calls == 2
        assert cost == sum(r["cost_picousd"] for r in rows) / 10**12 == 0.025
        assert all(dict(labels).get("user") == "alice" for _, labels in found)
        assert {dict(labels).get("project") for n, labels in found
                if n == "ccmeter_cost_usd_total"} == {"work"}
