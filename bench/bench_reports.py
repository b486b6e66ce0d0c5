"""Time `ccmeter report` in every grouping and `ccmeter statusline` on a 1,000,000-call DB.

Usage::

    python bench/bench_reports.py                 # 1,000,000 calls in a temp folder
    python bench/bench_reports.py --calls 200000 --keep /tmp/ccmeter-bench

The database is built with one ``executemany`` in one transaction: 90 days of calls from
~20 projects and ~5,000 sessions over several models, with subagent and auxiliary calls,
cache reads and writes, a few long prompts, some unpriced and some subscription rows. Each
report is timed in-process (best of ``--repeat`` runs, the JSON renderer writing to a
throw-away buffer); the status line both in-process and as a real ``ccmeter statusline``
process fed the recorded sample JSON. Targets: report < 1 s, status line < 100 ms.
"""

from __future__ import annotations

import argparse
import compileall
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ccmeter import config, periods, render, reports, store  # noqa: E402
from ccmeter.pricing import Catalog  # noqa: E402
from ccmeter.usage import Usage  # noqa: E402

DAYS = 90
MODELS = [  # (model id, share of calls)
    ("claude-opus-4-8", 0.35),
    ("claude-sonnet-5", 0.25),
    ("claude-haiku-4-5-20251001", 0.2),
    ("claude-opus-4-7", 0.1),
    ("claude-sonnet-4-5-20250929", 0.08),
    ("claude-experimental-9", 0.02),  # not in the catalog: unpriced
]
COLUMNS = (
    "call_uid", "started_at", "started_ts", "ttfb_ms", "duration_ms", "session_id", "project",
    "agent_id", "parent_agent_id", "call_kind", "model", "status", "http_status",
    "input_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens", "cache_read_tokens",
    "output_tokens", "cost_picousd", "cost_basis", "catalog_version", "auth_kind",
    "plan_5h_utilization", "plan_5h_reset", "plan_7d_utilization", "plan_7d_reset",
    "updated_ts", "cache_key_json", "cache_change",
)


def generate(count: int, now: float, seed: int = 7):
    """Yield ``count`` realistic call rows (tuples in COLUMNS order), oldest first."""
    rng = random.Random(seed)
    keys = random.Random(seed + 1)  # the cache keys: the other columns stay as they were
    catalog = Catalog.bundled()
    projects = [f"project-{i:02d}" for i in range(20)]
    weights = [1 / (i + 1) for i in range(20)]  # a few busy projects, a long tail
    sessions_total = 5000
    per_session = count / sessions_total
    start = now - DAYS * 86400
    names = [m for m, _ in MODELS]
    shares = [s for _, s in MODELS]
    prices: dict[tuple, int | None] = {}
    made = 0
    for index in range(sessions_total):
        sid = str(uuid.UUID(int=rng.getrandbits(128)))
        project = rng.choices(projects, weights)[0]
        subscriber = rng.random() < 0.15
        t = start + (index + rng.random()) * (DAYS * 86400 / sessions_total)
        n = int(per_session) + (1 if rng.random() < per_session % 1 else 0)
        if index == sessions_total - 1:
            n = count - made
        agent = None
        tools, system, messages = f"{keys.getrandbits(64):016x}", f"{keys.getrandbits(64):016x}", 0
        for _ in range(n):
            t = min(t + rng.expovariate(1 / 12), now - 1)
            roll = rng.random()
            kind = "main" if roll < 0.7 else ("subagent" if roll < 0.93 else "auxiliary")
            if kind == "subagent" and (agent is None or rng.random() < 0.05):
                agent = f"agent-{rng.getrandbits(32):08x}"
            model = "claude-haiku-4-5-20251001" if kind == "auxiliary" else (
                rng.choices(names, shares)[0])
            big = rng.random() < 0.01
            usage = Usage(
                input_tokens=rng.randint(1, 3000),
                cache_write_5m_tokens=rng.choice((0, 0, 0, rng.randint(100, 8000))),
                cache_write_1h_tokens=rng.choice((0, 0, 0, 0, 0, rng.randint(100, 4000))),
                cache_read_tokens=rng.randint(210_000, 400_000) if big else rng.randint(0, 90_000),
                output_tokens=rng.randint(1, 2500),
            )
            day = datetime.fromtimestamp(t, UTC).date()
            key = (model, usage, day)
            if key not in prices:
                prices[key] = catalog.price(model, usage, day).cost_picousd
            cost = prices[key]
            if len(prices) > 200_000:
                prices.clear()
            status = "ok" if rng.random() > 0.01 else "upstream_error"
            # what the proxy keeps of the prompt's cache key (fingerprints, no text) and what
            # changed against the chain's previous call: waste reads them for its causes
            change = None
            roll = keys.random()
            if roll < 0.03:
                change, tools = "tools", f"{keys.getrandbits(64):016x}"
            elif roll < 0.05:
                change, system = "system", f"{keys.getrandbits(64):016x}"
            elif roll < 0.15:
                change = f"message:{keys.randint(0, max(messages, 1))}"
            messages += 2
            cache_key = json.dumps({
                "tools": tools, "system": system, "messages": messages,
                "breakpoints": [{"at": f"messages.{messages - 1 - b}.0",
                                 "ttl": "1h" if keys.random() < 0.2 else "5m",
                                 "prefix": f"{keys.getrandbits(64):016x}"}
                                for b in range(keys.randint(1, 3))]}, separators=(",", ":"))
            yield (
                f"bench-{made:08d}", datetime.fromtimestamp(t, UTC).isoformat(), t,
                rng.uniform(300, 2500), rng.uniform(1000, 60000), sid, project,
                agent if kind == "subagent" else None, None, kind, model, status,
                200 if status == "ok" else 529, usage.input_tokens, usage.cache_write_5m_tokens,
                usage.cache_write_1h_tokens, usage.cache_read_tokens, usage.output_tokens, cost,
                "subscription_list_equivalent" if subscriber else "api", catalog.version,
                "subscription" if subscriber else "api_key",
                round(rng.random(), 2) if subscriber else None,
                int(t + 3600) if subscriber else None,
                round(rng.random(), 2) if subscriber else None,
                int(t + 86400) if subscriber else None, t, cache_key, change,
            )
            made += 1


