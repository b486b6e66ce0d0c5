"""The caps that need no spend sums: one call's forecast, and the plan windows. Pure.

- **per-call** (``[caps] per_call``, ``[caps.projects.NAME] per_call``): a call whose
  forecast input-side cost (:mod:`ccmeter.forecast`) is above the cap is refused before it
  is sent, told the forecast, why, and the command that lets its session through;
- **plan windows** (``[caps] plan_5h``, ``plan_7d``: a utilization in percent): from the
  newest ``anthropic-ratelimit-unified-*`` headers the proxy saw (:class:`PlanSeen`), calls
  are refused once a window's utilization reached its cap, until the window resets; a
  warning is logged (and notified) once per window when it passes ``plan_warn_at``.
"""

from __future__ import annotations

from collections.abc import Mapping
from shlex import quote
from typing import Any

from ccmeter.caps.messages import format_in
from ccmeter.caps.policy import Policy
from ccmeter.money import cap_usd, spend_usd

#: A plan window's name as people say it.
WINDOW_NAMES = {"5h": "5-hour", "7d": "weekly"}


def per_call_refusal(policy: Policy, *, project: str | None, session_id: str | None,
                     forecast_picousd: int | None, note: str | None) -> str | None:
    """The refusal text when the call's forecast is above its per-call cap, else None (no
    cap, or no forecast: an unpriced model cannot be forecast, and is let through)."""
    limit = policy.per_call_limit(project)
    if limit is None or forecast_picousd is None or forecast_picousd <= limit:
        return None
    scope = "" if limit == policy.per_call_picousd else f" for project {project}"
    why = f": {note}" if note else ""
    raise_it = ("ccmeter caps set --per-call N" if scope == "" else
                f"ccmeter caps set --project {quote(project or '')} --per-call N")
    if session_id:
        let = (f"ccmeter caps pause --session {session_id} --for 1h and resume it (claude "
               f"--resume {session_id}), or raise the cap: {raise_it}")
    else:
        let = f"ccmeter caps pause --for 10m, or raise the cap: {raise_it}"
    cost = spend_usd(forecast_picousd, limit)
    return (f"ccmeter: per-call cap{scope} {cap_usd(limit)}: this call would cost about "
            f"{cost} before any output{why}. To let it through: {let}")


class PlanSeen:
    """The newest utilization and reset of each plan window the proxy saw in an answer."""

    def __init__(self) -> None:
        #: window -> (utilization, resets at, seen at)
        self.windows: dict[str, tuple[float, float, float]] = {}
        self._warned: set[tuple[str, float]] = set()

    def saw(self, row: Mapping[str, Any]) -> None:
        """A call's row: keep its plan columns if they are the newest."""
        ts = row.get("started_ts") or 0.0
        for name in ("5h", "7d"):
            util, reset = row.get(f"plan_{name}_utilization"), row.get(f"plan_{name}_reset")
            if util is None or reset is None:
                continue
            old = self.windows.get(name)
            if old is None or ts >= old[2]:
                self.windows[name] = (float(util), float(reset), float(ts))

    def current(self, name: str, now: float) -> tuple[float, float] | None:
        """(utilization, resets at) of window ``name`` if it has not reset since."""
        found = self.windows.get(name)
        if found is None or found[1] <= now:
            return None
        return found[0], found[1]

    def refusal(self, policy: Policy, now: float) -> str | None:
        """The refusal text when a plan window reached its cap, else None."""
        for name, limit in policy.plan_caps():
            found = self.current(name, now)
            if found is None or found[0] < limit:
                continue
            util, reset = found
            return (f"ccmeter: plan {WINDOW_NAMES[name]} window at {util:.0%}, cap "
                    f"{limit:.0%}; it resets in {format_in(reset - now)}. To go on: "
                    f"ccmeter caps pause --for 1h, or ccmeter caps unset plan_{name}")
        return None

    def warning(self, policy: Policy, now: float) -> str | None:
        """A warning, once per window and reset, when a window passed ``plan_warn_at``."""
        for name in ("5h", "7d"):
            found = self.current(name, now)
            if found is None or found[0] < policy.plan_warn_at:
                continue
            key = (name, found[1])
            if key in self._warned:
                continue
            self._warned.add(key)
            return (f"plan {WINDOW_NAMES[name]} window at {found[0]:.0%} "
                    f"(warning at {policy.plan_warn_at:.0%}); it resets in "
                    f"{format_in(found[1] - now)} (see: ccmeter plan)")
        return None
