"""Claude Code's transcripts, line by line: which API call an assistant line records, with
what usage. Pure: bytes in, dataclasses out; no files, no SQLite.

Claude Code writes one JSON object per line to ``~/.claude/projects/<folder>/<session>.jsonl``
(and subagents' lines to files beside it). Only ``assistant`` lines carry an API call's
``usage``; everything else (prompts, tool output, attachments, snapshots) is skipped after a
byte search, without being parsed, and nothing from those lines is kept.

One API call may be written over several lines (one per content block, the earlier ones
with partial usage written mid-stream), and a resumed session copies earlier lines into its
new file. :func:`merge` folds every line of one call into one :class:`CallRecord`: each count
is the **largest** any line gave (usage counts only grow during a stream, so the largest is
the most complete), the time the **earliest**, and the session, project and agent those of
the earliest line. Largest and earliest do not depend on the order the lines are read in,
nor on how often one is repeated: any order and repetition of a call's lines gives the same
record (``tests/test_transcripts.py`` checks it with hypothesis).

A call is keyed on its message id (``message.id``, one per API answer), else its request
id: every line of an answer carries the message id, while some CLI versions leave
``requestId`` out of some lines, and a key must be the same on every line of a call.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ccmeter import attribution, untrusted
from ccmeter.usage import MAX_COUNT, MAX_ID, MAX_MODEL, Hop, Usage, merge_usage

#: The model name Claude Code gives the messages it writes itself (API errors, interruptions):
#: no API call was billed for them.
SYNTHETIC_MODEL = "<synthetic>"

#: Record types Claude Code writes that carry no API call (seen in 2.1.x and before). A line
#: of any other type is counted as unknown (and skipped).
KNOWN_TYPES = (
    "user", "assistant", "system", "summary", "attachment", "queue-operation", "last-prompt",
    "file-history-snapshot", "progress", "custom-title", "tag", "agent-name", "result",
)
_ASSISTANT = b'"type":"assistant"'
_USAGE = b'"usage"'
_KNOWN_MARKER = re.compile(
    b'"type":"(?:' + b"|".join(n.encode() for n in KNOWN_TYPES if n != "assistant") + b')"')

# What one line is, for the import's counts.
CALL = "call"              # an assistant line with usage: a CallRecord
OTHER = "other"            # a record of a known type that is not a call (prompts, tool output)
SYNTHETIC = "synthetic"    # an assistant line Claude Code wrote itself (model <synthetic>)
MALFORMED = "malformed"    # not a JSON object, or an assistant line whose usage cannot be read
UNKNOWN = "unknown"        # a JSON object of a record type this version does not know
BLANK = "blank"


@dataclass(frozen=True)
class CallRecord:
    """One API call as the transcripts tell it (or several lines of it, merged)."""

    key: str
    started_ts: float
    request_id: str | None
    message_id: str | None
    session_id: str | None
    cwd: str | None
    agent_id: str | None
    sidechain: bool
    model: str | None
    usage: Usage
    stop_reason: str | None
    #: the project ``cwd`` names (set by the importer, which looks for the git repository)
    project: str | None = None


def classify(line: bytes) -> tuple[str, CallRecord | None]:
    """What one transcript line is, and its call when it records one. Never raises."""
    if _ASSISTANT not in line or _USAGE not in line:
        if _KNOWN_MARKER.search(line):
            return OTHER, None
        if not line or line.isspace():
            return BLANK, None
        return _classify_unknown(line), None
    doc = _without_content(line)
    if doc is not None:
        return _call(doc)
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError):
        return MALFORMED, None
    if not isinstance(doc, dict):
        return MALFORMED, None
    if doc.get("type") != "assistant":
        # "assistant" and a usage somewhere deeper (a subagent's progress, a tool's result)
        kind = doc.get("type")
        return (OTHER if kind in KNOWN_TYPES else UNKNOWN), None
    return _call(doc)


_CONTENT = b'"content":'
_STOP_REASON = b',"stop_reason":'
_MESSAGE_USAGE = b'"usage":{'


def _without_content(line: bytes) -> dict[str, Any] | None:
    """An assistant line parsed without its message's ``content`` (most of its bytes, none of
    them needed), when the line has the CLI's shape: ``…"content":[…],"stop_reason":…`` with
    the usage after it. Anything else is None, and the whole line is parsed instead."""
    content = line.find(_CONTENT)
    usage = line.rfind(_MESSAGE_USAGE)
    stop = line.rfind(_STOP_REASON, 0, usage) if usage > 0 else -1
    if not 0 < content < stop:
        return None
    try:
        doc = json.loads(line[:content] + line[stop + 1:])
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or doc.get("type") != "assistant":
        return None
    message = doc.get("message")
    if (not isinstance(message, dict) or "content" in message
            or not isinstance(message.get("usage"), dict) or "model" not in message):
        return None
    return doc


def _classify_unknown(line: bytes) -> str:
    """A line without a known record type's marker: malformed, or an unknown type."""
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError):
        return MALFORMED
    if not isinstance(doc, dict):
        return MALFORMED
    return OTHER if doc.get("type") in KNOWN_TYPES else UNKNOWN


