"""Spending caps, one job a module.

- :mod:`ccmeter.caps.windows` — calendar and rolling windows in the user's zone (pure).
- :mod:`ccmeter.caps.policy` — the ``[caps]`` table as a :class:`Policy`, the caps that apply
  to a call, and where each stands (pure).
- :mod:`ccmeter.caps.messages` — refusal and warning texts, the SSE error event, desktop
  notifications.
- :mod:`ccmeter.caps.hardmode` — a stream's running cost and where hard mode cuts it (pure).
- :mod:`ccmeter.caps.guard` — check-and-reserve through the store (:class:`Guard`), and
  every cap's status for the CLI.
"""

# Until the addon's modules (being split in parallel) import from the modules above, they
# find these names here.
from ccmeter.caps.guard import Decision, Guard
from ccmeter.caps.hardmode import RunningCost, StreamLimit
from ccmeter.caps.messages import sse_error_event, utc_iso
from ccmeter.caps.policy import Policy, parse_policy

__all__ = [
    "Decision",
    "Guard",
    "Policy",
    "RunningCost",
    "StreamLimit",
    "parse_policy",
    "sse_error_event",
    "utc_iso",
]
