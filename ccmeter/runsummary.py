"""The line ``ccmeter run`` prints when its command exits: what the run cost, today's total,
the fullest cap, and whether anything failed.

The resident proxy computes it when a run says bye (:mod:`ccmeter.rundesk`: it has the
catalog, the store and the caps loaded, and knows how many calls it saw); ``run`` computes it
itself only when the proxy is gone by then.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ccmeter import config, periods, sessions, store
from ccmeter.failures import reason as failure_reason
from ccmeter.failures import summary as failure_summary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSummary:
    calls: int
    sessions: int
    cost_picousd: int
    unpriced_calls: int
    today_picousd: int
    #: The fullest spending cap, e.g. "daily cap 31 %" (None without caps).
    cap_note: str | None = None
    blocked_calls: int = 0
    #: Why metering failed during the run (None: it never did), and how many of the run's
    #: calls are not in the database because of it (None: not known, the proxy is gone).
    metering_failure: str | None = None
    unrecorded_calls: int | None = 0
    #: Calls the upstream failed, and why: "3 calls failed: upstream unreachable (…)".
    failures: str | None = None

    def line(self) -> str:
        from ccmeter.money import spend_usd  # floored, as every spend beside a cap

        run = f"this run {spend_usd(self.cost_picousd)} "
        run += f"({self.calls} call{'s' * (self.calls != 1)}, "
        run += f"{self.sessions} session{'s' * (self.sessions != 1)})"
        if self.unpriced_calls:
            run += f" + {self.unpriced_calls} unpriced"
        line = f"ccmeter: {run} · today {spend_usd(self.today_picousd)}"
        if self.blocked_calls:
            line += f" · {self.blocked_calls} refused by caps"
        if self.failures:
            line += f" · {self.failures}"
        line += f" · {self.cap_note}" if self.cap_note else ""
        if self.metering_failure:
            lost = ("" if self.unrecorded_calls is None
                    else f" ({self.unrecorded_calls} call{'s' * (self.unrecorded_calls != 1)} "
                         "not recorded)" if self.unrecorded_calls
                    else " (every call recorded in the end)")
            line += f"\nccmeter: METERING FAILED during this run{lost}: {self.metering_failure}"
        return line


def summarize(meter_rows: Mapping[str, Mapping], db: Any, *,
              cfg: Mapping | None = None, project: str | None = None,
              metering_failure: str | None = None, unrecorded_calls: int | None = 0,
              failures: Sequence[str | None] | None = None) -> RunSummary:
    """The run's summary from its calls' rows (``failures``: why calls failed, else read
    from the rows themselves) and today's total and caps from the database (``db``: an open
    store, or None when it could not be opened)."""
    rows = list(meter_rows.values())
    today = 0
    cap_note = None
    try:
        if db is not None:
            today = sessions.spend_since(db, periods.local_midnight())[0] or 0
    except Exception:
        log.exception("could not read today's total")
    try:
        if db is not None and cfg and cfg.get("caps"):
            from ccmeter.caps.guard import cap_statuses
            from ccmeter.caps.messages import summary_note

            cap_note = summary_note(cap_statuses(db, cfg), project)
    except config.CCMeterError as exc:  # [caps] edited into something invalid: known, said
        log.warning("ccmeter: the run's summary shows no cap: %s", exc)
        cap_note = "caps not applied: [caps] in the config is invalid (see ccmeter doctor)"
    except Exception:
        log.exception("could not read the caps for the run's summary")
    return RunSummary(
        calls=len(rows),
        sessions=len({r.get("session_id") for r in rows if r.get("session_id")}),
        cost_picousd=sum(r.get("cost_picousd") or 0 for r in rows),
        unpriced_calls=sum(1 for r in rows if r.get("cost_picousd") is None),
        today_picousd=today,
        cap_note=cap_note,
        blocked_calls=sum(1 for r in rows if r.get("status") == "blocked"),
        metering_failure=metering_failure,
        unrecorded_calls=unrecorded_calls,
        failures=failure_summary(failures if failures is not None
                                 else (r.get("failure") for r in rows)),
    )


def run_rows(db: Any, run_id: str) -> dict[str, dict[str, Any]]:
    """The rows of the run's calls, by call, each with why it failed (if it did)."""
    try:
        calls = store.run_calls(db, run_id)
    except Exception:
        log.exception("could not read the run's calls")
        return {}
    for row in calls:
        row["failure"] = failure_reason(row["status"], row.get("error_type"),
                                        row.get("http_status"), None)
    return {row["call_uid"]: row for row in calls}


def for_run(paths: config.Paths, run_id: str, project: str | None,
            ended: Mapping[str, Any]) -> RunSummary:
    """The summary of run ``run_id`` from its rows, after ``ended`` (the proxy's account of
    the run: the calls it ``seen``, their ``failures``, any ``metering_failure``)."""
    try:
        cfg = config.load_config(paths, quiet=True)
    except config.CCMeterError:
        cfg = {}
    try:
        db = store.connect(paths.db_file)
    except Exception:
        log.exception("could not open the database for the run's summary")
        db = None
    try:
        rows = run_rows(db, run_id) if db is not None else {}
        seen = ended.get("seen")
        failures = ended.get("failures")
        return summarize(rows, db, cfg=cfg, project=project,
                         metering_failure=ended.get("metering_failure"),
                         unrecorded_calls=max(0, seen - len(rows)) if isinstance(seen, int)
                         else None,
                         failures=failures if isinstance(failures, list) else None)
    finally:
        if db is not None:
            db.conn.close()
