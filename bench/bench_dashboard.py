"""Time every dashboard page on a year of calls, and what a dashboard left open costs a proxy.

Usage::

    python bench/bench_dashboard.py                    # 1,000,000 calls over 365 days
    python bench/bench_dashboard.py --calls 200000 --keep /tmp/ccmeter-dash-bench
    python bench/bench_dashboard.py --skip-proxy       # the page timings only

1. **Pages.** The database is built as ``bench/bench_reports.py`` builds it (one
   ``executemany``), spread over a year. Each page is timed twice: rendered in-process
   (best of ``--repeat``: the queries and the HTML, what the server does per request) and
   fetched whole over HTTP from a running dashboard server (first fetch, cold caches of
   ours; the browser draws from the first byte, so this bounds time to first render).
   Target: every page <= 1 s.
2. **Polling cost on a proxy.** A ccmeter proxy (``mitmdump -s``, forward mode, as
   ``bench/run.py`` sets it up) serves sequential streamed calls in blocks, alternately with
   no dashboard and with ``ccmeter dashboard`` running on the proxy's database and a client
   doing exactly what an open overview tab does: ``GET /api/version`` every second and the
   whole overview again whenever it moved (every call moves it). TTFB and total call time
   are compared: the dashboard shares the machine's CPU and the database file, nothing more
   (it never talks to the proxy).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_reports  # noqa: E402

from ccmeter import config, store  # noqa: E402
from ccmeter.dashboard.server import Dashboard, make_server  # noqa: E402

CAPS = '[caps]\ndaily = "100000"\nweekly = "500000"\nmonthly = "900000"\nnotify = false\n'


def get(port: int, path: str) -> tuple[int, float]:
    began = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("GET", path, headers={"Host": f"127.0.0.1:{port}"})
        response = conn.getresponse()
        response.read()
        return response.status, time.perf_counter() - began
    finally:
        conn.close()


def pages(db_path: Path, repeat: int) -> list[tuple[str, float, float]]:
    conn = store.connect_reader(db_path)
    busiest = conn.execute("SELECT session_id FROM api_calls WHERE started_ts > ? "
                           "GROUP BY session_id ORDER BY COUNT(*) DESC LIMIT 1",
                           (time.time() - 30 * 86400,)).fetchone()[0]
    conn.close()
    paths = ["/", "/?since=1y", "/?stack=model", "/?project=project-03", "/?model=opus",
             "/projects", "/projects?since=1y", "/project/project-00",
             "/project/project-00?since=1y", "/sessions", "/sessions?since=1y",
             f"/session/{busiest}", "/caps", "/waste", "/waste?since=90d", "/waste?since=1y",
             "/api/version"]
    dashboard = Dashboard(db_path)
    # as `ccmeter dashboard` does at start, in the background: the waste memo filled with
    # every finished session (bench/bench_waste.py times the pages without it, cold)
    began = time.perf_counter()
    dashboard.warm_waste()
    print(f"  waste memo warm-up (at start, in the background) {time.perf_counter() - began:.1f} s",
          flush=True)
    server = make_server(db_path)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    out = []
    for path in paths:
        status, fetched = get(port, path)  # first: over HTTP, whole page
        assert status == 200, (path, status)
        url = path.split("?")
        best = float("inf")
        for _ in range(repeat):
            began = time.perf_counter()
            dashboard.render(url[0], url[1] if len(url) > 1 else "")
            best = min(best, time.perf_counter() - began)
        out.append((path, best, fetched))
        print(f"  {path:<36} render {best * 1000:7.0f} ms   HTTP {fetched * 1000:7.0f} ms",
              flush=True)
    server.shutdown()
    dashboard.close()
    server.dashboard.close()
    # what the CLI's report costs on the same data at the same moment (the machine's load
    # varies): the pages read as much as `report` does, so their floor is its time
    from ccmeter import periods, reports
    from ccmeter.pricing import Catalog

    db = store.connect_migrated(db_path)
    for since in ("30d", "1y"):
        flt = reports.Filters(since=periods.parse_when(since))
        for dims in (["project"], ["session"], ["day"]):
            best = float("inf")
            for _ in range(repeat):
                began = time.perf_counter()
                reports.build_report(db, dims, flt, Catalog.bundled())
                best = min(best, time.perf_counter() - began)
            label = f"(CLI) report --by {dims[0]} --since {since}"
            out.append((label, best, best))
            print(f"  {label:<36} {best * 1000:7.0f} ms", flush=True)
    db.conn.close()
    return out


POLLER_PERIOD = 1.0


def poll_like_a_tab(port: int, stop: threading.Event, counts: dict[str, int]) -> None:
    """What an open overview does: the version every second, the page again when it moved."""
    version = None
    while not stop.wait(POLLER_PERIOD):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            conn.request("GET", "/api/version", headers={"Host": f"127.0.0.1:{port}"})
            now = json.loads(conn.getresponse().read())["version"]
            counts["polls"] += 1
            if now != version:
                version = now
                conn.request("GET", "/", headers={"Host": f"127.0.0.1:{port}"})
                conn.getresponse().read()
                counts["renders"] += 1
        finally:
            conn.close()


def proxy_cost(home: Path, blocks: int, calls: int) -> dict[str, dict[str, float]]:
    from client import Connection, claude_headers, request_body
    from procs import Proxy, StandInProcess

    work = Path(tempfile.mkdtemp(prefix="ccmeter-dash-proxy-"))
    api = StandInProcess()
    proxy = Proxy("ccmeter", work / "ca", work, meter_home=home)
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("https_proxy", "http_proxy")}
    env["CCMETER_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    dash = subprocess.Popen([sys.executable, "-m", "ccmeter.entry", "dashboard", "--no-open"],
                            env=env, stdout=subprocess.PIPE, text=True)
    assert dash.stdout is not None
    port = int(re.search(r":(\d+)/", dash.stdout.readline()).group(1))  # type: ignore[union-attr]
    conn = Connection(("127.0.0.1", api.port), proxy.ca, proxy.address)
    session = "bench-dashboard"
    body = request_body(session, 40)
    headers = claude_headers(session, **{"x-bench-events": "20"})
    for _ in range(20):
        conn.stream(body, headers)
    results: dict[str, dict[str, list[float]]] = {
        "no dashboard": {"ttfb": [], "total": []}, "dashboard open": {"ttfb": [], "total": []}}
    counts = {"polls": 0, "renders": 0}
    try:
        for block in range(blocks * 2):
            setup = "dashboard open" if block % 2 else "no dashboard"
            stop = threading.Event()
            poller = None
            if setup == "dashboard open":
                poller = threading.Thread(target=poll_like_a_tab, args=(port, stop, counts))
                poller.start()
            for _ in range(calls):
                res = conn.stream(body, headers)
                if res.ok:
                    results[setup]["ttfb"].append(res.ttfb * 1000)
                    results[setup]["total"].append(res.total * 1000)
                time.sleep(0.05)  # a little room between calls, as a session has
            stop.set()
            if poller is not None:
                poller.join()
    finally:
        conn.close()
        dash.terminate()
        dash.wait(10)
        proxy.stop()
        api.stop()
        shutil.rmtree(work, ignore_errors=True)
    summary = {}
    for setup, figures in results.items():
        ttfb, total = sorted(figures["ttfb"]), sorted(figures["total"])
        if not ttfb:
            raise SystemExit(f"{setup}: no call succeeded; see {proxy.log_path}")
        summary[setup] = {
            "calls": len(ttfb), "ttfb_p50": statistics.median(ttfb),
            "ttfb_p95": ttfb[int(len(ttfb) * 0.95) - 1], "total_p50": statistics.median(total),
            "total_p95": total[int(len(total) * 0.95) - 1]}
    summary["dashboard"] = {"polls": counts["polls"], "overview renders": counts["renders"]}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1_000_000, help="rows to generate")
    parser.add_argument("--days", type=int, default=365, help="days the rows span")
    parser.add_argument("--repeat", type=int, default=3, help="renders per page (best kept)")
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it")
    parser.add_argument("--skip-proxy", action="store_true", help="page timings only")
    parser.add_argument("--skip-pages", action="store_true", help="the proxy's figures only")
    parser.add_argument("--blocks", type=int, default=4, help="blocks of each proxy setup")
    parser.add_argument("--block-calls", type=int, default=100, help="calls per block")
    args = parser.parse_args()

    home = args.keep or Path(tempfile.mkdtemp(prefix="ccmeter-dash-bench-"))
    home.mkdir(parents=True, exist_ok=True)
    os.environ["CCMETER_HOME"] = str(home)
    paths = config.paths()
    paths.config_file.parent.mkdir(parents=True, exist_ok=True)
    paths.config_file.write_text(CAPS)
    now = time.time()
    if not paths.db_file.exists():
        bench_reports.DAYS = args.days
        seconds = bench_reports.build(paths.db_file, args.calls, now)
        print(f"built {args.calls:,} calls over {args.days} days in {seconds:.1f} s "
              f"({paths.db_file.stat().st_size / 1e6:.0f} MB) at {paths.db_file}", flush=True)
    store.connect(paths.db_file).conn.close()  # a kept database of an older schema: migrated
    if not args.skip_pages:
        print("pages (target: <= 1000 ms each)")
        timed = pages(paths.db_file, args.repeat)
        slow = [path for path, best, fetched in timed
                if max(best, fetched) > 1.0 and not path.startswith("(CLI)")]
        verdict = "SLOW: " + ", ".join(slow) if slow else "ok"
        print(f"slowest render {max(b for _, b, _ in timed) * 1000:.0f} ms, slowest HTTP "
              f"fetch {max(f for _, _, f in timed) * 1000:.0f} ms: {verdict}")
    if not args.skip_proxy:
        # the proxy meters into the same year of calls the dashboard shows: each overview
        # redraw then costs what it costs a heavy user
        print("\nproxy with and without an open dashboard (ms)")
        summary = proxy_cost(home, args.blocks, args.block_calls)
        for setup, figures in summary.items():
            print(f"  {setup:<15} " + "  ".join(
                f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                for k, v in figures.items()))
    if args.keep is None:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
