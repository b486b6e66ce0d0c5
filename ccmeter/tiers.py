"""Team and group budgets: set in the share, enforced on each laptop (docs/team-budgets.md).

Budgets live in the share beside the data, as a log of small change files::

    <share>/ccmeter/budgets/change-20261130T104500.123456Z-<machine>.json

Each change says who set what, when; the budgets in force are every change of the team
folded in time order (a later change of one budget wins; ``null`` removes it).

Design notes (the why):
- A log, not one file rewritten: a change is a new object with a unique name, written
  create-only, so two people setting budgets at once never lose one of the changes, no
  backend needs compare-and-swap, and the history (who, when) is the file list itself.
- Each laptop keeps a *view* of the others' spend: per tier, per local day, every pushed
  part file of the team but its own machine's (its own spend is read live from its own
  database). Days, not totals, so a view stays right when a day, week or month turns.
- :func:`tier_caps` turns a view into ordinary :class:`~ccmeter.caps.policy.Cap` records
  (scope ``team:T`` or ``group:T/G``) whose ``others_picousd`` is what the rest of the
  team spent in the window: the proxy's check adds its own live spend to it, with no
  network I/O on the way of a call.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from ccmeter.caps.policy import Cap
from ccmeter.caps.windows import calendar_window, local_time
from ccmeter.config import CCMeterError
from ccmeter.money import parse_usd, usd_text

BUDGETS_KEY = "ccmeter/budgets"
VIEW_FILE = "team-view.json"
TIER_WINDOWS = ("daily", "weekly", "monthly")
TIERS = ("team", "group")
VIEW_VERSION = 1


# --- the budgets in the share ---------------------------------------------------------------


def budget_key(tier: str, window: str, group: str | None = None) -> str:
    """``team.monthly`` or ``group.backend.monthly``: a budget's name in a change file."""
    return f"team.{window}" if tier == "team" else f"group.{group}.{window}"


def _split(key: str) -> tuple[str, str | None, str] | None:
    parts = key.split(".")
    if len(parts) == 2 and parts[0] == "team" and parts[1] in TIER_WINDOWS:
        return "team", None, parts[1]
    if len(parts) >= 3 and parts[0] == "group" and parts[-1] in TIER_WINDOWS:
        return "group", ".".join(parts[1:-1]), parts[-1]
    return None


def read_changes(target: Any, team: str,
                 cache: dict[str, bytes | None] | None = None) -> list[dict[str, Any]]:
    """Every well-formed budget change of ``team``, oldest first (bad files ignored).
    Change files are never rewritten: with a ``cache`` each is fetched once."""
    import json
    out = []
    for key in target.keys(BUDGETS_KEY):
        name = key.rsplit("/", 1)[-1]
        if not (name.startswith("change-") and name.endswith(".json")):
            continue
        if cache is not None and key in cache:
            raw = cache[key]
        else:
            raw = target.read(key)
            if cache is not None:
                cache[key] = raw
        try:
            doc = json.loads(raw or b"")
            if doc.get("team") != team or not isinstance(doc.get("set"), dict):
                continue
            budgets = {}
            for budget, value in doc["set"].items():
                if _split(budget) is None:
                    raise ValueError(budget)
                budgets[budget] = None if value is None else parse_usd(value, budget)
        except (ValueError, TypeError, AttributeError, CCMeterError):
            continue
        out.append({"key": key, "at": str(doc.get("at", "")), "by": str(doc.get("by", "")),
                    "set": budgets})
    out.sort(key=lambda c: c["key"])
    return out


