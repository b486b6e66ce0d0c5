"""How long ``ccmeter run -- true`` takes, next to ``ccmeter --version`` and a bare interpreter.

Usage::

    python bench/run_startup.py                      # 20 interleaved rounds, proxy up
    python bench/run_startup.py --cold 5             # also 5 runs that start the proxy
    python bench/run_startup.py --compare /tmp/before   # also the same from another copy

A user's layout: a fresh ``HOME`` (no ``CCMETER_HOME``), the platform's folders, the command
run from a git repository, a database of 100,000 realistic calls and daily/weekly/monthly
caps in ``~/.config/ccmeter/config.toml`` (so the exit summary has a cap to show). The
commands run as the installed console script does, bytecode compiled as pip does at install
time. With the proxy up, each round runs a bare ``python -c pass``, ``ccmeter --version`` and
``ccmeter run -- true`` (which joins the running proxy) in turn, the order rotated; ``--cold``
then times runs that find no proxy and start one (the proxy is stopped before each).
Targets (issue 14): ``run -- true`` ≤ 1.5 × ``--version`` with a proxy up; ``--version`` ≤
3 × the bare interpreter; with no proxy up, ``run`` no slower than before.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

SCRIPT = """import sys
from ccmeter.entry import main
if __name__ == "__main__":
    sys.exit(main())
"""
CAPS = '[caps]\ndaily = "50"\nweekly = "200"\nmonthly = "600"\n'


def stop_proxies(data_dir: Path) -> None:
    """SIGTERM every proxy with a status file here, and wait until each is gone."""
    for path in (data_dir / "proxies").glob("*.json"):
        try:
            pid = json.loads(path.read_text())["pid"]
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError, KeyError):
            continue
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    began = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    took = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"{argv} failed ({done.returncode}): {done.stderr.decode()[-500:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds, proxy up")
    parser.add_argument("--cold", type=int, default=0, help="runs that start the proxy")
    parser.add_argument("--calls", type=int, default=100_000, help="rows in the database")
    parser.add_argument("--compare", type=Path, help="also run each command from this copy "
                        "of the project (e.g. `git worktree add /tmp/before main`)")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="ccmeter-run-bench-"))
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "CCMETER_HOME", "XDG_CONFIG_HOME",
                        "XDG_DATA_HOME", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy")}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT))
    repo = home / "work" / "api-server"
    (repo / ".git").mkdir(parents=True)
    data_dir = home / ".local" / "share" / "ccmeter"
    config_dir = home / ".config" / "ccmeter"
    config_dir.mkdir(parents=True)
    (config_dir / "config.toml").write_text(CAPS, encoding="utf-8")
    if args.calls:
        import bench_reports

        data_dir.mkdir(parents=True)
        seconds = bench_reports.build(data_dir / "ccmeter.db", args.calls, time.time())
        print(f"built {args.calls:,} calls in {seconds:.1f} s")
    compileall.compile_dir(str(ROOT / "ccmeter"), quiet=1)  # as pip does at install time
    script = home / "ccmeter-script.py"
    script.write_text(SCRIPT, encoding="utf-8")
    python = sys.executable
    copies = {"": env}
    if args.compare is not None:
        compileall.compile_dir(str(args.compare / "ccmeter"), quiet=1)
        copies[" (compare)"] = {**env, "PYTHONPATH": str(args.compare.resolve())}

    cases = [("python -c pass", [python, "-c", "pass"], env)]
    for suffix, copy_env in copies.items():
        cases += [(f"ccmeter --version{suffix}", [python, str(script), "--version"], copy_env),
                  (f"ccmeter run -- true{suffix}", [python, str(script), "run", "--", "true"],
                   copy_env)]
    try:
        timed([python, str(script), "run", "--", "true"], env, repo)  # starts the proxy
        print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
              f"{args.rounds} rounds with the proxy up")
        times: dict[str, list[float]] = {label: [] for label, _, _ in cases}
        for _, argv, case_env in cases * 2:  # warm the page cache and the bytecode
            timed(argv, case_env, repo)
        for index in range(args.rounds):
            for label, argv, case_env in cases[index % len(cases):] + cases[:index % len(cases)]:
                times[label].append(timed(argv, case_env, repo))
        cold: dict[str, list[float]] = {}
        for index in range(args.cold):
            for suffix, copy_env in list(copies.items())[index % 2::] + list(
                    copies.items())[:index % 2]:
                stop_proxies(data_dir)
                cold.setdefault(f"ccmeter run -- true, no proxy up{suffix}", []).append(
                    timed([python, str(script), "run", "--", "true"], copy_env, repo))
    finally:
        stop_proxies(data_dir)

    base = statistics.median(times["python -c pass"])
    version = statistics.median(times["ccmeter --version"])
    print("\n| case | median | min | × python -c pass | × ccmeter --version |")
    print("|---|---:|---:|---:|---:|")
    for label, samples in [*times.items(), *cold.items()]:
        median = statistics.median(samples)
        print(f"| {label} | {median * 1000:.1f} ms | {min(samples) * 1000:.1f} ms | "
              f"{median / base:.2f} × | {median / version:.2f} × |")
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