def _call(doc: dict[str, Any]) -> tuple[str, CallRecord | None]:
    message = doc.get("message")
    if not isinstance(message, dict):
        return MALFORMED, None
    model = _label(message.get("model"), MAX_MODEL)
    if model == SYNTHETIC_MODEL:
        return SYNTHETIC, None
    raw_usage = message.get("usage")
    if not isinstance(raw_usage, dict):
        return MALFORMED, None
    request_id = _clean(doc.get("requestId"), MAX_ID)
    message_id = _clean(message.get("id"), MAX_ID)
    key = message_id or request_id
    started_ts = parse_timestamp(doc.get("timestamp"))
    if key is None or started_ts is None:
        return MALFORMED, None
    cwd = doc.get("cwd")
    record = CallRecord(
        key,
        started_ts,
        request_id,
        message_id,
        _label(doc.get("sessionId"), attribution.MAX_ID),
        cwd if isinstance(cwd, str) and len(cwd) <= attribution.MAX_WORKING_DIR else None,
        _label(doc.get("agentId"), attribution.MAX_ID),
        doc.get("isSidechain") is True,
        model,
        read_usage(raw_usage),
        _label(message.get("stop_reason"), 100),
    )
    return CALL, record


#: Cleaned names that repeat line after line (sessions, models, tiers): cleaned once.
_LABELS: dict[tuple[str, int], str | None] = {}


def _label(value: Any, limit: int) -> str | None:
    """:func:`_clean` for a value that repeats, remembered (up to 4,096 of them)."""
    if type(value) is not str:
        return None if value is None else untrusted.text(value, limit)
    key = (value, limit)
    try:
        return _LABELS[key]
    except KeyError:
        pass
    if len(_LABELS) >= 4096:
        _LABELS.clear()
    cleaned = _LABELS[key] = _clean(value, limit)
    return cleaned


def _clean(value: Any, limit: int) -> str | None:
    """:func:`ccmeter.untrusted.text`, with a shortcut for the usual plain ASCII id."""
    if type(value) is str and len(value) <= limit and value.isascii() and value.isprintable():
        return value.strip() or None
    return untrusted.text(value, limit)


