"""Token usage of one Claude Messages API answer, built from stream events or a JSON body.

Pure: dicts in, dataclasses out. The rules come from the API's own semantics (see
docs/architecture.md): ``message_start`` carries the input side, every ``message_delta``
carries *cumulative* counts, so a later non-null value replaces an earlier one and nothing
is ever added up across events.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ccmeter import untrusted

#: Largest token (or request) count one answer may report. A single call's prompt is at most
#: a few million tokens; a count beyond this, a negative one or one that is not an integer is
#: not metered: the usage carries a problem, and the call is priced as unknown (NULL), never
#: as negative or zero money.
MAX_COUNT = 1_000_000_000

#: Length limits of the strings an answer names (ids, model, reasons) before they are kept.
MAX_ID = 128
MAX_MODEL = 256
MAX_LABEL = 100
MAX_ERROR_MESSAGE = 500


@dataclass(frozen=True)
class TokenCounts:
    """The five billed token categories of one sampling hop."""

    input_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0
    output_tokens: int = 0

    @property
    def cache_write_tokens(self) -> int:
        return self.cache_write_5m_tokens + self.cache_write_1h_tokens

    @property
    def prompt_tokens(self) -> int:
        """Whole prompt size: what long-context thresholds are tested against."""
        return self.input_tokens + self.cache_write_tokens + self.cache_read_tokens


@dataclass(frozen=True)
class Hop:
    """A sampling hop billed at another model's rates (advisor or server-side fallback)."""

    kind: str
    model: str
    tokens: TokenCounts


@dataclass(frozen=True)
class Usage(TokenCounts):
    """Everything in an answer's ``usage`` that can change its price."""

    thinking_tokens: int | None = None
    web_search_requests: int = 0
    web_fetch_requests: int = 0
    service_tier: str | None = None
    inference_geo: str | None = None
    speed: str | None = None
    hops: tuple[Hop, ...] = ()
    #: Why these counts cannot be priced (``"input_tokens=-1000000"``, an unread event):
    #: non-empty means the cost is unknown. A later valid value of a field clears its entry.
    problems: tuple[str, ...] = ()

    @property
    def tokens(self) -> TokenCounts:
        return TokenCounts(
            self.input_tokens,
            self.cache_write_5m_tokens,
            self.cache_write_1h_tokens,
            self.cache_read_tokens,
            self.output_tokens,
        )


class _Counts:
    """Reads counts out of usage dicts, noting each value that is not a count."""

    __slots__ = ("bad", "good")

    def __init__(self) -> None:
        self.bad: dict[str, str] = {}
        self.good: set[str] = set()

    def get(self, raw: dict[str, Any], key: str, where: str = "") -> int | None:
        """The count at ``raw[key]``: None when absent or null; else a non-negative int up to
        MAX_COUNT, or None with the bad value noted under its name."""
        value = raw.get(key)
        if value is None:
            return None
        name = where + key
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT:
            self.good.add(name)
            return value
        shown = repr(value) if isinstance(value, int | float) else type(value).__name__
        self.bad[name] = f"{name}={shown[:24]}"
        return None


