"""Prompt caching for the stand-in API, with the real API's semantics on a test's clock.

What the API does (protocol-notes, anthropic-pricing §3), reproduced:

- the prompt is a prefix in the order tools → system → messages (Claude Code's
  ``x-anthropic-billing-header`` system block, which changes every request, left out), cut
  into blocks (each tool definition, each system block, each message's content blocks; a
  message's role goes with its first block); the model is part of every key;
- a block with ``cache_control`` is a breakpoint: the prefix up to it is written with its TTL
  (``{"ttl": "1h"}``: one hour, else five minutes);
- a request reads the longest prefix in the cache that it repeats exactly, looked for at each
  breakpoint and at the block boundaries up to 20 blocks before it (the API's lookback); a hit
  makes that entry live its TTL again from this request's start;
- ``usage``: ``cache_read_input_tokens`` = the prefix read, ``cache_creation`` = what lies
  between it and the last breakpoint, split by the TTL of the breakpoint each part ends at
  (``ephemeral_5m_input_tokens`` / ``ephemeral_1h_input_tokens``), ``input_tokens`` = the rest.

Tokens are counted so a test can count them by hand: one token per whitespace-separated word
of every string in a block (keys and ``type`` values not counted), at least one per block.

Usage::

    clock = Clock()
    cache = PromptCache(clock)
    standin.default = cache.answer()        # every /v1/messages call answered with its usage
    ...
    clock.advance(301)                      # five minutes and a second later
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from standin import Recorded, Reply, _message_answer

LOOKBACK_BLOCKS = 20


class Clock:
    """A clock the test moves: starts at the real time, ``advance`` jumps ahead."""

    def __init__(self, start: float | None = None) -> None:
        self._offset = 0.0
        self._start = start

    def now(self) -> float:
        return (self._start if self._start is not None else time.time()) + self._offset

    def advance(self, seconds: float) -> None:
        self._offset += seconds


def tokens_of(value: Any) -> int:
    """Words in every string of ``value`` (its keys not counted)."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, dict):
        return sum(tokens_of(v) for k, v in value.items() if k not in ("cache_control", "type"))
    if isinstance(value, list):
        return sum(tokens_of(v) for v in value)
    return 0


def _canonical(block: Any) -> bytes:
    if isinstance(block, dict):
        block = {k: v for k, v in block.items() if k != "cache_control"}
    return json.dumps(block, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Block:
    key: bytes  # the running hash of the prefix up to and including this block
    tokens: int  # the prefix's tokens up to and including this block
    ttl_s: int | None  # a breakpoint's TTL, None for a plain block


def blocks(body: dict[str, Any]) -> list[Block]:
    """The request's prompt as blocks, each with its prefix's key and size."""
    running = hashlib.sha256(str(body.get("model")).encode()).digest()
    total = 0
    out: list[Block] = []

    def add(block: Any, prefix: bytes = b"") -> None:
        nonlocal running, total
        running = hashlib.sha256(running + prefix + _canonical(block)).digest()
        total += max(1, tokens_of(block))
        marker = block.get("cache_control") if isinstance(block, dict) else None
        ttl = None
        if isinstance(marker, dict):
            ttl = 3600 if marker.get("ttl") == "1h" else 300
        out.append(Block(running, total, ttl))

    for tool in body.get("tools") or []:
        add(tool)
    system = body.get("system")
    for block in ([system] if isinstance(system, str) else system or []):
        if (isinstance(block, dict) and str(block.get("text", "")).startswith(
                "x-anthropic-billing-header:")):
            continue  # Claude Code's billing marker (new every request) is not cached on
        add(block)
    for message in body.get("messages") or []:
        content = message.get("content")
        items = [content] if isinstance(content, str) else content or []
        for index, block in enumerate(items):
            add(block, (str(message.get("role")) if index == 0 else "").encode())
    return out


@dataclass(frozen=True)
class CacheUsage:
    input_tokens: int
    cache_write_5m: int
    cache_write_1h: int
    cache_read: int


class PromptCache:
    """The API's prompt cache, on ``clock`` (see the module docstring)."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self._entries: dict[bytes, tuple[float, int]] = {}  # key -> (expires, ttl)
        self._lock = threading.Lock()
        self.usages: list[CacheUsage] = []

    def usage(self, body: dict[str, Any]) -> CacheUsage:
        now = self.clock.now()
        prompt = blocks(body)
        breaks = [i for i, b in enumerate(prompt) if b.ttl_s is not None]
        with self._lock:
            hit = -1
            for bp in breaks:
                for i in range(bp, max(-1, bp - LOOKBACK_BLOCKS - 1), -1):
                    entry = self._entries.get(prompt[i].key)
                    if entry is not None and entry[0] > now and i > hit:
                        hit = i
                        break
            read = prompt[hit].tokens if hit >= 0 else 0
            if hit >= 0:
                ttl = self._entries[prompt[hit].key][1]
                self._entries[prompt[hit].key] = (now + ttl, ttl)
            w5 = w1 = 0
            done = read
            for bp in breaks:
                if bp <= hit:
                    continue
                block = prompt[bp]
                ttl = block.ttl_s or 300
                if ttl == 3600:
                    w1 += block.tokens - done
                else:
                    w5 += block.tokens - done
                done = block.tokens
                self._entries[block.key] = (now + ttl, ttl)
        total = prompt[-1].tokens if prompt else 0
        found = CacheUsage(total - done, w5, w1, read)
        self.usages.append(found)
        return found

    def answer(self, reply: Callable[[Recorded], dict[str, Any]] | None = None
               ) -> Callable[[Recorded], Reply]:
        """A stand-in handler: every messages call answered (stream or JSON, as asked) with
        the usage this cache gives it; ``reply(rec)`` may add ``message_events`` arguments
        (text, tool_use, output_tokens…)."""

        def handle(rec: Recorded) -> Reply:
            body = rec.json or {}
            found = self.usage(body)
            extra = reply(rec) if reply is not None else {}
            return _message_answer(rec, input_tokens=found.input_tokens,
                                   cache_write_5m=found.cache_write_5m,
                                   cache_write_1h=found.cache_write_1h,
                                   cache_read=found.cache_read, **extra)

        return handle
