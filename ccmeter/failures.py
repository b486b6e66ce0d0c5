"""Why a call failed, in a few words, for the log and for ``run``'s exit summary (pure)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

#: Words in a connection error's message, and what they mean to a user.
_CAUSES = (
    (("refused", "errno 111", "errno 61", "winerror 1225"), "connection refused"),
    (("timed out", "timeout"), "timed out"),
    (("name or service not known", "nodename nor servname", "getaddrinfo",
      "name resolution", "no address associated"), "host not found"),
    (("certificate", "ssl", "tls"), "TLS handshake failed"),
    (("unreachable", "no route"), "network unreachable"),
    (("reset",), "connection reset"),
)


def connection_cause(message: str | None) -> str:
    """A connection error's message (``[Errno 111] Connect call failed …``) in a few words."""
    text = (message or "").lower()
    for words, cause in _CAUSES:
        if any(word in text for word in words):
            return cause
    return (message or "connection failed").strip()[:80]


def reason(status: str, error_type: str | None, http_status: int | None,
           error_message: str | None, *, reached: bool = False) -> str | None:
    """Why a call that ended with ``status`` failed, or None when it did not fail.
    ``reached``: a connection to the upstream was made (it failed later, if at all)."""
    if status != "upstream_error":
        return None
    if error_type == "connection" and not http_status:
        if "client disconnected" in (error_message or "").lower():
            return "the client went away before the answer"
        cause = connection_cause(error_message)
        return f"upstream connection lost ({cause})" if reached else (
            f"upstream unreachable ({cause})")
    if http_status and http_status >= 400:
        return f"upstream answered {http_status}" + (f" ({error_type})" if error_type else "")
    if error_type == "stream_cut":
        return "the answer was cut off"
    return f"upstream error ({error_type or 'unknown'})"


def summary(reasons: Iterable[str | None]) -> str | None:
    """``3 calls failed: upstream unreachable (connection refused)``; None when none did."""
    counts = Counter(r for r in reasons if r)
    total = sum(counts.values())
    if not total:
        return None
    head = f"{total} call{'s' * (total != 1)} failed: "
    if len(counts) == 1:
        return head + next(iter(counts))
    return head + ", ".join(f"{n} {why}" for why, n in counts.most_common())


def metering_off_line(reason: str) -> str:
    """What ``run`` and ``serve`` print when metering does not work (see docs/caps.md)."""
    return (f"ccmeter: WARNING: metering is not working: {reason}. Calls go through "
            "unmetered, or are refused if caps.on_error is \"block\"; ccmeter keeps the rows and "
            "tries again on every call (`ccmeter doctor` shows the state)")
