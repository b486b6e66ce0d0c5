"""How close ccmeter's forecast comes to what calls are billed, on the real Claude Code CLI's
traffic.

Several ``claude -p`` sessions, each run with ``ccmeter run`` in a fresh HOME (the user's
layout, one resident proxy shared by the runs), work through a tool loop — reading files of
50 to 3,000 words, one per turn — against the stand-in API with the real API's prompt
caching (tests/standin_cache.py: a word is a token). Each call's forecast
(``forecast_picousd``) is compared with the input-side cost of the usage the stand-in
billed, priced by the same catalog.

    python bench/forecast_accuracy.py --sessions 4 --files 8

Expiry is not measured here: the proxy stamps calls with the wall clock, and waiting out a
5-minute TTL per session is too slow for a bench; tests/test_forecast.py checks expired
caches on a simulated clock.

Needs the CLI: CCMETER_CLAUDE_BIN=/path/to/claude (or ``claude`` on PATH). Prints one line per
call (kind, forecast, billed, error, the forecast's note) and the median / p90 / max error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from standin import StandIn  # noqa: E402
from standin_cache import Clock, PromptCache  # noqa: E402
from test_forecast_real import script, tool_loop  # noqa: E402

from ccmeter import forecast, pricing  # noqa: E402


def measure(sessions: int, files: int) -> list[dict]:
    claude = os.environ.get("CCMETER_CLAUDE_BIN") or shutil.which("claude")
    if not claude:
        raise SystemExit("the Claude Code CLI is needed: set CCMETER_CLAUDE_BIN")
    home = Path(tempfile.mkdtemp(prefix="ccmeter-forecast-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CCMETER_", "XDG_"))}
    env.update(HOME=str(home), ANTHROPIC_API_KEY="sk-ant-api03-dummy", DISABLE_AUTOUPDATER="1")
    (home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
    work = home / "work"
    work.mkdir()
    clock = Clock()
    cache = PromptCache(clock)
    ccmeter = [sys.executable, "-m", "ccmeter.entry"]
    try:
        with StandIn() as standin:
            for session in range(sessions):
                names = script(work, files, seed=session)
                standin.default = tool_loop(cache, work, names)
                done = subprocess.run(
                    [*ccmeter, "run", "--upstream", standin.url, "--", claude, "-p",
                     "read every part", "--allowedTools", "Read"],
                    env=env, cwd=work, capture_output=True, text=True, timeout=600)
                if done.returncode != 0:
                    raise SystemExit(done.stdout + done.stderr)
        db = home / ".local" / "share" / "ccmeter" / "ccmeter.db"
        conn = sqlite3.connect(db)
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute(
            "SELECT * FROM calls WHERE status = 'ok' ORDER BY started_at")]
        conn.close()
        return rows
    finally:
        subprocess.run([*ccmeter, "stop"], env=env, capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


def report(rows: list[dict]) -> dict:
    prices = pricing.Catalog.bundled().for_endpoint()
    errors = []
    for row in rows:
        billed = forecast.price(prices, row["model"], forecast.Estimate(
            row["input_tokens"], row["cache_write_5m_tokens"], row["cache_write_1h_tokens"],
            row["cache_read_tokens"]), 0)
        got = row["forecast_picousd"]
        if not billed or got is None:
            continue
        error = abs(got - billed) / billed
        errors.append(error)
        print(f"{row['call_kind']:<10} {got / 1e12:>10.6f} {billed / 1e12:>10.6f} "
              f"{error:>7.1%}  {row['forecast_note']}")
    errors.sort()
    summary = {"calls": len(errors), "median": statistics.median(errors),
               "p90": errors[min(len(errors) - 1, int(0.9 * len(errors)))],
               "max": errors[-1]}
    print(f"{summary['calls']} calls: median error {summary['median']:.1%}, "
          f"p90 {summary['p90']:.1%}, max {summary['max']:.1%}")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--files", type=int, default=8)
    args = parser.parse_args()
    report(measure(args.sessions, args.files))


if __name__ == "__main__":
    main()