def _count(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_COUNT


_SPLIT_KEYS = frozenset(("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"))
_PLAIN_KEYS = frozenset((
    "input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens",
    "cache_creation", "server_tool_use", "service_tier", "inference_geo", "speed", "iterations",
))


def read_usage(raw: dict[str, Any]) -> Usage:
    """``usage.merge_usage(None, raw)``, the same result, faster for the usual usage: plain
    counts, no hops, no output details (anything else goes to ``merge_usage`` itself)."""
    get = raw.get
    if get("iterations") or not _PLAIN_KEYS.issuperset(raw):
        return merge_usage(None, raw)
    inp, total, read, out = (get("input_tokens"), get("cache_creation_input_tokens"),
                             get("cache_read_input_tokens"), get("output_tokens"))
    for value in (inp, total, read, out):
        if value is not None and not (type(value) is int and 0 <= value <= MAX_COUNT):
            return merge_usage(None, raw)
    split = get("cache_creation")
    five: int = total or 0
    one: int = 0
    if split is not None:
        if type(split) is not dict or not _SPLIT_KEYS.issuperset(split):
            return merge_usage(None, raw)
        split_5m, split_1h = (split.get("ephemeral_5m_input_tokens"),
                              split.get("ephemeral_1h_input_tokens"))
        if not (split_5m is None or _count(split_5m)) or not (
                split_1h is None or _count(split_1h)):
            return merge_usage(None, raw)
        if split_5m is not None or split_1h is not None:
            five, one = split_5m or 0, split_1h or 0
            if total is not None and total > five + one:
                five += total - (five + one)
    search = fetch = 0
    tools = get("server_tool_use")
    if tools is not None:
        if type(tools) is not dict:
            return merge_usage(None, raw)
        search, fetch = tools.get("web_search_requests", 0), tools.get("web_fetch_requests", 0)
        if not (_count(search) and _count(fetch)):
            return merge_usage(None, raw)
    return Usage(inp or 0, five, one, read or 0, out or 0, None, search, fetch,
                 _label(get("service_tier"), 100), _label(get("inference_geo"), 100),
                 _label(get("speed"), 100))


def parse_timestamp(value: Any) -> float | None:
    """``2026-11-30T07:42:41.674Z`` as Unix seconds; None when it is not such a time."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.timestamp()


# --- merging a call's lines -----------------------------------------------------------------


def _larger(a: str | None, b: str | None) -> str | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _larger_int(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _hops_key(hops: tuple[Hop, ...]) -> tuple[int, str]:
    return len(hops), repr(hops)


def merge_usages(a: Usage, b: Usage) -> Usage:
    """The most complete usage of two lines of one call: each count the larger, each label
    the larger, the hops of the line with more of them, the problems of both."""
    return Usage(
        input_tokens=max(a.input_tokens, b.input_tokens),
        cache_write_5m_tokens=max(a.cache_write_5m_tokens, b.cache_write_5m_tokens),
        cache_write_1h_tokens=max(a.cache_write_1h_tokens, b.cache_write_1h_tokens),
        cache_read_tokens=max(a.cache_read_tokens, b.cache_read_tokens),
        output_tokens=max(a.output_tokens, b.output_tokens),
        thinking_tokens=_larger_int(a.thinking_tokens, b.thinking_tokens),
        web_search_requests=max(a.web_search_requests, b.web_search_requests),
        web_fetch_requests=max(a.web_fetch_requests, b.web_fetch_requests),
        service_tier=_larger(a.service_tier, b.service_tier),
        inference_geo=_larger(a.inference_geo, b.inference_geo),
        speed=_larger(a.speed, b.speed),
        hops=max(a.hops, b.hops, key=_hops_key),
        problems=tuple(sorted(set(a.problems) | set(b.problems))),
    )


def _first_key(record: CallRecord) -> tuple[Any, ...]:
    """Which line names a call's session, project and agent: the earliest (then the
    smallest, so that the choice never depends on the order lines are read in)."""
    return (record.started_ts, record.session_id or "", record.project or "",
            record.cwd or "", record.agent_id or "", record.sidechain)


def merge(a: CallRecord, b: CallRecord) -> CallRecord:
    """Two lines (or merged records) of one call as one. Commutative, associative and
    idempotent: any order and repetition of a call's lines merges to the same record."""
    first = a if _first_key(a) <= _first_key(b) else b
    usage = a.usage if a.usage == b.usage else merge_usages(a.usage, b.usage)
    return CallRecord(
        min(a.key, b.key),
        first.started_ts,
        _larger(a.request_id, b.request_id),
        _larger(a.message_id, b.message_id),
        first.session_id,
        first.cwd,
        first.agent_id,
        first.sidechain,
        _larger(a.model, b.model),
        usage,
        _larger(a.stop_reason, b.stop_reason),
        first.project,
    )
