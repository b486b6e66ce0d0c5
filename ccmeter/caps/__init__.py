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
