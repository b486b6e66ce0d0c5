"""Time the waste report over long ranges on a year of calls: the dashboard's waste page and
``ccmeter waste``, with the waste memo cold (no memo file) and warm, beside the code before
the memo (tests/waste_before.py), in two time zones.

Usage::

    python bench/bench_waste.py                       # 1,000,000 calls over 365 days
    python bench/bench_waste.py --keep /tmp/ccmeter-waste-bench --before
    python bench/bench_waste.py --calls 200000 --zones UTC

The database is built as ``bench/bench_reports.py`` builds it (spread over ``--days``), its
calls carrying cache keys and causes as the proxy writes them. For each zone (``TZ``):

1. **Page.** ``Dashboard(db).render("/waste", ...)`` in-process for the 7-day default,
   ``since=90d`` and ``since=1y``: *cold* (the memo file deleted first: what the very first
   view costs before the dashboard's start-up warm-up has run) and *warm* (best of
   ``--repeat``: every view after it). ``--before``: the same page's work
   (``build_many(["cause", "session"])``) by the code before the memo, once, and the two
   totals compared.
2. **CLI.** ``ccmeter waste --since 90d`` and ``--since 1y`` as whole processes (what a user
   waits for), cold and warm.
3. **Warm-up.** What the dashboard does in the background at start on a cold memo
   (every finished session accounted once).

Target: every page <= 1 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

import bench_reports  # noqa: E402

from ccmeter import config, periods, store, wastememo, wastereport  # noqa: E402
from ccmeter.dashboard.server import Dashboard  # noqa: E402
from ccmeter.pricing import Catalog  # noqa: E402

QUERIES = [("/waste", ""), ("/waste?since=90d", "since=90d"), ("/waste?since=1y", "since=1y")]


def forget_memo() -> None:
    for memo in wastememo.cache_folder().glob("waste-*.sqlite*"):
        memo.unlink()


def timed(action) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def cli(since: str) -> float:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ccmeter.entry", "waste", "--since", since],
                   check=True, capture_output=True, env=env)
    return time.perf_counter() - began


def bench_zone(db_path: Path, repeat: int, before: bool) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []

    def note(label: str, seconds: float) -> None:
        out.append((label, seconds))
        print(f"  {label:<44} {seconds * 1000:8.0f} ms", flush=True)

    dashboard = Dashboard(db_path)
    for label, query in QUERIES:
        forget_memo()
        note(f"page {label} cold", timed(lambda q=query: dashboard.render("/waste", q)))
        note(f"page {label} warm", min(timed(lambda q=query: dashboard.render("/waste", q))
                                       for _ in range(repeat)))
    forget_memo()
    note("dashboard warm-up (background, cold memo)", timed(dashboard.warm_waste))
    dashboard.close()
    if before:
        import waste_before

        db = store.connect_migrated(db_path)
        catalog = Catalog.bundled()
        for since in ("7d", "90d", "1y"):
            now = time.time()
            flt = wastereport.WasteFilters(since=periods.parse_when(since, now=now))
            began = time.perf_counter()
            old = waste_before.build_many(db, ["cause", "session"], flt, catalog, now)
            note(f"page's work before the memo, since={since}", time.perf_counter() - began)
            new = wastereport.build_many(db, ["cause", "session"], flt, catalog, now)
            for mine, theirs in zip(new, old, strict=True):
                assert (mine.rows, mine.totals) == (theirs.rows, theirs.totals), since
        db.conn.close()
    for since in ("90d", "1y"):
        forget_memo()
        note(f"ccmeter waste --since {since} cold", cli(since))
        note(f"ccmeter waste --since {since} warm", min(cli(since) for _ in range(repeat)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1_000_000, help="rows to generate")
    parser.add_argument("--days", type=int, default=365, help="days the rows span")
    parser.add_argument("--repeat", type=int, default=3, help="warm runs per case (best kept)")
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it")
    parser.add_argument("--before", action="store_true",
                        help="also time the code before the memo and compare its totals")
    parser.add_argument("--zones", default="UTC,Asia/Kolkata", help="TZ values to run in")
    args = parser.parse_args()

    home = args.keep or Path(tempfile.mkdtemp(prefix="ccmeter-waste-bench-"))
    home.mkdir(parents=True, exist_ok=True)
    os.environ["CCMETER_HOME"] = str(home)  # the memo goes to its cache folder
    paths = config.paths()
    if not paths.db_file.exists():
        bench_reports.DAYS = args.days
        seconds = bench_reports.build(paths.db_file, args.calls, time.time())
        print(f"built {args.calls:,} calls over {args.days} days in {seconds:.1f} s "
              f"({paths.db_file.stat().st_size / 1e6:.0f} MB) at {paths.db_file}", flush=True)
    slow = []
    for zone in args.zones.split(","):
        os.environ["TZ"] = zone
        time.tzset()
        print(f"TZ={zone}", flush=True)
        for label, seconds in bench_zone(paths.db_file, args.repeat, args.before):
            if label.startswith("page /") and label.endswith("warm") and seconds > 1.0:
                slow.append(f"{label} ({zone})")
    print("warm pages: " + ("SLOW: " + ", ".join(slow) if slow else "all <= 1000 ms"))
    if args.keep is None:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
