"""Time `ccmeter team report` on a share of 200 users x 90 days.

Usage::

    python bench/bench_team.py                      # 200 users, 90 days, in a temp folder
    python bench/bench_team.py --users 500 --keep /tmp/ccmeter-team-bench

The share is generated directly as share files (what `ccmeter push` writes), not through
200 databases: each user works on 2-5 projects with 2-4 models, most days, and a quarter of
them push from a second machine. Each grouping is timed in-process through the real Typer
command (best of ``--repeat``, output to a throw-away buffer), then once as a real
``ccmeter team report`` process, interpreter start-up included. Target: < 2 s.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from typer.testing import CliRunner  # noqa: E402

from ccmeter import share  # noqa: E402
from ccmeter.cli import app  # noqa: E402

MODELS = ("claude-opus-4-8", "claude-sonnet-5", "claude-haiku-4-5-20251001", "claude-opus-4-7",
          "claude-experimental-9")
PROJECTS = tuple(f"project-{i:02d}" for i in range(40))
GROUPINGS = (["user"], ["project"], ["model"], ["day"], ["week"], ["project", "model"],
             ["user", "month"])


def generate(root: Path, users: int, days: int, seed: int = 11) -> tuple[int, int]:
    """Write the share; returns (files, rows)."""
    rng = random.Random(seed)
    first = date.today() - timedelta(days=days - 1)
    files = rows = 0
    for u in range(users):
        user = f"dev{u:03d}@corp"
        projects = rng.sample(PROJECTS, rng.randint(2, 5))
        models = rng.sample(MODELS, rng.randint(2, 4))
        machines = [f"{rng.getrandbits(64):016x}" for _ in range(2 if u % 4 == 0 else 1)]
        by_file: dict[Path, list[dict]] = {}
        for offset in range(days):
            day = first + timedelta(days=offset)
            if day.weekday() >= 5 and rng.random() < 0.8:
                continue
            for project in projects:
                for model in models:
                    if rng.random() < 0.4:
                        continue
                    machine = rng.choice(machines)
                    calls = rng.randint(1, 300)
                    unpriced = calls if model == "claude-experimental-9" else 0
                    cost = None if unpriced == calls else rng.randint(10**9, 40 * 10**12)
                    blocked = rng.choice((0, 0, 0, 0, 1, 3))
                    row = {
                        "schema_version": share.SCHEMA_VERSION, "day": day.isoformat(),
                        "project": project, "model": model, "calls": calls,
                        "input_tokens": calls * rng.randint(5, 3000),
                        "cache_write_5m_tokens": calls * rng.randint(0, 20000),
                        "cache_write_1h_tokens": calls * rng.randint(0, 2000),
                        "cache_read_tokens": calls * rng.randint(0, 150000),
                        "output_tokens": calls * rng.randint(50, 4000),
                        "cost_usd": None if cost is None else share.usd_string(cost),
                        "cost_picousd": cost, "unpriced_calls": unpriced,
                        "blocked_calls": blocked, "cap_hits": blocked,
                    }
                    path = share.part_path(root, day.isoformat()[:7], user, machine)
                    by_file.setdefault(path, []).append(row)
        for path, file_rows in by_file.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(share.encode_rows(file_rows))
            files += 1
            rows += len(file_rows)
    return files, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="generate the share here and keep it")
    args = parser.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="ccmeter-team-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    files, rows = generate(root, args.users, args.days)
    print(f"share: {args.users} users x {args.days} days = {files} files, {rows:,} rows "
          f"(generated in {time.perf_counter() - started:.1f} s) in {root}")
    runner = CliRunner()
    worst = 0.0
    try:
        for by in GROUPINGS:
            argv = ["team", "report", "--from", str(root), "--format", "json"]
            for dim in by:
                argv += ["--by", dim]
            best = float("inf")
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                result = runner.invoke(app, argv, catch_exceptions=False)
                best = min(best, time.perf_counter() - t0)
                assert result.exit_code == 0, result.output
            worst = max(worst, best)
            print(f"  team report --by {' --by '.join(by):<18} {best * 1000:7.0f} ms")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ccmeter.cli", "team", "report", "--from",
                        str(root), "--by", "project", "--by", "model"],
                       check=True, stdout=subprocess.DEVNULL)
        process = time.perf_counter() - t0
        print(f"  `ccmeter team report --by project --by model` as a process: "
              f"{process * 1000:.0f} ms")
        verdict = "OK" if max(worst, process) < 2.0 else "SLOWER THAN TARGET"
        print(f"slowest: {max(worst, process) * 1000:.0f} ms (target < 2000 ms): {verdict}")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
