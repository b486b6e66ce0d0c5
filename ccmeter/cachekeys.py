"""What a request's prompt cache keys on, as fingerprints: never the text itself. Pure.

The API caches a prompt's prefix in the order tools → system → messages, up to each
``cache_control`` breakpoint; a later call reads the longest cached prefix it repeats byte for
byte. :func:`shape` reads one request body (already parsed) into a :class:`Shape`:

- ``tools`` and ``system``: one fingerprint each (every tool definition / system block, in order);
- ``messages``: a running fingerprint after each message (message *i*'s value covers messages
  0..i), held in memory only, so the next call of the chain can say which message changed;
- ``breakpoints``: where each ``cache_control`` sits, its TTL, and the running fingerprint of
  the whole prefix up to it (tools, system, messages, model);
- ``tool_call`` and ``failed_result``: the newest tool call the request reports back (its name
  and a fingerprint of its input) and, when its result was an error, a fingerprint of that
  result — what :mod:`ccmeter.loops` counts;
- ``points``: the prefix's running fingerprint and its size in bytes (of the canonical JSON)
  after each section (the tools, the system prompt, each message) and at each breakpoint —
  where a cache read can start and end, what :mod:`ccmeter.forecast` sizes a prompt by.

A fingerprint is the first 8 bytes of a BLAKE2b digest of the part's canonical JSON (sorted
keys, no ``cache_control`` marker: moving a breakpoint changes no cached content), as 16 hex
digits. Tool-use ids are left out of a tool call's fingerprint (they are new every call).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

from ccmeter import untrusted

#: The API's default cache lifetime, and the one ``"ttl": "1h"`` asks for.
TTL_5M_S = 300
TTL_1H_S = 3600
#: At most this many breakpoints are kept per call (the API accepts 4).
MAX_BREAKPOINTS = 8
#: A tool name is kept up to this length (it names a tool, never carries prompt text).
MAX_TOOL_NAME = 64

_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str).encode


def _digest(data: bytes) -> bytes:
    return blake2b(data, digest_size=8).digest()


def fingerprint(value: Any) -> str:
    """The fingerprint of one JSON value (16 hex digits)."""
    return _digest(_canonical(value)).hex()


def _canonical(value: Any) -> bytes:
    if isinstance(value, Mapping) and "cache_control" in value:
        value = {k: v for k, v in value.items() if k != "cache_control"}
    try:
        return _encode(value).encode("utf-8", "surrogatepass")
    except (ValueError, TypeError, RecursionError):  # a cycle cannot come from JSON; be safe
        return repr(value).encode("utf-8", "surrogatepass")


def ttl_seconds(marker: Any) -> int:
    """The TTL a ``cache_control`` marker asks for: 1 hour for ``"ttl": "1h"``, else 5 min."""
    if isinstance(marker, Mapping) and marker.get("ttl") == "1h":
        return TTL_1H_S
    return TTL_5M_S


@dataclass(frozen=True)
class Breakpoint:
    """One ``cache_control``: ``at`` is ``tools.3``, ``system.2`` or ``messages.12.0``."""

    at: str
    ttl_s: int
    prefix: str
    #: bytes of the prefix up to and including the marked block (not stored with the row)
    size: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"at": self.at, "ttl": "1h" if self.ttl_s == TTL_1H_S else "5m",
                "prefix": self.prefix}


@dataclass(frozen=True)
class Shape:
    """What one request's cache keys on (see the module docstring)."""

    model: str | None
    tools: str
    system: str
    messages: tuple[bytes, ...]
    breakpoints: tuple[Breakpoint, ...]
    tool_call: str | None = None
    failed_result: str | None = None
    #: (running fingerprint, bytes so far) after each section and at each breakpoint, in
    #: prompt order; the last is the whole prompt
    points: tuple[tuple[str, int], ...] = ()

    @property
    def size(self) -> int:
        """The prompt's size in bytes (canonical JSON, billing marker left out)."""
        return self.points[-1][1] if self.points else 0

    @property
    def shortest_ttl_s(self) -> int | None:
        return min((b.ttl_s for b in self.breakpoints), default=None)

    def key_json(self) -> str:
        """The fingerprints a row keeps (``cache_key_json``): no text, no per-message list."""
        return json.dumps({
            "tools": self.tools,
            "system": self.system,
            "messages": len(self.messages),
            "breakpoints": [b.as_json() for b in self.breakpoints],
        }, separators=(",", ":"))

    def change_from(self, previous: Shape) -> str | None:
        """What this call's cached prefix changed against ``previous`` (the chain's last
        call): ``model``, ``tools``, ``system``, ``message:N`` (the first message that
        differs, counted from 0), or None when everything ``previous`` sent is repeated."""
        if self.model != previous.model:
            return "model"
        if self.tools != previous.tools:
            return "tools"
        if self.system != previous.system:
            return "system"
        for index, (mine, theirs) in enumerate(zip(self.messages, previous.messages,
                                                   strict=False)):
            if mine != theirs:
                return f"message:{index}"
        if len(self.messages) < len(previous.messages):  # messages were dropped at the end
            return f"message:{len(self.messages)}"
        return None


def _blocks(content: Any) -> Sequence[Any]:
    if isinstance(content, list):
        return content
    return [content]


