"""How fast the meter reads an event stream: the SSE decoder plus the usage state, alone.

Usage::

    python bench/bench_parser.py            # prints MB/s per stream and chunking
    python bench/bench_parser.py --quick

The streams are built with the stand-in's ``message_events``: a long text answer, a tool
call with a large JSON input, and an answer with extended thinking; each is fed to a fresh
``SSEDecoder`` + ``MessageState`` (what ``StreamTee`` does for every chunk, minus the row
write) cut in 1-byte … 16-KB pieces, and as one piece per event (what the network delivers
from the real API). Throughput is the stream's bytes over the best of several runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from standin import message_events, serialize_events  # noqa: E402

from ccmeter.sse import SSEDecoder  # noqa: E402
from ccmeter.usage import MessageState  # noqa: E402

CHUNKINGS: tuple[int | str, ...] = (1, 16, 256, 1024, 4096, 16384, "event")
TARGET_MB_S = 100.0
#: Chunkings the target applies to: what a proxy is handed (one network read: an event or
#: more). Byte-by-byte feeding measures Python's per-call cost, not the parser's.
TARGET_CHUNKINGS = ("event", 256, 1024, 4096, 16384)


def streams() -> dict[str, list[tuple[str, dict]]]:
    prose = ("The meter reads a copy of every byte; the client gets the original. "
             "Ünïcödé — 你好 🎉 and code: `for i in range(10): print(i)`\n") * 200
    tool_input = {"file_path": "/src/app.py", "content": "def f(x):\n    return x * 2\n" * 600}
    return {
        "long text (16 KB)": message_events(text=prose[:16000], output_tokens=4000,
                                            cache_read=90000, input_tokens=2000),
        "tool use (18 KB input)": message_events(text="I'll write the file.",
                                                 tool_use={"name": "Write", "input": tool_input},
                                                 output_tokens=5000),
        "thinking + text": message_events(thinking="Let me think. " * 600, text=prose[:6000],
                                          output_tokens=3500),
    }


def pieces(body: bytes, size: int | str, events: list[tuple[str, dict]]) -> list[bytes]:
    if size == "event":
        return [serialize_events([e]) for e in events]
    assert isinstance(size, int)
    return [body[i:i + size] for i in range(0, len(body), size)]


def meter_once(chunks: list[bytes]) -> MessageState:
    decoder, state = SSEDecoder(), MessageState()
    for chunk in chunks:
        for event in decoder.feed(chunk):
            if event.data is not None:
                state.apply_event(event.name, event.data)
    for event in decoder.flush():
        if event.data is not None:
            state.apply_event(event.name, event.data)
    return state


def measure(quick: bool = False) -> list[dict]:
    results = []
    budget = 0.15 if quick else 0.6  # seconds of feeding per case
    for name, events in streams().items():
        body = serialize_events(events)
        for size in CHUNKINGS:
            chunks = pieces(body, size, events)
            state = meter_once(chunks)
            assert state.stopped and state.usage is not None, name
            best, spent = float("inf"), 0.0
            while spent < budget or best == float("inf"):
                began = time.perf_counter()
                meter_once(chunks)
                took = time.perf_counter() - began
                best, spent = min(best, took), spent + took
            results.append({"stream": name, "bytes": len(body), "chunk": size,
                            "chunks": len(chunks), "mb_s": len(body) / best / 1e6})
    return results


def summary(results: list[dict]) -> dict:
    in_target = [r["mb_s"] for r in results if r["chunk"] in TARGET_CHUNKINGS]
    return {"min_mb_s_realistic": min(in_target),
            "min_mb_s_event_chunks": min(r["mb_s"] for r in results if r["chunk"] == "event"),
            "min_mb_s_1_byte": min(r["mb_s"] for r in results if r["chunk"] == 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the raw results as JSON")
    args = parser.parse_args()
    results = measure(args.quick)
    if args.json:
        print(json.dumps({"results": results, "summary": summary(results)}, indent=1))
        return
    print(f"{'stream':<24} {'bytes':>7} {'chunk':>6} {'pieces':>7} {'MB/s':>8}")
    for r in results:
        print(f"{r['stream']:<24} {r['bytes']:>7} {r['chunk']!s:>6} {r['chunks']:>7} "
              f"{r['mb_s']:>8.1f}")
    s = summary(results)
    verdict = "ok" if s["min_mb_s_realistic"] >= TARGET_MB_S else "MISSED"
    print(f"slowest at event/≥256-byte chunks: {s['min_mb_s_realistic']:.0f} MB/s "
          f"(target ≥ {TARGET_MB_S:.0f}): {verdict}")


if __name__ == "__main__":
    main()
