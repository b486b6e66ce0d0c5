"""The fuzz corpus of issue 13, in CI and bounded in time: mutated answers (SSE and JSON, random
splits, bad encodings, wrong types, huge and negative numbers, deep nesting, odd
content-types) and mutated requests, through a real ``mitmdump -s addons/ccmeter.py`` to the
stand-in, in the user's default folders.

For every call: the client gets exactly the bytes the stand-in sent; the call is recorded
exactly once; no row holds negative money; no answer that carried usage is recorded at $0
(unknown is NULL). Seeded (``CCMETER_FUZZ_SEED``), and stopped after ``CCMETER_FUZZ_SECONDS``
(default 45) on this 2-core machine.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass
from typing import Any

import pytest
from capsproxy import write_caps
from standin import ENCODINGS, Reply, StandIn, message_events, message_json, serialize_events
from userproxy import UserProxy, calls

SEED = int(os.environ.get("CCMETER_FUZZ_SEED", "1313"))
SECONDS = float(os.environ.get("CCMETER_FUZZ_SECONDS", "45"))
MAX_CASES = 5000

MODELS = ["claude-opus-4-8", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-8\x00",
          "CLAUDE-OPUS-4-8\r\n", "claude-\x1b[31mopus", "m" * 5000, "no-such-model", 7, None]
CONTENT_TYPES = ["text/event-stream", "text/event-stream; charset=utf-8",
                 "TEXT/EVENT-STREAM", "Text/Event-Stream;charset=UTF-8", "application/json",
                 "APPLICATION/JSON", None, "", "application/octet-stream", "text/plain"]
COUNT_KEYS = ["input_tokens", "output_tokens", "cache_read_input_tokens",
              "cache_creation_input_tokens"]


def odd_value(rng: random.Random) -> Any:
    return rng.choice([-1, -1_000_000, 10**20, 2**63, 2**64 + 5, "100", "", 1.5, 1e308, True,
                       None, [], {}, [1], {"n": 1}, -0.0])


def deep(rng: random.Random) -> str:
    n = rng.choice([50, 999, 1001, 3000, 20_000])
    opener, closer = rng.choice([('{"a":', "}"), ("[", "]"), ('[{"b":[', "]}]")])
    return opener * n + "1" + closer * n


@dataclass
class Case:
    reply: Reply
    request: bytes
    headers: dict[str, str]
    carried_usage: bool  # a 2xx answer with a positive count somewhere in its usage


def answer(rng: random.Random) -> tuple[Reply, bool]:
    """A mutated answer, and whether it carried usage (so that $0 would be a lie)."""
    counts = {"input_tokens": rng.choice([0, 1, 27, 5000, 180_000]),
              "output_tokens": rng.choice([0, 1, 14, 900])}
    extra: dict[str, Any] = {}
    for key in COUNT_KEYS:
        if rng.random() < 0.15:
            extra[key] = odd_value(rng)
    if rng.random() < 0.1:
        extra["cache_creation"] = rng.choice([odd_value(rng), {"ephemeral_5m_input_tokens":
                                                               odd_value(rng)}])
    if rng.random() < 0.05:
        extra["server_tool_use"] = {"web_search_requests": odd_value(rng)}
    values = {**counts, **{k: v for k, v in extra.items() if k in COUNT_KEYS}}
    carried = any(isinstance(v, int) and not isinstance(v, bool) and v > 0
                  for v in values.values())
    model = rng.choice(MODELS)
    message_id = rng.choice([None, "msg_\x1b[2J" + "x" * 3000, "SURROGATE", 5])
    stream = rng.random() < 0.7
    if stream:
        events = message_events("claude-opus-4-8", extra_usage=extra, pings=rng.random() < 0.5,
                                text=rng.choice(["hi", "héllo — 你好 🎉" * 20]), **counts)
        start = events[0][1]["message"]
        start["model"], start["id"] = model, message_id
        body = serialize_events(events, crlf=rng.random() < 0.2)
        body = body.replace(b'"SURROGATE"', b'"msg_\\ud800"')  # a lone surrogate, escaped
        if rng.random() < 0.15:
            body = body.replace(b'"content":[]', b'"content":[' + deep(rng).encode() + b"]", 1)
        if rng.random() < 0.1:  # bytes that are no UTF-8, in a text delta or anywhere
            at = rng.randrange(len(body))
            body = body[:at] + rng.choice([b"\xff\xfe", b"\xc3", b"\x00", b"\r"]) + body[at:]
        if rng.random() < 0.05:
            body = body.replace(b'"message":{', b'"message":[{', 1)  # a wrong type
        if rng.random() < 0.05:
            body = body.replace(b'"usage":{', b'"usage":"{', 1)
        kind = rng.choice([*CONTENT_TYPES[:4], None, "application/json"])
    else:
        doc = message_json("claude-opus-4-8", extra_usage=extra, **counts)
        doc["model"], doc["id"] = model, message_id
        if rng.random() < 0.1:
            doc["usage"] = odd_value(rng)
            carried = False  # no counts in it
        raw = json.dumps(doc)
        if rng.random() < 0.15:
            raw = raw.replace('"content": [', '"content": [' + deep(rng) + ",", 1)
        body = raw.replace('"SURROGATE"', '"msg_\\ud800"').encode()
        if rng.random() < 0.05:
            body = body[: rng.randrange(len(body))]  # truncated JSON
        kind = rng.choice([*CONTENT_TYPES[4:], "text/event-stream"])
    status = 200 if rng.random() < 0.9 else rng.choice([400, 429, 500, 529])
    headers = {} if kind is None else {"content-type": kind}
    encoding = rng.choice([None] * 6 + list(ENCODINGS))
    reply = Reply(status=status, headers=headers, body=body, encoding=encoding,
                  chunked=stream or rng.random() < 0.3,
                  chunk_sizes=rng.choice(["random", 1, 7, 4096, [3, 500]]), seed=rng.randrange(9))
    if encoding is not None and rng.random() < 0.1:  # says gzip, is not
        reply = Reply(status=status, headers={**headers, "content-encoding": "gzip"}, body=body,
                      chunked=reply.chunked, chunk_sizes=reply.chunk_sizes, seed=reply.seed)
    streamed = (kind or "").lower().startswith("text/event-stream")
    if streamed and reply.chunked and rng.random() < 0.05:  # gone mid-answer (a buffered
        # answer cut short is mitmproxy's own 502, metered or not)
        reply.cut_after_bytes = rng.randrange(1, max(2, len(reply.render()[1])))
        reply.cut_reset = rng.random() < 0.5
    return reply, carried and status == 200


def request(rng: random.Random, n: int) -> tuple[bytes, dict[str, str]]:
    """A mutated request. The session header names the case (and is never mutated)."""
    cwd = rng.choice(["/home/dev/proj", "/" + "a/" * rng.choice([10, 3000, 50_000]),
                      "/tmp/\x1b]0;x\x07name\r", ""])
    body: dict[str, Any] = {
        "model": rng.choice(MODELS), "max_tokens": rng.choice([1, 1000, -5, "x", None]),
        "stream": rng.choice([True, False, "yes", None]),
        "metadata": rng.choice([{"user_id": json.dumps({"session_id": "inner"})},
                                {"user_id": "{" * 3000}, {"user_id": 5}, [], None]),
        "system": rng.choice([f"Primary working directory: {cwd}\n",
                              [{"type": "text", "text": f" - Primary working directory: {cwd}"}],
                              7, [{"text": None}]]),
        "tools": rng.choice([[{"name": "Read"}], [], None, "x"]),
        "messages": [{"role": "user", "content": "hi"}],
    }
    raw = json.dumps(body)
    if rng.random() < 0.15:
        raw = raw.replace('"content": "hi"', '"content": ' + deep(rng), 1)
    data = raw.encode()
    if rng.random() < 0.05:
        data = data[: rng.randrange(len(data))]
    if rng.random() < 0.03:
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    headers = {"x-claude-code-session-id": f"fuzz-{n:05d}"}
    if rng.random() < 0.2:
        headers["x-ccmeter-project"] = rng.choice(["\x1b[31mred", "p" * 9000, " ", "ok"])
    return data, headers


@pytest.mark.parametrize("mode", ["plain", "hard cap"])
def test_fuzzed_answers_and_requests_keep_bytes_rows_and_money_right(mode, user_dirs, tmp_path):
    """Two thirds of the time without caps, a third under a hard cap too high to cut (which
    forwards whole events only: another byte path)."""
    rng = random.Random(SEED + (mode == "hard cap"))
    seconds = SECONDS * (2 / 3 if mode == "plain" else 1 / 3)
    if mode == "hard cap":
        write_caps(user_dirs.config_dir, {"daily": "100000", "mode": "hard", "notify": False})
    cases: dict[str, Case] = {}
    failures: list[str] = []
    with StandIn() as standin, UserProxy(standin.url, tmp_path) as proxy:
        deadline = time.monotonic() + seconds
        n = 0
        while time.monotonic() < deadline and n < MAX_CASES:
            reply, carried = answer(rng)
            body, headers = request(rng, n)
            standin.enqueue(reply)
            status, _, got = proxy.post(body, headers)
            sent = reply.render()[1]
            if reply.cut_after_bytes is not None:  # what came before the cut, unchanged
                sent = sent[:reply.cut_after_bytes]
                got = got if sent.startswith(got) else b"not a prefix: " + got
                sent = got if sent.startswith(got) else sent
            if (status, got) != (reply.status, sent):
                failures.append(f"case {n}: client got {status}, {len(got)} bytes; "
                                f"the stand-in sent {reply.status}, {len(sent)} bytes")
            cases[headers["x-claude-code-session-id"]] = Case(reply, body, headers, carried)
            n += 1
        reached = len(standin.messages_requests())
        rows = calls(user_dirs.db_file, expect=n, timeout=60)
        alive = proxy.proc.poll() is None
    assert alive and not failures, failures[:10]
    assert reached == n
    by_session: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_session.setdefault(row["session_id"], []).append(row)
    assert len({r["call_uid"] for r in rows}) == len(rows) == n, (len(rows), n)
    assert sorted(by_session) == sorted(cases) and all(len(v) == 1 for v in by_session.values())
    negative = [r["session_id"] for r in rows if (r["cost_picousd"] or 0) < 0]
    zero = [r["session_id"] for r in rows
            if r["cost_picousd"] == 0 and cases[r["session_id"]].carried_usage]
    assert not negative, negative[:10]
    assert not zero, [(s, by_session[s][0]["pricing_note"]) for s in zero[:10]]
    print(f"fuzz ({mode}): seed {SEED}, {n} calls in {seconds:.0f} s, "
          f"{sum(r['cost_picousd'] is None for r in rows)} unpriced")