def shape(body: Mapping[str, Any]) -> Shape:
    """The cache shape of a Messages request body (any JSON: what is not a list is read as
    nothing there). Prompt text is hashed here and dropped.

    One running BLAKE2b over the prefix, fed one section at a time — the tool list, the
    system blocks, then each message (its role and blocks) — each encoded once, without its
    ``cache_control`` markers; a breakpoint inside a section hashes the section up to its
    block on a copy (a breakpoint on the section's last block, the usual case, costs nothing)."""
    model = untrusted.text(body.get("model"), 256) if isinstance(body.get("model"), str) else None
    breakpoints: list[Breakpoint] = []
    points: list[tuple[str, int]] = []
    size = 0
    running = blake2b(digest_size=8)
    running.update((model or "").encode("utf-8", "surrogatepass") + b"\0")

    def section(items: Sequence[Any], label: str, head: list[Any], own: bool = False,
                skip: Any = None) -> bytes:
        """Feed one section; its own fingerprint (for the tools and the system prompt).
        ``skip(item)``: a block the API's cache does not key on (its place is kept)."""
        nonlocal size
        if skip is not None:
            items = [None if skip(item) else item for item in items]
        marked = [index for index, item in enumerate(items)  # JSON objects are dicts
                  if isinstance(item, dict) and "cache_control" in item]
        stripped = [_unmarked(item) for item in items] if marked else items
        before = running.copy() if marked else running
        part = _encoded([*head, stripped])
        running.update(len(part).to_bytes(8, "little") + part)
        for index in marked:
            item = items[index]
            if len(breakpoints) >= MAX_BREAKPOINTS:
                break
            if index == len(items) - 1:
                prefix, upto_size = running.copy(), len(part)
            else:
                prefix = before.copy()
                upto = _encoded([*head, stripped[:index + 1]])
                prefix.update(len(upto).to_bytes(8, "little") + upto)
                upto_size = len(upto)
                points.append((prefix.hexdigest(), size + upto_size))
            breakpoints.append(Breakpoint(f"{label}.{index}",
                                          ttl_seconds(item.get("cache_control")),
                                          prefix.hexdigest(), size + upto_size))
        size += len(part)
        points.append((running.hexdigest(), size))
        return _digest(part) if own else b""

    tools = body.get("tools")
    tools_fp = section(tools if isinstance(tools, list) else [], "tools", [], own=True)
    system = body.get("system")
    system_fp = section(_blocks(system) if system is not None else [], "system", [], own=True,
                        skip=_billing_header)
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    cumulative: list[bytes] = []
    for m_index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        content = message.get("content") if isinstance(message, dict) else message
        section(_blocks(content), f"messages.{m_index}", [role])
        cumulative.append(running.copy().digest())
    tool_call, failed = newest_tool_call(messages)
    return Shape(model=model, tools=tools_fp.hex(), system=system_fp.hex(),
                 messages=tuple(cumulative), breakpoints=tuple(breakpoints),
                 tool_call=tool_call, failed_result=failed, points=tuple(points))


#: Claude Code's first system block, ``x-anthropic-billing-header: cc_version=…; cch=…;``,
#: changes with every request (its ``cch`` part) and is read by the API, not cached on: if
#: it were part of the cache key no call would ever read the cache.
BILLING_HEADER = "x-anthropic-billing-header:"


def _billing_header(block: Any) -> bool:
    return (isinstance(block, dict) and isinstance(block.get("text"), str)
            and block["text"].startswith(BILLING_HEADER) and "cache_control" not in block)


def _unmarked(item: Any) -> Any:
    if isinstance(item, Mapping) and "cache_control" in item:
        return {k: v for k, v in item.items() if k != "cache_control"}
    return item


def _encoded(value: Any) -> bytes:
    try:
        return _encode(value).encode("utf-8", "surrogatepass")
    except (ValueError, TypeError, RecursionError):
        return repr(value).encode("utf-8", "surrogatepass")


def newest_tool_call(messages: Sequence[Any]) -> tuple[str | None, str | None]:
    """(``Name:fingerprint`` of the newest tool call a request reports back, the
    fingerprint of its result when that result is an error): the last assistant message's
    ``tool_use`` blocks, when the messages after it (Claude Code may add a reminder of its
    own) carry their results. Several calls in one turn make one fingerprint (names joined
    by ``+``, inputs hashed together)."""
    last = next((i for i in range(len(messages) - 1, -1, -1)
                 if isinstance(messages[i], Mapping)
                 and messages[i].get("role") == "assistant"), None)
    if last is None or last == len(messages) - 1:
        return None, None
    uses = [b for b in _blocks(messages[last].get("content"))
            if isinstance(b, Mapping) and b.get("type") in ("tool_use", "server_tool_use")]
    results = [b for m in messages[last + 1:] if isinstance(m, Mapping)
               for b in _blocks(m.get("content"))
               if isinstance(b, Mapping) and b.get("type") == "tool_result"]
    if not uses or not results:
        return None, None
    names = "+".join(sorted({str(b.get("name"))[:MAX_TOOL_NAME] for b in uses}))
    name = untrusted.text(names, MAX_TOOL_NAME * 2) or "?"
    call = f"{name}:{fingerprint([[b.get('name'), b.get('input')] for b in uses])}"
    errors = [b.get("content") for b in results if b.get("is_error") is True]
    return call, (fingerprint(errors) if errors else None)
