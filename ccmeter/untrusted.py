"""Bounds on what the proxy reads from a request or an answer: text fields and JSON nesting.

Pure. Everything a client or an upstream sends is untrusted: a header may be 100 KB long or
carry terminal escape sequences, a body may nest its JSON deeper than Python's parser goes.
Each field is cut to its limit *before* any other work on it, and a document too deep for
:func:`json.loads` is still read, with its deepest values as ``null``: the few fields the
meter needs (model, ids, usage, the session) sit near the top.
"""

from __future__ import annotations

import re
from typing import Any

#: Containers nested deeper than this are read as ``null`` when a document is too deep for
#: ``json.loads`` (about 1000 levels, fewer on a deep call stack).
MAX_DEPTH = 64
#: Work bound of that fallback read (strings and bracket runs scanned, about 0.4 µs each): a
#: document that needs more is not read at all, rather than holding the event loop.
MAX_STEPS = 250_000

# C0 controls (NUL, CR, LF, ESC ...), DEL and the C1 controls (CSI U+009B included).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]+")

# One step of the nesting scan: a whole string, or a run of openers (with the scalars,
# commas and colons between them), or a run of closers (likewise).
_STEP = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[{][^"\]}]*|[\]}][^"\[{]*', re.S)
_OPENER = re.compile(rb"[\[{]")


# Lone surrogates: a header byte that is not UTF-8 (decoded as U+DC80..U+DCFF), or a JSON
# "\ud800" escape. No UTF-8 file, database or terminal takes them.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape_surrogate(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


def text(value: object, limit: int) -> str | None:
    """A string field as it may be stored: its first ``limit`` characters, control
    characters removed, a lone surrogate written as its escape (``\\xff`` for a header's
    byte, ``\\ud800``), surrounding whitespace stripped; None when that leaves nothing
    (or when ``value`` is not a string)."""
    if not isinstance(value, str):
        return None
    cleaned = _CONTROL.sub("", value[:limit]).strip()
    if _SURROGATE.search(cleaned):
        cleaned = _SURROGATE.sub(_escape_surrogate, cleaned)
    return cleaned or None


# A whole terminal escape sequence: CSI (ESC [ or U+009B, parameters, final byte), OSC/DCS/
# SOS/PM/APC strings up to their terminator (BEL or ST), or a two-character ESC sequence.
_ESCAPE = re.compile(
    "(?:\x1b\\[|\x9b)[0-?]*[ -/]*[@-~]?"
    "|(?:\x1b[\\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\\\|\x9c)?"
    "|\x1b[ -/]*[0-~]?"
)


# Line and paragraph separators and the bidirectional overrides, which reorder what follows.
_INVISIBLE = re.compile("[\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(value: object) -> str:
    """``value`` as text a terminal shows as written: whole escape sequences (colours, cursor
    moves, window titles, hyperlinks) and every other control character removed. For names
    read back from a database or a teammate's share file, which an older ccmeter or a hostile
    file may have stored raw."""
    text = value if isinstance(value, str) else str(value)
    return _INVISIBLE.sub("", _CONTROL.sub("", _ESCAPE.sub("", text)))


_RAW_C1 = re.compile("[\x7f-\x9f]")


def json_text(dumped: str) -> str:
    """JSON from ``json.dumps(..., ensure_ascii=False)`` with DEL and the C1 controls (raw
    there; U+009B is a CSI to some terminals) as ``\\u`` escapes: the same document, safe to
    print. Only strings can hold them, so the escape is exact."""
    return _RAW_C1.sub(lambda m: f"\\u{ord(m.group()):04x}", dumped)


def escape_controls(text: str) -> str:
    """Every control character as a visible ``\\u001b``-style escape: the data kept, nothing
    raw for a terminal to act on (JSON's own escape, also used for CSV cells)."""
    return _CONTROL.sub(lambda m: "".join(f"\\u{ord(c):04x}" for c in m.group()), text)


def loads(data: bytes | bytearray | str) -> Any:
    """``json.loads``, except that a document nested too deeply for it is read with every
    container below :data:`MAX_DEPTH` levels replaced by ``null`` (instead of raising
    ``RecursionError``). Raises ``ValueError`` for anything that is not JSON."""
    import json  # here: tables that show names import this module, and never read JSON

    try:
        return json.loads(data)
    except RecursionError:
        pass
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    pruned = prune(raw, MAX_DEPTH)
    if pruned is None:
        raise ValueError("JSON nested too deeply to read")
    try:
        return json.loads(pruned)
    except RecursionError as exc:  # cannot happen after a prune; never let it escape
        raise ValueError("JSON nested too deeply") from exc


def prune(data: bytes, limit: int, max_steps: int = MAX_STEPS) -> bytes | None:
    """``data`` (UTF-8 JSON) with each array or object nested more than ``limit`` levels
    deep replaced by ``null``; None when its brackets do not balance, or when reading it
    takes more than ``max_steps`` steps.

    One pass of a regular expression over strings and runs of brackets: a run of a million
    ``[`` is one step, and the bracket that closes a pruned value is found by counting."""
    out: list[bytes] = []
    depth = 0
    kept = 0  # data[kept:] is not yet in ``out``
    pruned_at: int | None = None  # start of the value being replaced, while inside it
    count = data.count
    for steps, step in enumerate(_STEP.finditer(data)):
        if steps >= max_steps:
            return None
        start, end = step.span()
        first = data[start]
        if first == 0x22:  # a string: brackets inside it are text
            continue
        if first in (0x5B, 0x7B):  # [ {
            n = count(b"[", start, end) + count(b"{", start, end)
            if pruned_at is None and depth + n > limit:
                nth = limit - depth + 1  # this opener goes one level too deep
                for i, opener in enumerate(_OPENER.finditer(data, start, end), 1):
                    if i == nth:
                        pruned_at = opener.start()
                        break
                out.append(data[kept:pruned_at])
            depth += n
            continue
        n = count(b"]", start, end) + count(b"}", start, end)
        if n > depth:
            return None
        if pruned_at is not None and depth - n <= limit:
            close = _nth_closer(data, start, end, depth - limit)
            out.append(b"null")
            kept, pruned_at = close + 1, None
        depth -= n
    if depth or pruned_at is not None:
        return None
    out.append(data[kept:])
    return b"".join(out)


def _nth_closer(data: bytes, start: int, end: int, nth: int) -> int:
    """The position of the ``nth`` closing bracket in ``data[start:end]`` (there are at
    least that many), found by bisecting on counts: no loop over each bracket."""
    low, high = start + 1, end  # the answer p is the least with nth closers in [start, p)

    def closers(stop: int) -> int:
        return data.count(b"]", start, stop) + data.count(b"}", start, stop)

    while low < high:
        mid = (low + high) // 2
        if closers(mid) >= nth:
            high = mid
        else:
            low = mid + 1
    return low - 1
