"""A running proxy's link to the team share: push this laptop's spend every ``push_interval``
and refresh the view of the others' spend and the budgets every ``refresh_interval``, on one
background thread (docs/team-budgets.md).

The proxy never waits for the share: a call is checked against the last view this thread
made (kept in memory and in ``team-view.json``), plus the laptop's own live spend.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from ccmeter import config, share, share_identity, sharestore, tiers
from ccmeter.periods import PeriodError, parse_duration

log = logging.getLogger(__name__)

DEFAULT_PUSH_S = 300.0
DEFAULT_REFRESH_S = 60.0


def interval(value: Any, default: float, what: str) -> float:
    """``[share] push_interval`` and ``refresh_interval``: ``5m``, ``30s``, or seconds."""
    if value is None:
        return default
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text.removesuffix("s"))
            if number > 0:
                return number
        except ValueError:
            pass
        try:
            return parse_duration(text, what=what).approx_seconds
        except PeriodError as exc:
            raise config.CCMeterError(f"[share] {what}: {exc}") from None
    raise config.CCMeterError(f"[share] {what} must be a duration like 5m or 30s; "
                              f"got {value!r}")


class SyncSettings:
    """What the thread does, from the config: None when this laptop is in no team."""

    def __init__(self, cfg: Mapping[str, Any], env: Mapping[str, str]) -> None:
        settings = share_identity.resolve_settings(cfg, env)
        section = cfg.get("share") or {}
        self.settings = settings
        self.push_s = interval(section.get("push_interval"), DEFAULT_PUSH_S, "push_interval")
        self.refresh_s = interval(section.get("refresh_interval"), DEFAULT_REFRESH_S,
                                  "refresh_interval")
        self.key = (str(settings.share), settings.team, settings.group, settings.user,
                    settings.anonymize, self.push_s, self.refresh_s)

    @property
    def active(self) -> bool:
        return self.settings.share is not None and self.settings.team is not None


class TeamSync:
    """One background thread per proxy. ``on_view(view, problem)`` hears each refresh: the
    new view (or None when it failed) and what went wrong (None when all went well)."""

    def __init__(self, paths: config.Paths,
                 on_view: Callable[[dict[str, Any] | None, str | None], None]) -> None:
        self.paths = paths
        self.on_view = on_view
        self._settings: SyncSettings | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.pushes = 0
        self.refreshes = 0
        #: What the last refreshes read, so that the next one GETs only what changed.
        self._cache: dict[str, Any] = {}
        self._cache_of: tuple | None = None

    def configure(self, settings: SyncSettings | None) -> None:
        """New settings (the config changed): start, stop, or push and refresh now."""
        with self._lock:
            same = (settings is not None and self._settings is not None
                    and settings.key == self._settings.key)
            self._settings = settings if settings is not None and settings.active else None
        if same:
            return
        if self._settings is None:
            self.on_view(None, None)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ccmeter-team",
                                            daemon=True)
            self._thread.start()
        else:
            self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            # a daemon thread: a push or read still waiting on the network does not hold
            # the proxy's exit (a PUT is whole or absent; a folder write leaves a temporary)
            self._thread.join(timeout=2)
            self._thread = None

    def _run(self) -> None:
        next_push = next_refresh = 0.0
        current: tuple | None = None
        while not self._stop.is_set():
            settings = self._settings
            if settings is None:
                self._wake.wait(3600)
                self._wake.clear()
                continue
            if settings.key != current:  # new settings: push and refresh now
                current, next_push, next_refresh = settings.key, 0.0, 0.0
            now = time.monotonic()
            if now >= next_push:
                next_push = now + settings.push_s
                self._push(settings)
            if time.monotonic() >= next_refresh:
                next_refresh = time.monotonic() + settings.refresh_s
                self._refresh(settings)
            wait = min(next_push, next_refresh) - time.monotonic()
            if wait > 0:
                self._wake.wait(wait)
                self._wake.clear()

    def _push(self, settings: SyncSettings) -> None:
        if not self.paths.db_file.exists():
            return
        from ccmeter import store

        # Only the months a budget window may still cover (this one, and last month in a
        # week that began in it): older months are left as they are on the share.
        since = tiers.first_day(time.time()) - timedelta(days=1)
        try:
            db = store.connect(self.paths.db_file)
            try:
                share.push(db, self.paths, settings.settings, since=since)
            finally:
                db.conn.close()
            self.pushes += 1
        except Exception as exc:  # the next push tries again; never the user's calls
            log.warning("ccmeter: team share: push failed: %s", exc)

    def _refresh(self, settings: SyncSettings) -> None:
        s = settings.settings
        assert s.share is not None and s.team is not None
        if self._cache_of != (str(s.share), s.team):
            self._cache, self._cache_of = {}, (str(s.share), s.team)
        try:
            target = sharestore.open_share(s.share)
            view = tiers.build_view(target, team=s.team, group=s.group,
                                    machine=share_identity.machine_id(self.paths),
                                    cache=self._cache)
        except Exception as exc:
            problem = f"team share {s.share} unreachable: {exc}"
            log.warning("ccmeter: %s", problem)
            self.on_view(None, problem)
            return
        self.refreshes += 1
        try:
            tiers.save_view(self.paths.data_dir, view)
        except OSError as exc:
            log.warning("ccmeter: cannot keep the team view in %s: %s", self.paths.data_dir,
                        exc)
        self.on_view(view, None)


def sync_settings(cfg: Mapping[str, Any]) -> SyncSettings | None:
    """The sync settings of a config, or None (no team); raises CCMeterError if wrong."""
    settings = SyncSettings(cfg, os.environ)
    return settings if settings.active else None
