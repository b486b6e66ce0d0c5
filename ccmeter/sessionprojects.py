"""Which project each session belongs to, as the calls of one proxy reveal it.

Claude Code names its working directory only in the main prompt's system text; the calls
that can come first in a session (a title, a quota check, a Haiku helper) name none. Those
calls take their session's project when a later call reveals it: a row already written
without one is re-written with it (through the call writer, as every row is).
"""

from __future__ import annotations

from typing import Any

#: Sessions remembered (the oldest are forgotten first).
MAX_SESSIONS = 10_000
#: Sessions, and rows per session, remembered while a session's project is unknown.
MAX_WAITING_SESSIONS = 1_000
MAX_ROWS_PER_SESSION = 100
#: The columns a row re-written with its project carries: the key and every NOT NULL column
#: without a default, at their latest values (so re-writing them changes nothing else).
_REQUIRED = ("call_uid", "started_at", "started_ts", "status", "updated_ts")


class SessionProjects:
    """Session id -> project, and the rows written before a session's project was known."""

    def __init__(self) -> None:
        self._projects: dict[str, str] = {}
        #: session id -> {call_uid: its latest row's NOT NULL columns} of the rows written
        #: with no project (an upsert names them all, even when it only updates)
        self._waiting: dict[str, dict[str, dict[str, Any]]] = {}

    def resolve(self, session_id: str | None,
                project: str | None) -> tuple[str | None, list[dict[str, Any]]]:
        """The project of a call of ``session_id`` that names ``project`` (or none), and the
        partial rows that give the session's earlier project-less rows that project."""
        if session_id is None:
            return project, []
        if not project:
            return self._projects.get(session_id), []
        known = self._projects.get(session_id)
        self._projects[session_id] = project
        if known is None and len(self._projects) > MAX_SESSIONS:
            del self._projects[next(iter(self._projects))]
        waiting = self._waiting.pop(session_id, None)
        if not waiting:
            return project, []
        return project, [{**columns, "project": project} for columns in waiting.values()]

    def project_of(self, session_id: str | None) -> str | None:
        return self._projects.get(session_id) if session_id is not None else None

    def written(self, row: dict[str, Any]) -> None:
        """Note a row going to the database: one with a session but no project gets the
        session's project if it is known by now, else waits for it."""
        session_id = row.get("session_id")
        if session_id is None or row.get("project") is not None:
            return
        known = self._projects.get(session_id)
        if known is not None:
            row["project"] = known
            return
        waiting = self._waiting.get(session_id)
        if waiting is None:
            if len(self._waiting) >= MAX_WAITING_SESSIONS:
                del self._waiting[next(iter(self._waiting))]
            waiting = self._waiting[session_id] = {}
        if len(waiting) < MAX_ROWS_PER_SESSION or row["call_uid"] in waiting:
            waiting[row["call_uid"]] = {key: row[key] for key in _REQUIRED}
