"""The figures every exporter shows, read from the database at one moment (no exporter
library here: Prometheus and OpenTelemetry both take these records)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ccmeter.record import Record

log = logging.getLogger(__name__)

#: The token counts a call's row has, as the ``type`` label of ``ccmeter_tokens_total``.
TOKEN_TYPES = ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output")
#: The labels of every per-call metric (``user`` is added when the config names one).
CALL_LABELS = ("project", "model", "provider", "kind")
PICO_PER_USD = 10**12
#: A long-lived reader sums the calls started before (now - BASE_LAG_S), in steps of
#: BASE_STEP_S, once, and only the later ones at each read (the ``started_ts`` index finds
#: them): on 1,000,000 calls a full sum takes ~2 s. Rows that old no longer change, but for
#: a re-pricing (seen at once) and a dead proxy's calls folded in late: every BASE_FULL_S
#: the whole sum is taken again.
BASE_LAG_S = 7200.0
BASE_STEP_S = 600.0
BASE_FULL_S = 3600.0


class CallGroup(Record):
    """The finished calls of one (project, model, provider, kind, status, reason): their
    count, exact cost (None: none priced) and tokens by :data:`TOKEN_TYPES`."""

    project: str
    model: str
    provider: str
    kind: str
    status: str
    reason: str  # the row's error_type ('' for none): why a refused call was refused
    calls: int
    cost_picousd: int | None
    unpriced: int
    tokens: tuple[int, ...]

    @property
    def labels(self) -> tuple[str, str, str, str]:
        return (self.project, self.model, self.provider, self.kind)


class CapFigure(Record):
    """Where one cap stands now (``scope``: global or project:NAME)."""

    cap: str
    scope: str
    window: str
    limit_picousd: int
    spent_picousd: int

    @property
    def remaining_picousd(self) -> int:
        return max(0, self.limit_picousd - self.spent_picousd)


class Snapshot(Record):
    taken_at: float
    groups: tuple[CallGroup, ...]
    caps: tuple[CapFigure, ...]
    user: str | None = None
    ok: bool = True  # False: the database could not be read (the groups are empty)


def usd(picousd: int) -> float:
    """Exact picodollars as the nearest float number of dollars (one correctly rounded
    division: every exporter converts the same way)."""
    return picousd / PICO_PER_USD


def metrics_user(cfg: Mapping[str, Any]) -> str | None:
    """``[metrics] user``: a label on every metric (none when unset or not valid)."""
    from ccmeter.config import CCMeterError
    from ccmeter.configcheck import metrics_settings

    try:
        return metrics_settings(cfg).user
    except CCMeterError:
        return None


def _group(row: Sequence[Any]) -> CallGroup:
    return CallGroup(row[0], row[1], row[2], row[3], row[4], row[5], int(row[6]),
                     None if row[7] is None else int(row[7]), int(row[8] or 0),
                     tuple(int(n or 0) for n in row[9:14]))


def merged(*parts: Iterable[CallGroup]) -> dict[tuple[str, ...], CallGroup]:
    """Groups of several row ranges, one per label set, summed (exactly)."""
    out: dict[tuple[str, ...], CallGroup] = {}
    for part in parts:
        for g in part:
            key = (*g.labels, g.status, g.reason)
            had = out.get(key)
            if had is None:
                out[key] = g
                continue
            cost = (None if had.cost_picousd is None and g.cost_picousd is None
                    else (had.cost_picousd or 0) + (g.cost_picousd or 0))
            out[key] = CallGroup(*key, had.calls + g.calls, cost, had.unpriced + g.unpriced,
                                 tuple(a + b for a, b in zip(had.tokens, g.tokens, strict=True)))
    return out


def read(db: Any, cfg: Mapping[str, Any], now: float | None = None, *,
         groups: Sequence[CallGroup] | None = None) -> Snapshot:
    """The finished calls' sums and the caps' standing, from ``db`` (a store connection)
    and the loaded config ``cfg`` (``groups``: the sums, when the caller has them). A
    ``[caps]`` table that does not parse gives no cap figures (the proxy and ``ccmeter
    caps`` say what is wrong with it)."""
    from ccmeter import store

    now = time.time() if now is None else now
    if groups is None:
        groups = [_group(row) for row in store.call_totals(db, now)]
    caps: tuple[CapFigure, ...] = ()
    if "caps" in cfg:
        from ccmeter.caps.guard import cap_statuses
        from ccmeter.config import CCMeterError

        try:
            caps = tuple(CapFigure(s.name, s.scope, s.window, s.limit_picousd,
                                   s.spent_picousd)
                         for s in cap_statuses(db, cfg, now))
        except CCMeterError as exc:
            log.warning("ccmeter: metrics: no cap figures: %s", exc)
    return Snapshot(now, tuple(groups), caps, metrics_user(cfg))


class Reader:
    """Snapshots of one database for a process that exports them, each at most
    ``max_age_s`` old: many scrapes (or exporters) within that share one read. Thread-safe
    (an HTTP server answers scrapes on its own threads); one connection, opened on first
    use and again after an error."""

    def __init__(self, db_path: Path, config_file_paths: Any = None, *,
                 max_age_s: float = 1.0, calls: bool = True) -> None:
        import threading

        self.db_path = Path(db_path)
        self.paths = config_file_paths  # config.Paths, or None: no config (no caps, no user)
        self.max_age_s = max_age_s
        self.calls = calls  # False: the caps' figures only (the OTLP exporter's use)
        self._lock = threading.Lock()
        self._db: Any = None
        self._last: Snapshot | None = None
        self._stamp = 0.0
        self._base: dict[tuple[str, ...], CallGroup] = {}
        self._base_edge: float | None = None  # the base holds the calls started before it
        self._base_taken = 0.0
        self._base_mark = -1

    def snapshot(self) -> Snapshot:
        with self._lock:
            mono = time.monotonic()
            if self._last is not None and mono - self._stamp < self.max_age_s:
                return self._last
            self._last, self._stamp = self._read(), mono
            return self._last

    def _read(self) -> Snapshot:
        from ccmeter import config, store

        try:
            cfg = config.load_config(self.paths, quiet=True) if self.paths else {}
        except config.CCMeterError as exc:
            log.warning("ccmeter: metrics: config not read (%s); no cap figures", exc)
            cfg = {}
        try:
            if self._db is None:
                self._db = store.connect_migrated(self.db_path)
            now = time.time()
            return read(self._db, cfg, now, groups=self._groups(now) if self.calls else [])
        except Exception as exc:
            log.error("ccmeter: metrics: cannot read %s: %s: %s", self.db_path,
                      type(exc).__name__, exc)
            self.close_db()
            return Snapshot(time.time(), (), (), metrics_user(cfg), ok=False)

    def _groups(self, now: float) -> list[CallGroup]:
        """The sums of every finished call: the base (older calls, kept) and the rest."""
        from ccmeter import store

        db = self._db
        edge = (now - BASE_LAG_S) // BASE_STEP_S * BASE_STEP_S
        mark = store.repriced_mark(db)
        if (self._base_edge is None or mark != self._base_mark
                or now - self._base_taken >= BASE_FULL_S):
            self._base = merged(map(_group, store.call_totals(db, now, hi=edge)))
            self._base_edge, self._base_taken, self._base_mark = edge, now, mark
        elif edge > self._base_edge:
            self._base = merged(self._base.values(), map(_group, store.call_totals(
                db, now, lo=self._base_edge, hi=edge)))
            self._base_edge = edge
        recent = map(_group, store.call_totals(db, now, lo=self._base_edge))
        return list(merged(self._base.values(), recent).values())

    def close_db(self) -> None:
        self._base_edge = None
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(Exception):
                db.conn.close()

    def close(self) -> None:
        with self._lock:
            self.close_db()
