"""The report fold before and after, side by side: every dashboard page and the CLI's year reports.

Usage::

    python bench/bench_dashboard.py --skip-proxy --keep /tmp/ccmeter-dash-bench  # builds it
    python bench/bench_report_speed.py /tmp/ccmeter-dash-bench [--repeat 5]

"Before" is the report code as it was (``tests/reports_before.py``, kept verbatim for the
equality tests) swapped in for ``reports.build_reports``; "after" is today's. The two run
interleaved in one process on the same database (before, after, before, after ...), so a
machine shared with other jobs loads both alike. Each case keeps its best wall time and its
best CPU time (``process_time``: what the work costs, whatever else the machine runs).
The waste pages are not reports and are left out. Target: every page <= 1 s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import reports_before  # noqa: E402

from ccmeter import config, periods, reports, store  # noqa: E402
from ccmeter.dashboard.server import Dashboard  # noqa: E402
from ccmeter.pricing import Catalog  # noqa: E402

PATHS = ["/", "/?since=1y", "/?stack=model&since=1y", "/projects", "/projects?since=1y",
         "/project/project-00", "/project/project-00?since=1y", "/sessions",
         "/sessions?since=1y"]
CLI = [["project"], ["day"], ["session"], ["model", "week"]]


def timed(action) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("home", type=Path, help="a folder bench_dashboard.py --keep built")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (best kept)")
    args = parser.parse_args()
    os.environ["CCMETER_HOME"] = str(args.home)
    db_path = config.paths().db_file
    store.connect_migrated(db_path).conn.close()  # today's schema (the old code reads it too)
    new_many, new_one = reports.build_reports, reports.build_report

    def old_one(db, dims, filters, catalog, **kw):  # type: ignore[no-untyped-def]
        return reports_before.build_reports(db, [dims], filters, catalog, **kw)[0]

    versions = {"before": (reports_before.build_reports, old_one), "after": (new_many, new_one)}
    dashboard = Dashboard(db_path)
    db = store.connect_migrated(db_path)
    catalog = Catalog.bundled()
    year = reports.Filters(since=periods.parse_when("1y"))
    cases = [(p, lambda p=p: dashboard.render(*[*p.split("?"), ""][:2])) for p in PATHS]
    cases += [(f"report --by {' --by '.join(d)} --since 1y",
               lambda d=d: reports.build_report(db, d, year, catalog)) for d in CLI]
    print(f"{'case':<44} {'before wall/cpu':>18} {'after wall/cpu':>18}")
    for name, action in cases:
        best = {v: [float("inf"), float("inf")] for v in versions}
        for _ in range(args.repeat):
            for version, (many, one) in versions.items():
                reports.build_reports, reports.build_report = many, one  # type: ignore[assignment]
                wall, cpu = timed(action)
                best[version] = [min(best[version][0], wall), min(best[version][1], cpu)]
        reports.build_reports, reports.build_report = new_many, new_one  # type: ignore[assignment]
        b, a = best["before"], best["after"]
        print(f"{name:<44} {b[0]:8.2f} / {b[1]:5.2f} s {a[0]:8.2f} / {a[1]:5.2f} s", flush=True)
    dashboard.close()
    db.conn.close()


if __name__ == "__main__":
    main()
