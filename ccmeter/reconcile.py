"""``ccmeter reconcile``: per session, what the wire metered against what Claude Code's
transcripts say. No rendering here.

Only sessions seen both ways are compared (a session from before ccmeter was installed has
nothing to compare with). Each side sums its own calls: the wire side every call that got an
answer (``ok`` or ``incomplete``; a call refused by a cap or failed upstream is in no
transcript and cost nothing), the transcript side every imported call, including those the
wire also saw. ``missing_calls`` are the wire calls no transcript line records (by request
id or message id): Claude Code's auxiliary Haiku calls, for one. Differences are wire minus
transcript; money stays in integer picodollars, and a side with calls but no priced one is
unpriced (None), never $0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ccmeter import store

#: The token kinds compared (cache writes, 5-minute and 1-hour, together).
TOKEN_KINDS = ("input_tokens", "cache_write_tokens", "cache_read_tokens", "output_tokens")
_COUNTS = ("wire_calls", "transcript_calls", "missing_calls")


@dataclass
class Reconciliation:
    rows: list[dict[str, Any]]
    totals: dict[str, Any]


def _cost(raw: Mapping[str, Any], side: str) -> int | None:
    calls = int(raw[f"{side}_calls"] or 0)
    if calls and not raw[f"{side}_priced_calls"]:
        return None
    return int(raw[f"{side}_cost_picousd"] or 0)


def _row(raw: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "session": raw["session_id"],
        "project": raw["project"],
        "first_call": raw["first_ts"],
        "last_call": raw["last_ts"],
    }
    for name in _COUNTS:
        row[name] = int(raw[name] or 0)
    row["wire_priced_calls"] = int(raw["wire_priced_calls"] or 0)
    row["transcript_priced_calls"] = int(raw["transcript_priced_calls"] or 0)
    for kind in TOKEN_KINDS:
        wire, transcript = int(raw[f"wire_{kind}"] or 0), int(raw[f"transcript_{kind}"] or 0)
        row[f"wire_{kind}"], row[f"transcript_{kind}"] = wire, transcript
        row[f"{kind}_diff"] = wire - transcript
    row["wire_cost"] = _cost(raw, "wire")
    row["transcript_cost"] = _cost(raw, "transcript")
    row["difference"] = (None if row["wire_cost"] is None or row["transcript_cost"] is None
                         else row["wire_cost"] - row["transcript_cost"])
    return row


def _total(rows: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {name: sum(r[name] for r in rows) for name in _COUNTS}
    for kind in TOKEN_KINDS:
        for name in (f"wire_{kind}", f"transcript_{kind}", f"{kind}_diff"):
            total[name] = sum(r[name] for r in rows)
    for side in ("wire", "transcript"):
        priced = sum(r[f"{side}_priced_calls"] for r in rows)
        calls = total[f"{side}_calls"]
        total[f"{side}_cost"] = (None if calls and not priced
                                 else sum(r[f"{side}_cost"] or 0 for r in rows))
    total["difference"] = (None if total["wire_cost"] is None or total["transcript_cost"] is None
                           else total["wire_cost"] - total["transcript_cost"])
    total["sessions"] = len(rows)
    return total


def reconcile(db: Any, since: float | None = None, until: float | None = None,
              project: str | None = None) -> Reconciliation:
    """Every session with calls both on the wire and in the transcripts, compared."""
    rows = [_row(raw) for raw in store.reconcile_rows(db, since, until, project)]
    return Reconciliation(rows, _total(rows))
