"""Does a scraped metrics endpoint slow the calls? Two ccmeter proxies side by side.

Usage::

    python bench/metrics_scrape.py                      # 100,000 stored calls, 600 calls each
    python bench/metrics_scrape.py --rows 1000000 --calls 300

Two resident ccmeter proxies (``proxy.start``, as ``ccmeter serve`` runs it), each over a
database of its own already holding ``--rows`` calls (bench_reports' generator): ``plain``
serves no metrics; ``scraped`` serves ``--metrics-port`` and a thread here GETs its /metrics
every ``--interval`` seconds (Prometheus would scrape every 15-60 s; 1 s is the issue's
case). One client alternates streamed calls (a 24 KB request, 20 SSE events) between the two,
each on its own kept-alive connection, so drift hits both alike. Printed: each proxy's time to
first byte and whole-call time (p50, p99), and the scrapes' own times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import bench_reports  # noqa: E402
from client import Connection, claude_headers, request_body  # noqa: E402
from procs import StandInProcess, free_port  # noqa: E402

RESIDENT = """
import sys, threading
from ccmeter import config, proxy
where = config.paths()
port = int(sys.argv[2]) or None
running = proxy.start(proxy.ProxySettings(paths=where, upstream=sys.argv[1], ssl_insecure=True,
                                          metrics_port=port))
print(running.port, flush=True)
threading.Event().wait()
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="calls already stored")
    parser.add_argument("--calls", type=int, default=600, help="calls per proxy")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between scrapes")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ccmeter-metrics-bench-"))
    api = StandInProcess()
    upstream = f"https://127.0.0.1:{api.port}"
    procs, ports, cas = {}, {}, {}
    metrics_port = free_port()
    for name in ("plain", "scraped"):
        home = work / name
        home.mkdir()
        bench_reports.build(home / "ccmeter.db", args.rows, time.time())
        env = {k: v for k, v in os.environ.items()
               if k.lower() not in ("https_proxy", "http_proxy", "no_proxy")}
        env["CCMETER_HOME"] = str(home)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        procs[name] = subprocess.Popen(
            [sys.executable, "-c", RESIDENT, upstream,
             str(metrics_port if name == "scraped" else 0)],
            env=env, stdout=subprocess.PIPE, text=True)
        assert procs[name].stdout is not None
        ports[name] = int(procs[name].stdout.readline())
        cas[name] = str(home / "ca" / "mitmproxy-ca-cert.pem")
    scrapes: list[float] = []
    stop = threading.Event()

    def scraper() -> None:
        while not stop.is_set():
            began = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                        timeout=30) as page:
                page.read()
            scrapes.append(time.perf_counter() - began)
            stop.wait(max(0.0, args.interval - (time.perf_counter() - began)))

    conns = {name: Connection(("127.0.0.1", api.port), cas[name], ("127.0.0.1", ports[name]))
             for name in procs}
    body = request_body("bench-session", 24)
    headers = claude_headers("bench-session", **{"x-bench-events": "20"})
    ttfb: dict[str, list[float]] = {n: [] for n in procs}
    total: dict[str, list[float]] = {n: [] for n in procs}
    thread = threading.Thread(target=scraper, daemon=True)
    try:
        for name in procs:  # warm up
            for _ in range(20):
                conns[name].stream(body, headers)
        thread.start()
        for i in range(args.calls):
            order = list(procs) if i % 2 else list(procs)[::-1]
            for name in order:
                res = conns[name].stream(body, headers)
                if not res.ok:
                    raise SystemExit(f"{name}: {res.error}")
                ttfb[name].append(res.ttfb * 1000)
                total[name].append(res.total * 1000)
    finally:
        stop.set()
        for proc in procs.values():
            proc.terminate()
            proc.wait(20)
        api.stop()
    fig = {n: {"ttfb_p50": pct(ttfb[n], 0.5), "ttfb_p99": pct(ttfb[n], 0.99),
               "total_p50": pct(total[n], 0.5), "total_p99": pct(total[n], 0.99),
               "calls": len(ttfb[n])} for n in procs}
    print(json.dumps({
        "stored_calls": args.rows, "interval_s": args.interval, "ms": fig,
        "scrapes": {"n": len(scrapes), "first_ms": scrapes[0] * 1000 if scrapes else None,
                    "median_ms": statistics.median(scrapes) * 1000 if scrapes else None,
                    "max_ms": max(scrapes) * 1000 if scrapes else None},
    }, indent=1))


if __name__ == "__main__":
    main()