def build(db_path: Path, count: int, now: float) -> float:
    db = store.connect(db_path)
    began = time.perf_counter()
    store.bulk_insert_calls(db, generate(count, now), COLUMNS)
    db.execute("ANALYZE")
    db.conn.close()
    return time.perf_counter() - began


def best_of(repeat: int, action) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        action()
        times.append(time.perf_counter() - began)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1_000_000, help="rows to generate")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (best is kept)")
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it")
    args = parser.parse_args()

    home = args.keep or Path(tempfile.mkdtemp(prefix="ccmeter-bench-"))
    home.mkdir(parents=True, exist_ok=True)
    os.environ["CCMETER_HOME"] = str(home)
    paths = config.paths()
    now = time.time()
    if not paths.db_file.exists():
        seconds = build(paths.db_file, args.calls, now)
        print(f"built {args.calls:,} calls in {seconds:.1f} s "
              f"({paths.db_file.stat().st_size / 1e6:.0f} MB) at {paths.db_file}")
    db = store.connect(paths.db_file)
    catalog = Catalog.bundled()
    results: list[tuple[str, float, float]] = []

    def report_case(label: str, dims: list[str], since: str | None) -> None:
        filters = reports.Filters(
            since=periods.parse_when(since, now=now) if since else None)

        def run() -> None:
            report = reports.build_report(db, dims, filters, catalog)
            columns = [render.Column(d, d) for d in dims] + [
                render.Column("calls", "Calls", "int"), render.Column("cost", "Cost", "usd"),
                render.Column("cache_savings", "Saved", "usd")]
            render.emit(report.rows, columns, "json", totals=report.totals, file=io.StringIO())

        results.append((label, best_of(args.repeat, run), 1.0))

    for dims in (["project"], ["session"], ["model"], ["hour"], ["day"], ["week"], ["month"],
                 ["model", "day"], ["project", "week"]):
        report_case(f"report --by {' --by '.join(dims)} --since 30d", dims, "30d")
    for dims in (["project"], ["session"], ["model", "day"]):
        report_case(f"report --by {' --by '.join(dims)} (all 90 days)", dims, None)
    report_case("report --by day --since 30d --project project-03", ["day"], "30d")

    from ccmeter import statusline as report_commands

    sample = json.loads((ROOT / "tests" / "fixtures" / "statusline-sample.json").read_text())
    busy = store.query(db, "SELECT session_id FROM api_calls ORDER BY started_ts DESC LIMIT 1")
    sample["session_id"] = busy[0]["session_id"]
    text = json.dumps(sample)
    results.append((
        "statusline (in-process, query + format)",
        best_of(args.repeat * 3, lambda: report_commands.statusline_text(text, now=now)),
        0.1,
    ))
    exe = shutil.which("ccmeter") or str(Path(sys.executable).with_name("ccmeter"))
    # As installed: pip writes bytecode at install time, so measure with it (an environment
    # with PYTHONDONTWRITEBYTECODE would otherwise compile every module on every run).
    import ccmeter

    compileall.compile_dir(str(Path(ccmeter.__file__).parent), quiet=1)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def process() -> None:
        subprocess.run([exe, "statusline"], input=text.encode(), capture_output=True,
                       check=True, env=env)

    results.append(("statusline (whole `ccmeter statusline` process)",
                    best_of(args.repeat, process), 0.1))

    width = max(len(label) for label, _, _ in results)
    print(f"\n{'case':<{width}}  {'time':>9}  {'target':>7}  verdict")
    for label, seconds, target in results:
        verdict = "ok" if seconds < target else "SLOW"
        print(f"{label:<{width}}  {seconds * 1000:>7.0f}ms  {target * 1000:>5.0f}ms  {verdict}")
    db.conn.close()
    if args.keep is None:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