def fold(changes: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """The budgets in force: each change in order, a later one winning; None removes."""
    budgets: dict[str, int] = {}
    for change in changes:
        for name, pico in change["set"].items():
            if pico is None:
                budgets.pop(name, None)
            else:
                budgets[name] = pico
    return budgets


def write_change(target: Any, *, team: str, by: str, machine: str,
                 budgets: Mapping[str, int | None], now: float | None = None) -> str:
    """Record one change of ``team``'s budgets in the share; its key."""
    import json
    import secrets
    now = time.time() if now is None else now
    at = datetime.fromtimestamp(now, UTC)
    doc = {"schema_version": 1, "team": team, "by": by,
           "at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
           "set": {k: None if v is None else usd_text(v) for k, v in sorted(budgets.items())}}
    key = (f"{BUDGETS_KEY}/change-{at.strftime('%Y%m%dT%H%M%S.%fZ')}-{machine}-"
           f"{secrets.token_hex(3)}.json")
    target.write_new(key, (json.dumps(doc, ensure_ascii=False, indent=1) + "\n").encode())
    return key


def parse_budget(value: str, where: str) -> int | None:
    """A budget from the command line: dollars, or ``off`` to remove it."""
    if value.strip().lower() in ("off", "none", "unset"):
        return None
    return parse_usd(value, where, what="a budget")


# --- the view of the others' spend ----------------------------------------------------------


def first_day(now: float, tz: tzinfo | None = None) -> date:
    """The earliest day any tier window open at ``now`` starts (the month's or the week's)."""
    starts = [calendar_window(w, now, tz)[0] for w in TIER_WINDOWS]
    return min(local_time(s, tz).date() for s in starts)


def build_view(target: Any, *, team: str, group: str | None, machine: str,
               now: float | None = None, tz: tzinfo | None = None,
               cache: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read the share once: the budgets of ``team`` and the others' spend per tier per day
    (every part file of the team but ``machine``'s). Raises CCMeterError if unreachable.

    With a ``cache`` (kept by the caller between refreshes) a refresh costs two LISTs and
    a GET of each file that changed since: budget changes are fetched once, part files
    again only when their ETag changed."""
    from ccmeter import team as teamread

    now = time.time() if now is None else now
    since = first_day(now, tz) - timedelta(days=1)  # a day early: zones ahead of ours
    cache = {} if cache is None else cache
    changes = read_changes(target, team, cache.setdefault("budgets", {}))
    data = teamread.read_share(target, since=since, skip_machine=machine, empty_ok=True,
                               cache=cache.setdefault("parts", {}))
    spend: dict[str, dict[str, int]] = {"team": {}, "group": {}}
    users: dict[str, set[str]] = {"team": set(), "group": set()}
    for row in data.rows:
        if row.get("team") != team or row["cost_picousd"] is None:
            continue
        tiers = ["team"] + (["group"] if group is not None and row.get("group") == group
                            else [])
        for tier in tiers:
            days = spend[tier]
            days[row["day"]] = days.get(row["day"], 0) + row["cost_picousd"]
            users[tier].add(row["user"])
    return {
        "version": VIEW_VERSION, "share": target.url, "team": team, "group": group,
        "machine": machine, "refreshed_at": now,
        "budgets": fold(changes),
        "others": spend,
        "others_users": {k: sorted(v) for k, v in users.items()},
        "skipped_files": len(data.skipped),
    }


def tier_caps(view: Mapping[str, Any], now: float, tz: tzinfo | None = None) -> tuple[Cap, ...]:
    """The caps a view gives this laptop: its team's budgets and its own group's."""
    team, group = view["team"], view.get("group")
    out = []
    for name, limit in sorted(view["budgets"].items()):
        parts = _split(name)
        if parts is None:
            continue
        tier, budget_group, window = parts
        if tier == "group" and budget_group != group:
            continue
        start, _ = calendar_window(window, now, tz)
        first = local_time(start, tz).date().isoformat()
        others = sum(pico for day, pico in view["others"].get(tier, {}).items()
                     if day >= first)
        scope = f"team:{team}" if tier == "team" else f"group:{team}/{group}"
        out.append(Cap(window, scope, int(limit), others_picousd=others))
    return tuple(out)


def save_view(data_dir: Path, view: Mapping[str, Any]) -> None:
    """Keep the view on disk (temp file and rename) for the next start and `ccmeter caps`."""
    import json
    import os
    import tempfile

    data_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{VIEW_FILE}.", dir=data_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(view, handle, ensure_ascii=False)
        os.replace(tmp, data_dir / VIEW_FILE)
    except BaseException:
        with __import__("contextlib").suppress(OSError):
            os.unlink(tmp)
        raise


def with_cached_view(policy: Any, cfg: Mapping[str, Any], now: float,
                     data_dir: Path | None = None) -> Any:
    """``policy`` plus the team budgets of the view a proxy last kept (no network: for
    ``ccmeter caps`` and the status line). Unchanged when this laptop is in no team."""
    section = cfg.get("share")
    if not isinstance(section, Mapping) or not section.get("team"):
        return policy
    if data_dir is None:
        from ccmeter import config

        data_dir = config.paths().data_dir
    view = load_view(data_dir)
    if view is None or view.get("team") != section.get("team"):
        return policy
    return policy._replace(caps=policy.caps + tier_caps(view, now, policy.tz))


def load_view(data_dir: Path, *, share: str | None = None, team: str | None = None,
              group: str | None = None) -> dict[str, Any] | None:
    """The view kept on disk, if it is of this share, team and group."""
    import json
    try:
        view = json.loads((data_dir / VIEW_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(view, dict) or view.get("version") != VIEW_VERSION:
        return None
    if share is not None and (view.get("share"), view.get("team"), view.get("group")) != (
            share, team, group):
        return None
    return view


# --- changing budgets from the command line -------------------------------------------------


def change_budgets(cfg: Mapping[str, Any], paths: Any, given: Mapping[str, str],
                   group: str | None = None) -> tuple[str, str]:
    """``ccmeter caps set --team-monthly 5000 --group-monthly 1500``: one change file in the
    share. ``given`` maps ``team-monthly``/``group-daily``… to dollars or ``off``. Returns
    (a summary, where it was written)."""
    import os

    from ccmeter import sharestore
    from ccmeter.share_identity import machine_id, resolve_settings

    settings = resolve_settings(cfg, os.environ)
    if settings.share is None or settings.team is None:
        raise CCMeterError("team budgets need a team share: ccmeter team set --share URL "
                           "--team NAME [--group NAME]")
    group = group or settings.group
    budgets: dict[str, int | None] = {}
    for option, value in given.items():
        tier, _, window = option.partition("-")
        if tier == "group" and group is None:
            raise CCMeterError(f"--{option} needs a group: ccmeter team set --group NAME")
        budgets[budget_key(tier, window, group)] = parse_budget(value, f"--{option}")
    target = sharestore.open_share(settings.share)
    target.check()
    key = write_change(target, team=settings.team, by=settings.public_user(),
                       machine=machine_id(paths), budgets=budgets)
    from ccmeter.money import cap_usd

    done = [f"{name.replace('.', ' ')} {'off' if pico is None else cap_usd(pico)}"
            for name, pico in budgets.items()]
    return (f"team {settings.team} budgets: " + ", ".join(done)
            + " (in the share: every teammate's proxy applies it at its next refresh)",
            str(target.where(key)))
