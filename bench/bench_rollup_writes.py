"""What keeping ``call_rollup`` costs the writer: each call written as the proxy writes it (a
row at message_start, rewritten with its usage at the end, one transaction each), with the
rollup's triggers and without them, in alternating blocks on the same database.

Usage::

    python bench/bench_rollup_writes.py --db /tmp/copy-of/ccmeter.db   # a copy: it writes
    python bench/bench_rollup_writes.py                                # a fresh 100k-call db

Two shapes: calls spread like a normal day's (a few per quarter-hour), and a burst where
every call lands in the same quarter-hour (a tool loop with subagents: each write then
re-sums a quarter-hour that holds up to ``--calls`` calls). The writer runs on its own
thread, off the bytes' path: this is its time per call, not the user's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ccmeter import store  # noqa: E402
from ccmeter.store import rollup  # noqa: E402


def triggers(db, on: bool) -> None:
    names = [r[0] for r in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'call_rollup%'")]
    for name in names:
        db.execute(f"DROP TRIGGER {name}")
    if on:
        for sql in rollup.TRIGGERS:
            db.execute(sql)


def write_calls(db, prefix: str, count: int, start: float, spread: float) -> list[float]:
    """Per call: the message_start row and the final one, each its own transaction."""
    took = []
    for i in range(count):
        ts = start + (i * spread / count)
        uid = f"{prefix}-{i}"
        first = {"call_uid": uid, "started_at": "x", "started_ts": ts, "status": "streaming",
                 "model": "claude-opus-4-8", "project": "bench", "session_id": f"{prefix}-s",
                 "request_id": f"req-{uid}", "updated_ts": ts}
        final = {**first, "status": "ok", "message_id": f"msg-{uid}", "input_tokens": 10,
                 "cache_read_tokens": 40_000, "output_tokens": 300,
                 "cost_picousd": 123_456_789}
        began = time.perf_counter()
        store.upsert_calls(db, [first])
        store.upsert_calls(db, [final])
        took.append(time.perf_counter() - began)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, help="a database to write into (use a copy)")
    parser.add_argument("--calls", type=int, default=500, help="calls per block")
    parser.add_argument("--blocks", type=int, default=3, help="blocks per setting and shape")
    parser.add_argument("--verbose", action="store_true", help="each block's median")
    args = parser.parse_args()
    if args.db is None:
        import bench_reports

        folder = Path(tempfile.mkdtemp(prefix="ccmeter-rollup-writes-"))
        args.db = folder / "ccmeter.db"
        bench_reports.build(args.db, 100_000, time.time())
    db = store.connect(args.db)
    stored = db.execute("SELECT COUNT(*) FROM api_calls").fetchone()[0]
    print(f"{stored:,} calls stored; {args.calls} calls per block, {args.blocks} blocks each")
    now = time.time()
    run = f"run{now:.0f}"  # new calls each run, also on a database an earlier run wrote
    results: dict[tuple[str, bool], list[float]] = {}
    for block in range(args.blocks):
        for shape, spread in (("spread", 6 * 3600.0), ("burst", 600.0)):
            for on in (True, False):
                triggers(db, on)
                start = now + 86400 * (1 + block) + (0 if on else 43200)
                took = write_calls(db, f"{run}-b{block}-{shape}-{on}", args.calls, start, spread)
                results.setdefault((shape, on), []).extend(took)
                if args.verbose:
                    print(f"  block {block} {shape:<7} rollup {on!s:<5} p50 "
                          f"{statistics.median(took) * 1000:.3f} ms")
    triggers(db, True)
    store.rebuild_rollup(db)
    for shape in ("spread", "burst"):
        with_, without = results[(shape, True)], results[(shape, False)]
        p50 = statistics.median(with_) * 1000, statistics.median(without) * 1000
        p99 = (statistics.quantiles(with_, n=100)[98] * 1000,
               statistics.quantiles(without, n=100)[98] * 1000)
        print(f"  {shape:<7} per call (2 writes): p50 {p50[1]:.3f} -> {p50[0]:.3f} ms, "
              f"p99 {p99[1]:.3f} -> {p99[0]:.3f} ms (without -> with the rollup)")
    db.conn.close()


if __name__ == "__main__":
    main()
