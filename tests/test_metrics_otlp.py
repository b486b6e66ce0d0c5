"""OTLP metrics: `ccmeter run` with the standard OTEL_* variables starts a proxy that pushes
to a receiver decoding the official OpenTelemetry protobufs; the values are the database's,
under Claude Code's own metric names and attributes and ccmeter's. A collector that never
answers costs the calls nothing and the proxy's stop at most a bounded wait.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict

from mitm import free_port, wait_for_port
from otlpreceiver import Receiver
from standin import StandIn
from test_resident import CLIENT, answer, rows, status_files

from ccmeter import config, desk

CONFIG = """
[caps]
daily = "0.012"
notify = false
"""


def otel_env(endpoint: str, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_METRIC_EXPORT_INTERVAL="300",
               OTEL_RESOURCE_ATTRIBUTES="team=platform,deployment.environment=test", **more)
    return env


def run(*args: str, upstream: str, env: dict, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ccmeter.entry", "run", "--upstream", upstream, "--",
         sys.executable, "-c", CLIENT, *args],
        capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


def test_a_run_pushes_the_databases_figures_under_claude_codes_names(residents, work):
    config.ensure_private_dir(residents.config_dir)
    residents.config_file.write_text(CONFIG)
    receiver = Receiver()
    try:
        with StandIn() as standin:
            standin.default = answer
            env = otel_env(receiver.url)
            first = run("s1:1", "s1:1", upstream=standin.url, env=env, cwd=work)
            assert first.returncode == 0, first.stderr
            assert first.stdout.split() == ["200", "200"]
            second = run("s2:1", "s2:1", upstream=standin.url, env=env, cwd=work)
            assert second.stdout.split() == ["200", "429"], second.stderr  # the daily cap
            [doc] = status_files(residents)  # the second run joined the first one's proxy
            assert doc["serves"]["otlp"] == receiver.url + "/v1/metrics"
            calls = rows(residents.db_file)
            assert len(calls) == 4
            cost: dict = defaultdict(int)
            tokens: dict = defaultdict(int)
            for r in calls:
                if r["status"] != "blocked":
                    cost[frozenset({"model": r["model"], "session.id": r["session_id"],
                                    "project": r["project"]}.items())] += r["cost_picousd"]
                for kind, column in [("input", "input"), ("output", "output"),
                                     ("cacheRead", "cache_read")]:
                    if r[f"{column}_tokens"]:
                        key = frozenset({"type": kind, "model": r["model"], "project": "work",
                                         "session.id": r["session_id"]}.items())
                        tokens[key] += r[f"{column}_tokens"]
            want_cost = {k: v / 10**12 for k, v in cost.items()}
            assert sum(want_cost.values()) == 0.015
            daily = frozenset({"cap": "daily", "scope": "global", "window": "calendar"}.items())
            receiver.wait(lambda: receiver.latest().get("claude_code.cost.usage") == want_cost
                          and receiver.latest().get("ccmeter.refusals")
                          and receiver.latest().get("ccmeter.cap.spend", {}).get(daily) == 0.015)
            latest = receiver.latest()
            assert {k: v for k, v in latest["claude_code.token.usage"].items() if v} == tokens
            assert latest["ccmeter.refusals"] == {
                frozenset({"project": "work", "reason": "cap_reached"}.items()): 1.0}
            by_status: dict = defaultdict(float)
            for key, n in latest["ccmeter.calls"].items():
                by_status[dict(key)["status"]] += n
            assert by_status == {"ok": 3.0, "blocked": 1.0}
            assert latest["ccmeter.cap.limit"][daily] == 0.012
            assert latest["ccmeter.cap.remaining"][daily] == 0.0
            # as Claude Code's: counters (monotonic sums) in USD and tokens
            metric = receiver.metric("claude_code.cost.usage")
            assert metric.unit == "USD" and metric.sum.is_monotonic
            assert receiver.metric("claude_code.token.usage").unit == "tokens"
            resource = receiver.resources()[-1]
            assert resource["team"] == "platform"
            assert resource["deployment.environment"] == "test"
            assert resource["service.name"] == "ccmeter" and resource["service.instance.id"]
            assert receiver.content_types[-1] == "application/x-protobuf"
            # a run without OTEL variables joins it too; one naming another endpoint does not
            other = run("s3:1", upstream=standin.url, env=otel_env("http://127.0.0.1:9"),
                        cwd=work)
            assert other.returncode == 0, other.stderr
            docs = status_files(residents)
            assert sorted(d["serves"]["otlp"] for d in docs) == sorted(
                [receiver.url + "/v1/metrics", "http://127.0.0.1:9/v1/metrics"])
    finally:
        receiver.stop()


def test_the_standard_variables_name_the_endpoint():
    assert desk.otlp_endpoint({}) is None
    assert desk.otlp_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}) == \
        "http://c:4318/v1/metrics"
    assert desk.otlp_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                               "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m/x"}) == "http://m/x"
    assert desk.otlp_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                               "OTEL_METRICS_EXPORTER": "none"}) is None


class Silent:
    """A collector that takes the connection and the request, and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def post(port: int) -> float:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = json.dumps({"model": "claude-opus-4-8", "max_tokens": 1, "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]})
    conn.request("POST", "/v1/messages", body=body, headers={
        "content-type": "application/json", "x-api-key": "sk-ant-api03-dummy"})
    reply = conn.getresponse()
    reply.read()
    conn.close()
    assert reply.status == 200
    return time.monotonic() - started


def test_a_collector_that_never_answers_costs_the_calls_nothing(residents):
    silent = Silent()
    try:
        with StandIn() as standin:
            standin.default = answer
            port = free_port()
            env = otel_env(f"http://127.0.0.1:{silent.port}", OTEL_EXPORTER_OTLP_TIMEOUT="30000")
            serve = subprocess.Popen(
                [sys.executable, "-m", "ccmeter.entry", "serve", "--reverse", "--upstream",
                 standin.url, "--port", str(port)], env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            try:
                wait_for_port(port, proc=serve)
                post(port)  # the first call: connections made, caches warm
                deadline = time.monotonic() + 20
                while not silent.held:  # a push is under way, and will hang for 30 s
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
                took = [post(port) for _ in range(10)]
                assert max(took) < 1.0, took
                deadline = time.monotonic() + 10  # the writer thread lands the last rows
                while len(rows(residents.db_file)) < 11 and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert len(rows(residents.db_file)) == 11
            finally:
                started = time.monotonic()
                serve.send_signal(signal.SIGINT)
                serve.wait(30)
                stopped_in = time.monotonic() - started
            err = serve.stderr.read()
            assert "OpenTelemetry metrics to" in err
            assert stopped_in < 6, (stopped_in, err)  # STOP_WAIT_S (2 s) and the proxy's own
    finally:
        silent.close()


def test_a_protocol_ccmeter_cannot_send_is_told_not_tried(user_home, caplog):
    from ccmeter.metrics import otlp

    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
           "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    assert otlp.start(config.paths(), env) is None
    assert "protocol grpc is not supported" in caplog.text


def test_a_session_quiet_for_a_day_is_no_longer_pushed(monkeypatch):
    from ccmeter.metrics import otlp

    totals = otlp._Totals()
    now = time.time()
    for session, started in [("old", now - 2 * 86400), ("new", now - 60)]:
        totals.add((session, "p", "m", "anthropic", "main", "ok", "", 5,
                    (1, 0, 0, 0, 2), None, None, started))
    assert {k[1] for k in totals.cost} == {"old", "new"}
    totals.prune(now)
    assert {k[1] for k in totals.cost} == {"new"}
    assert {k[1] for k in totals.tokens} == {"new"}
    assert set(totals.sessions) == {"new"}
    assert sum(totals.calls.values()) == 2  # the session-less counters keep every call
