"""What caps say to people: refusal and warning texts, the SSE error event a refused or
cut stream ends with, and desktop notifications.

The texts are pure (a :class:`~ccmeter.caps.policy.CapStatus` in, a string out);
:func:`desktop_notify` starts ``osascript`` or ``notify-send`` and never waits for it.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo

from ccmeter.caps.policy import CapStatus, most_constraining
from ccmeter.caps.windows import local_time
from ccmeter.money import cap_usd, spend_usd


def format_spend(spent: int, limit: int) -> str:
    """A spend shown beside its cap (:func:`ccmeter.money.spend_usd`): at the cap's
    precision, floored, with more decimals only where a spend past the cap needs them."""
    return spend_usd(spent, limit)

def format_in(seconds: float) -> str:
    """A time left, ``3h12m`` (minutes rounded up); ``2d3h`` from a day on."""
    minutes = max(0, math.ceil(seconds / 60))
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    return f"{hours}h{mins}m"

def raise_command(status: CapStatus) -> str:
    from shlex import quote  # here: `ccmeter caps` and `watch` import this module

    flag = f"--{status.name} N"
    if status.scope.startswith(("team:", "group:")):
        return f"ccmeter caps set --{status.scope.partition(':')[0]}-{status.name} N"
    if status.scope.startswith("project:"):
        return f"ccmeter caps set --project {quote(status.scope.removeprefix('project:'))} {flag}"
    if status.scope.startswith("session:"):
        return f"ccmeter caps set --per-session {flag}"
    return f"ccmeter caps set {flag}"

def format_reset(resets_at: float, now: float, tz: tzinfo | None = None) -> str:
    """``00:00`` today or tomorrow, ``Mon 00:00`` within a week, ``Dec 1 00:00`` later."""
    at, today = local_time(resets_at, tz), local_time(now, tz)
    days = (at.date() - today.date()).days
    if days <= 1:
        return f"{at:%H:%M}"
    if days < 7:
        return f"{at:%a %H:%M}"
    return f"{at:%b} {at.day} {at:%H:%M}"

def reset_phrase(status: CapStatus, now: float, tz: tzinfo | None = None) -> str:
    if status.resets_at is None:
        return "it does not reset (a whole-session cap)" if status.name == "total" else (
            "resets as spend leaves the rolling window")
    return (f"resets {format_reset(status.resets_at, now, tz)} "
            f"(in {format_in(status.resets_at - now)})")

def refusal_message(status: CapStatus, now: float, tz: tzinfo | None = None) -> str:
    """The text Claude Code shows: ``ccmeter: daily cap $20.00 reached ($20.07 spent);
    resets 00:00 (in 3h12m). Raise it with: ccmeter caps set --daily N``."""
    spent = format_spend(status.spent_picousd, status.limit_picousd)
    return (
        f"ccmeter: {status.label} {cap_usd(status.limit_picousd)} reached "
        f"({spent} spent); {reset_phrase(status, now, tz)}. "
        f"Raise it with: {raise_command(status)}"
    )

def error_refusal_message(reason: str) -> str:
    return (
        f"ccmeter: spending caps cannot be checked ({reason}) and caps.on_error is \"block\". "
        "Fix the database, or allow calls meanwhile with: ccmeter caps set --on-error allow"
    )

def warning_message(status: CapStatus, threshold: float, now: float,
                    tz: tzinfo | None = None) -> str:
    return (
        f"{status.label} at {status.fraction:.0%} (warning at {threshold:.0%}): "
        f"{format_spend(status.spent_picousd, status.limit_picousd)} of "
        f"{cap_usd(status.limit_picousd)}; {reset_phrase(status, now, tz)}"
    )

def summary_note(statuses: Sequence[CapStatus], project: str | None = None) -> str | None:
    """For ``ccmeter run``'s exit line: ``daily cap 31 %`` (the fullest global cap or cap of
    the run's project), or ``daily cap reached``."""
    relevant = [s for s in statuses if s.scope in ("global", f"project:{project}")]
    worst = most_constraining(relevant)
    if worst is None:
        return None
    name = worst.label
    if worst.reached:
        return f"{name} reached"
    return f"{name} {math.floor(worst.fraction * 100)} %"

def sse_error_event(message: str) -> bytes:
    """A well-formed SSE ``error`` event in the API's shape."""
    import json

    data = {"type": "error", "error": {"type": "rate_limit_error", "message": message}}
    return b"event: error\ndata: " + json.dumps(data).encode() + b"\n\n"

def utc_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()

def desktop_notify(text: str) -> None:
    """A desktop notification where there is one; never blocks, never raises."""
    import shutil  # here: `ccmeter caps` and `watch` import this module, rarely notify
    import subprocess

    try:
        if sys.platform == "darwin" and shutil.which("osascript"):
            script = f"display notification {_applescript(text)} with title \"ccmeter\""
            argv = ["osascript", "-e", script]
        elif shutil.which("notify-send"):
            argv = ["notify-send", "--app-name=ccmeter", "ccmeter", text]
        else:
            return
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    except Exception:
        import logging

        logging.getLogger(__name__).debug("desktop notification failed", exc_info=True)

def _applescript(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
