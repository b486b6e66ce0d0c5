"""How close the forecast comes on the real Claude Code CLI's traffic: the CLI, run with
``ccmeter run`` in the user's layout, works through a tool loop (reading files of different
sizes) against the stand-in with the API's prompt caching (a word is a token there). Every
call's forecast is compared with the input-side cost of the usage the stand-in billed.

docs/forecast.md quotes the figures ``bench/forecast_accuracy.py`` measures the same way over
more sessions."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys

import pytest
from standin import StandIn, _message_answer
from standin_cache import Clock, PromptCache

from ccmeter import forecast, pricing

WORDS = ["the", "a", "function", "returns", "value", "when", "config", "file", "is", "read",
         "and", "written", "to", "cache", "session", "call", "cost", "token", "proxy", "test",
         "model", "API", "request", "answer"]


def script(folder, files: int, seed: int) -> list[str]:
    """Files of 50 to 3,000 words for the CLI to read, one per turn."""
    rnd = random.Random(seed)
    names = []
    for index in range(files):
        name = f"part{index}.txt"
        text = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(50, 3000)))
        (folder / name).write_text(text + "\n")
        names.append(name)
    return names


def tool_loop(cache: PromptCache, folder, names: list[str]):
    """Main calls read the next file until all are read, then answer; others get text."""

    def answer(rec):
        body = rec.json or {}
        used = cache.usage(body)
        counts = {"input_tokens": used.input_tokens, "cache_write_5m": used.cache_write_5m,
                  "cache_write_1h": used.cache_write_1h, "cache_read": used.cache_read}
        if not body.get("tools"):
            return _message_answer(rec, text="Notes", output_tokens=2, **counts)
        done = sum(1 for m in body.get("messages", []) for b in (
            m.get("content") if isinstance(m.get("content"), list) else [])
            if isinstance(b, dict) and b.get("type") == "tool_result")
        if done < len(names):
            tool = {"name": "Read", "input": {"file_path": str(folder / names[done])}}
            return _message_answer(rec, text="Reading the next part.", tool_use=tool,
                                   output_tokens=20, **counts)
        return _message_answer(rec, text="All parts read.", output_tokens=10, **counts)

    return answer


def errors_of(db) -> list[float]:
    """|forecast - billed input side| / billed input side, per call with both."""
    prices = pricing.Catalog.bundled().for_endpoint()
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        rows = [dict(r) for r in conn.execute(
            "SELECT * FROM calls WHERE forecast_picousd IS NOT NULL AND status = 'ok'")]
    finally:
        conn.close()
    out = []
    for row in rows:
        billed = forecast.price(prices, row["model"], forecast.Estimate(
            row["input_tokens"], row["cache_write_5m_tokens"], row["cache_write_1h_tokens"],
            row["cache_read_tokens"]), 0)
        if billed:
            out.append(abs(row["forecast_picousd"] - billed) / billed)
    return out


@pytest.mark.realclient
def test_the_real_cli_tool_loop_is_forecast_within_ten_percent(residents, user_home, work):
    from realclients import claude_bin

    claude = claude_bin()
    (user_home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
    env = dict(os.environ, ANTHROPIC_API_KEY="sk-ant-api03-dummy-test-key",
               DISABLE_AUTOUPDATER="1")
    names = script(work, 6, seed=3)
    cache = PromptCache(Clock())
    with StandIn() as standin:
        standin.default = tool_loop(cache, work, names)
        result = subprocess.run(
            [sys.executable, "-m", "ccmeter.entry", "run", "--upstream", standin.url, "--",
             claude, "-p", "read every part", "--allowedTools", "Read"],
            env=env, cwd=work, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    errors = errors_of(residents.db_file)
    assert len(errors) >= 7, errors  # the 7 main calls, and the CLI's auxiliary calls
    print(f"forecast error over {len(errors)} calls: median {statistics.median(errors):.1%}, "
          f"max {max(errors):.1%}")
    assert statistics.median(errors) <= 0.10
