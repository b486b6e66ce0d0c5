"""Time to first byte with several ``ccmeter run`` sessions sharing one resident proxy.

Issue 14, Must 3: with 8 concurrent sessions through the shared proxy, the time to first
byte stays within the existing TTFB targets (ccmeter's added TTFB ≤ 1.15 × bare mitmproxy's).

Three setups, each with ``--sessions`` processes at once, each process making ``--calls``
sequential streamed calls on one kept-alive connection (after 10 warm-up calls):

- ``direct``: straight to the stand-in API;
- ``bare``: through a bare forward-mode ``mitmdump`` (TLS interception, bodies streamed);
- ``shared``: ``--sessions`` real ``ccmeter run`` processes, which all join one resident
  ccmeter proxy (each session's CONNECT carries its run's credentials, as Claude Code's does).

The setups take turns (``--rounds`` rounds, the order rotated each round); the figures are
pooled over every call of a setup. The resident proxy is started here (``ssl_insecure``: the
stand-in's certificate is its own) and the runs join it as they would a login service's.

    python bench/shared.py                    # 8 sessions x 150 calls x 3 rounds, back to back
    python bench/shared.py --pace 200         # each session pauses ~200 ms between calls
    python bench/shared.py --sessions 4 --calls 60 --rounds 1

Back to back, 8 sessions keep a 2-core machine's proxy CPU near saturation (hundreds of calls
a second), where any extra CPU per call multiplies into queueing; ``--pace`` gives each
session a pause between calls, as a real session has (Claude Code's calls come seconds
apart), so the figures show the meter's cost at a load the proxy can carry.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from procs import Proxy, StandInProcess  # noqa: E402

REQUEST_KB = 24

# One session: N calls through HTTPS_PROXY (with its credentials) or straight to the target;
# prints the time to first byte of each call, in ms, as one JSON list.
SESSION = """
import base64, json, os, random, sys, time, uuid
from urllib.parse import urlsplit
sys.path.insert(0, sys.argv[1])
from client import Connection, claude_headers, request_body
host, port, ca, calls = sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
pace = float(sys.argv[6]) / 1000  # mean pause between calls, in seconds (0: back to back)
proxy = urlsplit(os.environ["HTTPS_PROXY"]) if os.environ.get("HTTPS_PROXY") else None
auth = ("Basic " + base64.b64encode(f"{proxy.username}:{proxy.password}".encode()).decode()
        if proxy and proxy.username else None)
conn = Connection((host, port), os.environ.get("NODE_EXTRA_CA_CERTS") or ca,
                  (proxy.hostname, proxy.port) if proxy else None, proxy_auth=auth)
session = str(uuid.uuid4())
body = request_body(session, REQUEST_KB)
headers = claude_headers(session, **{"x-bench-events": "20"})
for _ in range(10):
    conn.stream(body, headers)
got = []
for _ in range(calls):
    if pace:
        time.sleep(random.uniform(0.5, 1.5) * pace)
    res = conn.stream(body, headers)
    if res.ok:
        got.append(res.ttfb * 1000)
print(json.dumps(got))
""".replace("REQUEST_KB", str(REQUEST_KB))

RESIDENT = """
import sys, threading
from ccmeter import config, proxy
where = config.paths()
running = proxy.start(proxy.ProxySettings(paths=where, upstream=sys.argv[1], ssl_insecure=True))
print(running.port, flush=True)
threading.Event().wait()
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=8, help="concurrent sessions")
    parser.add_argument("--calls", type=int, default=150, help="calls per session and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the setups")
    parser.add_argument("--pace", type=float, default=0.0,
                        help="mean pause between a session's calls, in ms (each pause drawn "
                        "from 0.5-1.5 x it; 0: back to back, the proxy's CPU saturated)")
    parser.add_argument("--separate", action="store_true",
                        help="a fourth setup: each session through a ccmeter proxy of its own "
                        "(mitmdump -s, one per session: what N runs were before)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ccmeter-shared-"))
    home = work / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("https_proxy", "http_proxy", "no_proxy", "node_extra_ca_certs")}
    env["CCMETER_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    api = StandInProcess()
    bare = Proxy("bare", work / "ca", work)
    upstream = f"https://127.0.0.1:{api.port}"
    resident = subprocess.Popen([sys.executable, "-c", RESIDENT, upstream], env=env,
                                stdout=subprocess.PIPE, text=True)
    assert resident.stdout is not None
    resident_port = int(resident.stdout.readline())
    bench_dir = str(Path(__file__).resolve().parent)
    own: list[Proxy] = []
    if args.separate:
        for n in range(args.sessions):
            meter_home = work / f"own-{n}"
            meter_home.mkdir()
            own.append(Proxy(f"own-{n}", work / "ca", work, meter_home=meter_home))

    def sessions(setup: str) -> list[float]:
        procs = []
        for n in range(args.sessions):
            if setup == "shared":
                argv = [sys.executable, "-m", "ccmeter.cli", "run", "--upstream", upstream, "--",
                        sys.executable, "-c", SESSION, bench_dir, "api.anthropic.com", "443",
                        "-", str(args.calls), str(args.pace)]
                child_env = env
            else:
                via = {"bare": bare, "separate": own[n] if own else None}.get(setup)
                argv = [sys.executable, "-c", SESSION, bench_dir, "127.0.0.1", str(api.port),
                        via.ca if via else api.ca, str(args.calls), str(args.pace)]
                child_env = dict(env)
                if via is not None:
                    child_env["HTTPS_PROXY"] = f"http://127.0.0.1:{via.port}"
            procs.append(subprocess.Popen(argv, env=child_env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
        got: list[float] = []
        for proc in procs:
            out, err = proc.communicate(timeout=600)
            if proc.returncode != 0:
                raise SystemExit(f"{setup} session failed: {err[-2000:]}")
            got += json.loads(out.strip().splitlines()[-1])
        return got

    setups = ["direct", "bare", "shared"] + (["separate"] if own else [])
    every: dict[str, list[float]] = {s: [] for s in setups}
    try:
        for r in range(args.rounds):
            order = setups[r % len(setups):] + setups[:r % len(setups)]
            for setup in order:
                began = time.monotonic()
                every[setup] += sessions(setup)
                print(f"round {r + 1}: {setup} {time.monotonic() - began:.1f} s", file=sys.stderr)
        proxies = list((home / "proxies").glob("*.json"))
    finally:
        resident.terminate()
        resident.wait(20)
        for proc in (bare, *own):
            proc.stop()
        api.stop()
    fig = {s: {"p50": pct(v, 0.5), "p99": pct(v, 0.99), "n": len(v)} for s, v in every.items()}
    added = {s: {q: fig[s][q] - fig["direct"][q] for q in ("p50", "p99")}
             for s in setups[1:]}
    result = {
        "sessions": args.sessions, "calls_per_session_and_round": args.calls,
        "rounds": args.rounds, "pace_ms": args.pace, "resident_proxies_seen": len(proxies),
        "resident_port": resident_port, "ttfb_ms": fig, "added_ms": added,
        "ratio_added": {s: {q: added[s][q] / added["bare"][q] for q in ("p50", "p99")}
                        for s in setups[2:]},
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
