"""How long the ``ccmeter`` command takes to answer, next to a bare ``python -c pass``.

Usage::

    python bench/cli_startup.py                      # 20 interleaved rounds, 100,000 calls
    python bench/cli_startup.py --rounds 40 --keep /tmp/ccmeter-cli-bench

Each round runs every case once, in turn (a bare interpreter first, then each command), so
machine load falls on all of them alike; the table shows each case's median wall time and its
ratio to the bare interpreter's median (``--compare DIR`` adds the same commands run from
another copy of the project, e.g. the code before a change). The commands run as the
installed console script does (``from ccmeter.entry import main``, this checkout first on
``sys.path``), with bytecode compiled as pip compiles it at install time, stdout to
``/dev/null`` (not a terminal), against a database of 100,000 realistic calls over 90 days
(``bench_reports.generate``) and a config with daily, weekly and monthly caps. Targets
(issue 14): ``--version`` ≤ 3 × the bare interpreter; ``report``, ``sessions``, ``caps`` and
``watch --once`` ≤ 2.5 ×.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CASES = [  # (label, argv after `ccmeter`, target ratio)
    ("ccmeter --version", ["--version"], 3.0),
    ("ccmeter report", ["report"], 2.5),
    ("ccmeter sessions", ["sessions"], 2.5),
    ("ccmeter caps", ["caps"], 2.5),
    ("ccmeter watch --once", ["watch", "--once"], 2.5),
]
EXTRA = [  # shown, not judged: other common forms
    ("ccmeter report --by day --since 30d", ["report", "--by", "day", "--since", "30d"]),
    ("ccmeter report --format json", ["report", "--format", "json"]),
]
SCRIPT = """import sys
from ccmeter.entry import main
if __name__ == "__main__":
    sys.exit(main())
"""
CAPS = '[caps]\ndaily = "50"\nweekly = "200"\nmonthly = "600"\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds")
    parser.add_argument("--calls", type=int, default=100_000, help="rows in the database")
    parser.add_argument("--keep", type=Path, help="build the database here and keep it")
    parser.add_argument("--extra", action="store_true", help="also time a few other forms")
    parser.add_argument("--compare", type=Path, help="also run each command from this copy "
                        "of the project (e.g. `git worktree add /tmp/before main`), interleaved")
    args = parser.parse_args()

    home = args.keep or Path(tempfile.mkdtemp(prefix="ccmeter-cli-bench-"))
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "COLUMNS", "NO_COLOR")}
    env["CCMETER_HOME"] = str(home)
    env["PYTHONPATH"] = str(ROOT)
    os.environ["CCMETER_HOME"] = str(home)
    from ccmeter import config

    paths = config.paths()
    if not paths.db_file.exists():
        import bench_reports

        seconds = bench_reports.build(paths.db_file, args.calls, time.time())
        print(f"built {args.calls:,} calls in {seconds:.1f} s at {paths.db_file}")
    paths.config_file.write_text(CAPS, encoding="utf-8")
    import ccmeter

    compileall.compile_dir(str(Path(ccmeter.__file__).parent), quiet=1)  # as pip installs
    script = home / "ccmeter-script.py"
    script.write_text(SCRIPT, encoding="utf-8")

    cases = [("python -c pass", [sys.executable, "-c", "pass"], None)]
    cases += [(label, [sys.executable, str(script), *argv], target)
              for label, argv, target in CASES]
    if args.extra:
        cases += [(label, [sys.executable, str(script), *argv], None) for label, argv in EXTRA]
    envs = {label: env for label, _, _ in cases}
    if args.compare is not None:
        before = {**env, "PYTHONPATH": str(args.compare.resolve())}
        compileall.compile_dir(str(args.compare / "ccmeter"), quiet=1)
        for label, argv, _ in CASES:
            cases.append((f"{label} (compare)", [sys.executable, str(script), *argv], None))
            envs[f"{label} (compare)"] = before
    where = subprocess.run([sys.executable, "-c", "import ccmeter; print(ccmeter.__file__)"],
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    print(f"ccmeter from {where}; {args.rounds} rounds; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    times: dict[str, list[float]] = {label: [] for label, _, _ in cases}
    for _ in range(2):  # warm the page cache and the bytecode
        for label, argv, _ in cases:
            subprocess.run(argv, env=envs[label], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    for index in range(args.rounds):
        order = cases[index % len(cases):] + cases[:index % len(cases)]
        for label, argv, _ in order:
            began = time.perf_counter()
            done = subprocess.run(argv, env=envs[label], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
            times[label].append(time.perf_counter() - began)
            if done.returncode != 0:
                sys.exit(f"{label} failed ({done.returncode}): {done.stderr.decode()[-500:]}")

    base = statistics.median(times["python -c pass"])
    width = max(len(label) for label, _, _ in cases)
    print(f"\n| {'case':<{width}} | median | min | × python -c pass | target | verdict |")
    print(f"|{'-' * (width + 2)}|---:|---:|---:|---:|---|")
    for label, _, target in cases:
        median = statistics.median(times[label])
        ratio = median / base
        verdict = "" if target is None else ("met" if ratio <= target else "NOT met")
        print(f"| {label:<{width}} | {median * 1000:.1f} ms | {min(times[label]) * 1000:.1f} ms "
              f"| {ratio:.2f} × | {'' if target is None else f'≤ {target:g} ×'} | {verdict} |")
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.keep is None:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
