"""A session repeating itself: the same tool call, the same failing result, or a spend rate
far above the session's own. Pure: fingerprints and numbers in, :class:`Seen` out.

Claude Code sends, with each request after a tool ran, the tool call the model made and its
result (:func:`ccmeter.cachekeys.newest_tool_call` fingerprints both). :class:`LoopDetector`
counts, per session, how many times each tool call was made and each failing result came
back. A request sent again (a retry carries the same conversation: the same number of
messages and the same newest call) is not counted twice.

The spend rate: a session's cost over its last :data:`RATE_WINDOW_S` against its own average
rate before then (once it has :data:`RATE_MIN_HISTORY_S` of history): :data:`RATE_FACTOR`
times above it, and above :data:`RATE_FLOOR_PICOUSD` an hour, is a warning.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from ccmeter.record import Record

#: Warn when a session makes the same tool call this many times (no ``loop`` cap set).
DEFAULT_WARN_AT = 5
RATE_WINDOW_S = 300.0
RATE_MIN_HISTORY_S = 900.0
RATE_FACTOR = 5
RATE_FLOOR_PICOUSD = 1 * 10**12  # $1 an hour: a cheap session is never "running away"
#: Sessions remembered (the least recently seen are forgotten first).
MAX_SESSIONS = 2000
MAX_CALLS_PER_SESSION = 4096


class Seen(Record):
    """Where a session stands after one request."""

    session_id: str
    tool_call: str | None
    repeats: int  # how many times this tool call has been made in the session (0: none)
    failures: int  # how many times this failing result came back (0: not a failure)

    @property
    def tool_name(self) -> str | None:
        return self.tool_call.rpartition(":")[0] if self.tool_call else None


class _Session:
    """What the detector keeps of one session."""

    __slots__ = ("before_total", "calls", "failures", "first_ts", "rate_warned_ts", "recent",
                 "recent_total", "seen_requests", "warned")

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.failures: dict[str, int] = {}
        self.seen_requests: dict[tuple[int, str | None], Seen] = {}
        #: The calls of the last RATE_WINDOW_S (cost by time), and the sum of every cost
        #: before.
        self.recent: deque[tuple[float, int]] = deque()
        self.recent_total = 0
        self.before_total = 0
        self.first_ts: float | None = None
        self.warned: set[str] = set()
        self.rate_warned_ts = 0.0


class LoopDetector:
    """Per-session counts (in memory: a proxy that restarts starts counting again)."""

    def __init__(self) -> None:
        self._sessions: OrderedDict[str, _Session] = OrderedDict()

    def _session(self, session_id: str) -> _Session:
        state = self._sessions.get(session_id)
        if state is None:
            state = self._sessions[session_id] = _Session()
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(session_id)
        return state

    def observe(self, session_id: str, *, messages: int, tool_call: str | None,
                failed_result: str | None) -> Seen:
        """Count one request of ``session_id`` (``messages``: how many its conversation has)."""
        state = self._session(session_id)
        key = (messages, tool_call)
        if key in state.seen_requests:  # the same request again: a retry
            return state.seen_requests[key]
        repeats = failures = 0
        if tool_call is not None:
            repeats = state.calls[tool_call] = state.calls.get(tool_call, 0) + 1
        if failed_result is not None:
            failures = state.failures[failed_result] = state.failures.get(failed_result, 0) + 1
        seen = Seen(session_id, tool_call, repeats, failures)
        if len(state.seen_requests) >= MAX_CALLS_PER_SESSION:
            state.seen_requests.clear()
        state.seen_requests[key] = seen
        return seen

    def forgive(self, session_id: str) -> None:
        """Forget what a session repeated (its caps were paused: it starts counting anew)."""
        state = self._sessions.get(session_id)
        if state is not None:
            state.calls.clear()
            state.failures.clear()
            state.warned.clear()

    def first_warning(self, seen: Seen, threshold: int) -> str | None:
        """The warning to give for ``seen`` at ``threshold`` repeats, once per tool call (or
        failing result) per session; None when there is nothing (new) to say."""
        state = self._session(seen.session_id)
        if (seen.tool_call is not None and seen.repeats >= threshold
                and seen.tool_call not in state.warned):
            state.warned.add(seen.tool_call)
            return (f"session {seen.session_id} made the same {seen.tool_name} call "
                    f"{seen.repeats} times: a loop?")
        if seen.failures >= threshold:
            key = f"failure:{seen.tool_call}"
            if key not in state.warned:
                state.warned.add(key)
                return (f"session {seen.session_id} got the same failing "
                        f"{seen.tool_name or 'tool'} result {seen.failures} times: a loop?")
        return None

    def spent(self, session_id: str, ts: float, cost_picousd: int) -> str | None:
        """Record a finished call's cost; a warning when the session's spend rate over the
        last :data:`RATE_WINDOW_S` is far above its own earlier average (once per window)."""
        state = self._session(session_id)
        if state.first_ts is None or ts < state.first_ts:
            state.first_ts = ts
        state.recent.append((ts, cost_picousd))
        state.recent_total += cost_picousd
        while state.recent and state.recent[0][0] < ts - RATE_WINDOW_S:  # O(1) per call
            _, old = state.recent.popleft()
            state.recent_total -= old
            state.before_total += old
        return rate_warning(session_id, state, ts)


def rate_warning(session_id: str, state: _Session, now: float) -> str | None:
    if now - state.rate_warned_ts < RATE_WINDOW_S:
        return None
    factor = rate_alarm(state.first_ts, state.recent_total, state.before_total, now)
    if factor is None:
        return None
    state.rate_warned_ts = now
    rate = state.recent_total / RATE_WINDOW_S * 3600 / 10**12
    return (f"session {session_id} is spending {rate:.2f} $/h over the last "
            f"{int(RATE_WINDOW_S // 60)} min, "
            + (f"{factor:.0f}x its own average: a loop?" if factor != float("inf") else
               "after spending nothing before: a loop?"))


def rate_alarm(first_ts: float | None, recent: int, before: int, now: float) -> float | None:
    """How many times its own average a session's spend rate over the last
    :data:`RATE_WINDOW_S` is (``recent``: picodollars spent then, ``before``: before then),
    when that is an alarm: at least :data:`RATE_FACTOR` times, above
    :data:`RATE_FLOOR_PICOUSD` an hour, after :data:`RATE_MIN_HISTORY_S` of history."""
    if first_ts is None or now - first_ts < RATE_MIN_HISTORY_S + RATE_WINDOW_S:
        return None
    norm_per_s = before / max(now - RATE_WINDOW_S - first_ts, 1.0)
    rate_per_s = recent / RATE_WINDOW_S
    if rate_per_s * 3600 < RATE_FLOOR_PICOUSD or rate_per_s < RATE_FACTOR * norm_per_s:
        return None
    return rate_per_s / norm_per_s if norm_per_s else float("inf")


def refusal_message(seen: Seen, limit: int) -> str:
    """What Claude Code shows when the loop cap refuses a session's next request."""
    short = seen.session_id
    return (f"ccmeter: loop guard: this session made the same {seen.tool_name} call "
            f"{seen.repeats} times (loop cap {limit}); its requests are refused. "
            f"To let it continue: ccmeter caps pause --session {short} --for 10m")
