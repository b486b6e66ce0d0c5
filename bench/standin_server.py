"""The stand-in Anthropic server in a process of its own, for the proxy benchmarks.

Started by ``bench/run.py``; prints one JSON line (``{"port": ..., "ca": ...}``) once it
listens and serves until its stdin closes. Each ``POST /v1/messages`` is answered with a
streamed Message whose shape the client picks with request headers:

- ``x-bench-events: N`` — about N SSE events (text deltas fill the middle);
- ``x-bench-delay-ms: D`` — a pause of D ms before every event after the first.

Every event goes out as its own HTTP chunk (and so its own TLS record), as the real API
flushes them. Bodies are rendered once per shape; each answer gets a fresh message id of
the same length, so call rows stay distinct.

By hand: ``python bench/standin_server.py --http`` serves plain HTTP on a free loopback
port (the JSON line gives its ``url``), so a proxy can be pointed at it with
``ccmeter serve --reverse --upstream http://127.0.0.1:PORT``; without ``--http`` it serves
HTTPS with a throwaway CA (``ca`` in the JSON line). ``--help`` says so.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from standin import (  # noqa: E402
    Recorded,
    Reply,
    StandIn,
    message_events,
    new_message_id,
    serialize_events,
    sse_reply,
)

TEMPLATE_ID = "msg_01" + "B" * 22  # same length as new_message_id()
_lock = threading.Lock()
_shapes: dict[int, tuple[bytes, list[int]]] = {}


def stream_shape(events: int) -> tuple[bytes, list[int]]:
    """(body with TEMPLATE_ID, event sizes) of a text answer with about ``events`` events."""
    with _lock:
        if events not in _shapes:
            # message_start, ping, block start, deltas (+1 ping), block stop, delta, stop
            deltas = max(1, events - 7)
            evs = message_events("claude-opus-4-8", text="x" * 7 * deltas, input_tokens=3000,
                                 cache_read=24000, cache_write_5m=800, output_tokens=deltas * 2,
                                 message_id=TEMPLATE_ID)
            sizes = [len(serialize_events([e])) for e in evs]
            _shapes[events] = (serialize_events(evs), sizes)
        return _shapes[events]


def answer(rec: Recorded) -> Reply:
    events = int(rec.headers.get("x-bench-events", "20"))
    delay = float(rec.headers.get("x-bench-delay-ms", "0")) / 1000
    body, sizes = stream_shape(events)

    def render(_rid: str) -> bytes:
        return body.replace(TEMPLATE_ID.encode(), new_message_id().encode(), 1)

    reply = sse_reply(b"", chunk_sizes=sizes, delay_s=delay)
    reply.body = render
    return reply


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/standin_server.py",
        description="A stand-in Anthropic API for benchmarks and by-hand runs: POST "
        "/v1/messages answers a streamed Message (headers x-bench-events: N events, "
        "x-bench-delay-ms: D between events). Prints one JSON line {port, url, ca} once it "
        "listens on a free 127.0.0.1 port, then serves until its stdin closes (Ctrl-D) or "
        "Ctrl-C.",
        epilog="Example: python bench/standin_server.py --http, then "
        "ccmeter serve --reverse --upstream http://127.0.0.1:PORT")
    parser.add_argument("--http", action="store_true",
                        help="serve plain HTTP (default: HTTPS with a throwaway CA, as "
                        "bench/run.py uses it)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    api = StandIn(tls=not args.http)
    api.default = answer

    def forget() -> None:  # the request log would grow for the whole run
        while not api._closing.wait(5):
            with api._lock:
                api.requests.clear()

    threading.Thread(target=forget, daemon=True).start()
    print(json.dumps({"port": api.port, "url": api.url, "ca": api.ca_path}), flush=True)
    try:
        sys.stdin.read()  # until the parent closes our stdin (or dies), or Ctrl-D
    except KeyboardInterrupt:
        pass
    finally:
        api.close()


if __name__ == "__main__":
    main()