def _int(value: Any) -> int | None:
    """An informational count (not billed): kept when it is a sane one, else dropped."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT:
        return value
    return None


def _str(value: Any, limit: int = MAX_LABEL) -> str | None:
    return untrusted.text(value, limit)


def _split_cache_writes(raw: dict[str, Any], previous: Usage | None,
                        counts: _Counts | None = None, where: str = "") -> tuple[int, int] | None:
    """Return (5m, 1h) cache-write tokens from a usage dict, or None if it says nothing.

    When only the total is known, the part not explained by an earlier split counts as
    5-minute writes: the cheaper reading, and the one the pricing notes recommend.
    """
    counts = counts or _Counts()
    total = counts.get(raw, "cache_creation_input_tokens", where)
    split = raw.get("cache_creation")
    five = one = None
    if isinstance(split, dict):
        five = counts.get(split, "ephemeral_5m_input_tokens", where)
        one = counts.get(split, "ephemeral_1h_input_tokens", where)
    if five is not None or one is not None:
        five, one = five or 0, one or 0
        if total is not None and total > five + one:
            five += total - (five + one)
        return five, one
    if total is None:
        return None
    prev_1h = previous.cache_write_1h_tokens if previous else 0
    one = min(prev_1h, total)
    return total - one, one


def _hops(raw: dict[str, Any], counts: _Counts) -> tuple[Hop, ...] | None:
    iterations = raw.get("iterations")
    if not isinstance(iterations, list):
        return None
    hops = []
    for item in iterations:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        model = _str(item.get("model"), MAX_MODEL)
        if kind not in ("advisor_message", "fallback_message") or model is None:
            continue
        where = f"{kind}."
        split = _split_cache_writes(item, None, counts, where) or (0, 0)
        hops.append(
            Hop(
                kind=kind,
                model=model,
                tokens=TokenCounts(
                    input_tokens=counts.get(item, "input_tokens", where) or 0,
                    cache_write_5m_tokens=split[0],
                    cache_write_1h_tokens=split[1],
                    cache_read_tokens=counts.get(item, "cache_read_input_tokens", where) or 0,
                    output_tokens=counts.get(item, "output_tokens", where) or 0,
                ),
            )
        )
    return tuple(hops)


def merge_usage(previous: Usage | None, raw: dict[str, Any]) -> Usage:
    """Overlay one ``usage`` object on what is known so far: later non-null values win.

    A billed count that is negative, huge or not an integer is not taken: it is named in
    ``problems`` (the cost is then unknown) until a later valid value replaces it."""
    base = previous or Usage()
    counts = _Counts()
    changes: dict[str, Any] = {}
    for key, name in (
        ("input_tokens", "input_tokens"),
        ("cache_read_input_tokens", "cache_read_tokens"),
        ("output_tokens", "output_tokens"),
    ):
        value = counts.get(raw, key)
        if value is not None:
            changes[name] = value
    split = _split_cache_writes(raw, previous, counts)
    if split is not None:
        changes["cache_write_5m_tokens"], changes["cache_write_1h_tokens"] = split
    details = raw.get("output_tokens_details")
    if isinstance(details, dict) and _int(details.get("thinking_tokens")) is not None:
        changes["thinking_tokens"] = _int(details.get("thinking_tokens"))
    tools = raw.get("server_tool_use")
    if isinstance(tools, dict):
        for key in ("web_search_requests", "web_fetch_requests"):
            value = counts.get(tools, key)
            if value is not None:
                changes[key] = value
    for key in ("service_tier", "inference_geo", "speed"):
        text = _str(raw.get(key))
        if text is not None:
            changes[key] = text
    hops = _hops(raw, counts)
    if hops is not None:
        changes["hops"] = hops
    if counts.bad or (base.problems and counts.good):
        kept = [p for p in base.problems if p.split("=", 1)[0] not in counts.good]
        changes["problems"] = (*kept, *(p for p in counts.bad.values() if p not in kept))
    return replace(base, **changes)


def with_problem(usage: Usage | None, problem: str) -> Usage:
    """``usage`` (or an empty one) marked as not priceable, for ``problem``."""
    base = usage or Usage()
    return base if problem in base.problems else replace(base, problems=(*base.problems, problem))


@dataclass
class MessageState:
    """What a metered answer has told us so far; filled event by event."""

    message_id: str | None = None
    model: str | None = None
    usage: Usage | None = None
    stop_reason: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    started: bool = False
    stopped: bool = False
    events_seen: int = 0
    unknown_events: set[str] = field(default_factory=set)
    #: The model an answer began with when a ``fallback`` block handed it to another model
    #: (``model`` is then the one that served it, as the official SDK relabels it).
    fallback_from: str | None = None

    def apply_event(self, event_type: str, data: dict[str, Any]) -> None:
        """Fold one decoded stream event into the state. Unknown events are skipped."""
        self.events_seen += 1
        if event_type == "message_start":
            message = data.get("message")
            if isinstance(message, dict):
                self.started = True
                self.message_id = _str(message.get("id"), MAX_ID) or self.message_id
                self.model = _str(message.get("model"), MAX_MODEL) or self.model
                if isinstance(message.get("usage"), dict):
                    self.usage = merge_usage(self.usage, message["usage"])
        elif event_type == "message_delta":
            delta = data.get("delta")
            if isinstance(delta, dict) and _str(delta.get("stop_reason")):
                self.stop_reason = _str(delta.get("stop_reason"))
            if isinstance(data.get("usage"), dict):
                self.usage = merge_usage(self.usage, data["usage"])
        elif event_type == "message_stop":
            self.stopped = True
        elif event_type == "error":
            error = data.get("error")
            if isinstance(error, dict):
                self.error_type = _str(error.get("type")) or "error"
                self.error_message = _str(error.get("message"), MAX_ERROR_MESSAGE)
            else:
                self.error_type = "error"
        elif event_type == "content_block_start":
            block = data.get("content_block")
            if isinstance(block, dict) and block.get("type") == "fallback":
                self._fall_back(block)
        elif event_type not in ("ping", "content_block_delta",
                                "content_block_stop"):
            self.unknown_events.add(event_type[:64])

    def unread(self, event_type: str, why: str) -> None:
        """An event the meter could not read (``why``: too large): when it is one that
        carries usage, the call's cost is unknown rather than what the other events say."""
        if event_type in ("message_start", "message_delta", "message", "stream"):
            self.usage = with_problem(self.usage, f"{event_type} {why}")

    def _fall_back(self, block: dict[str, Any]) -> None:
        """A ``fallback`` block: what follows is served by ``block["to"]["model"]``; the last
        such block names the model that served the answer (and prices it)."""
        target, source = block.get("to"), block.get("from")
        served = _str(target.get("model")) if isinstance(target, dict) else None
        if served is None:
            return
        if self.fallback_from is None:
            declined = _str(source.get("model")) if isinstance(source, dict) else None
            self.fallback_from = declined or self.model
        self.model = served

    def apply_message(self, body: dict[str, Any]) -> None:
        """Fold a complete non-streaming Message (or error) JSON body into the state."""
        if body.get("type") == "error":
            self.apply_event("error", body)
            return
        self.started = True
        self.stopped = True
        self.message_id = _str(body.get("id"), MAX_ID) or self.message_id
        self.model = _str(body.get("model"), MAX_MODEL) or self.model
        self.stop_reason = _str(body.get("stop_reason")) or self.stop_reason
        content = body.get("content")
        for block in content if isinstance(content, list) else ():
            if isinstance(block, dict) and block.get("type") == "fallback":
                self._fall_back(block)
        if isinstance(body.get("usage"), dict):
            self.usage = merge_usage(self.usage, body["usage"])
