"""ccmeter's figures for Prometheus: a ``prometheus_client`` collector that reads one
:class:`~ccmeter.metrics.snapshot.Snapshot` per scrape (at most one database read a second),
the scrape endpoint a proxy serves, and the node_exporter textfile. Every metric is listed,
with its labels, in docs/metrics.md."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from ccmeter.metrics.snapshot import CALL_LABELS, TOKEN_TYPES, Reader, Snapshot, usd

log = logging.getLogger(__name__)

#: Where a proxy serves metrics unless told otherwise: this machine only.
DEFAULT_HOST = "127.0.0.1"


def families(snap: Snapshot) -> list[Metric]:
    """The metric families of one snapshot (pure: tests and the textfile use it too)."""
    extra = ("user",) if snap.user else ()
    tail = (snap.user,) if snap.user else ()
    labels = [*CALL_LABELS, *extra]

    cost = CounterMetricFamily(
        "ccmeter_cost_usd", "Exact cost of finished calls in US dollars (priced calls only; "
        "see ccmeter_unpriced_calls_total)", labels=labels)
    tokens = CounterMetricFamily(
        "ccmeter_tokens", "Tokens of finished calls by type (input, cache_write_5m, "
        "cache_write_1h, cache_read, output)", labels=[*labels, "type"])
    calls = CounterMetricFamily(
        "ccmeter_calls", "Finished calls by status (ok, upstream_error, incomplete, blocked)",
        labels=[*labels, "status"])
    unpriced = CounterMetricFamily(
        "ccmeter_unpriced_calls", "Finished calls whose cost is unknown (an unknown model, "
        "or usage that could not be read): not in ccmeter_cost_usd_total", labels=labels)
    refusals = CounterMetricFamily(
        "ccmeter_refusals", "Calls ccmeter refused, by reason (cap_reached: a spending cap "
        "or on_error = block; loop: the loop guard)", labels=[*labels, "reason"])

    cost_sum: dict[tuple[str, ...], int] = defaultdict(int)
    token_sum: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0] * len(TOKEN_TYPES))
    call_sum: dict[tuple[str, ...], int] = defaultdict(int)
    unpriced_sum: dict[tuple[str, ...], int] = defaultdict(int)
    refusal_sum: dict[tuple[str, ...], int] = defaultdict(int)
    for group in snap.groups:
        key = (*group.labels, *tail)
        if group.cost_picousd is not None:
            cost_sum[key] += group.cost_picousd
        counts = token_sum[key]
        for i, n in enumerate(group.tokens):
            counts[i] += n
        call_sum[(*key, group.status)] += group.calls
        if group.unpriced:
            unpriced_sum[key] += group.unpriced
        if group.status == "blocked":
            refusal_sum[(*key, group.reason or "cap_reached")] += group.calls
    for key, pico in sorted(cost_sum.items()):
        cost.add_metric(list(key), usd(pico))
    for key, counts in sorted(token_sum.items()):
        for kind, n in zip(TOKEN_TYPES, counts, strict=True):
            tokens.add_metric([*key, kind], n)
    for key, n in sorted(call_sum.items()):
        calls.add_metric(list(key), n)
    for key, n in sorted(unpriced_sum.items()):
        unpriced.add_metric(list(key), n)
    for key, n in sorted(refusal_sum.items()):
        refusals.add_metric(list(key), n)

    cap_labels = ["cap", "scope", "window", *extra]
    spend = GaugeMetricFamily("ccmeter_cap_spend_usd", "Spend in each cap's current window, "
                              "in-flight reservations included", labels=cap_labels)
    limit = GaugeMetricFamily("ccmeter_cap_limit_usd", "Each cap's limit", labels=cap_labels)
    remaining = GaugeMetricFamily("ccmeter_cap_remaining_usd", "What each cap leaves to spend "
                                  "in its current window (0 once reached)", labels=cap_labels)
    for cap in snap.caps:
        where = [cap.cap, cap.scope, cap.window, *tail]
        spend.add_metric(where, usd(cap.spent_picousd))
        limit.add_metric(where, usd(cap.limit_picousd))
        remaining.add_metric(where, usd(cap.remaining_picousd))
    up = GaugeMetricFamily("ccmeter_database_up", "1 when ccmeter's database was read for "
                           "this scrape, 0 when it could not be (the other metrics are then "
                           "missing)", labels=list(extra))
    up.add_metric(list(tail), 1.0 if snap.ok else 0.0)
    return [cost, tokens, calls, unpriced, refusals, spend, limit, remaining, up]


class DatabaseCollector(Collector):
    """A collector over one database: each scrape shows the snapshot of at most a second
    ago (the :class:`Reader` reads at most once per ``max_age_s``)."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader

    def collect(self) -> Iterator[Metric]:
        yield from families(self.reader.snapshot())


def registry_for(reader: Reader) -> CollectorRegistry:
    """A registry holding ccmeter's metrics alone (no process or Python metrics: the
    exposition is the database's, whichever process serves it)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(reader))
    return registry


class MetricsServer:
    """The scrape endpoint: ``http://HOST:PORT/metrics`` on its own threads."""

    def __init__(self, server: Any, thread: Any, reader: Reader) -> None:
        self._server, self._thread, self.reader = server, thread, reader

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self.reader.close()


def serve(reader: Reader, port: int, host: str = DEFAULT_HOST) -> MetricsServer:
    """Start the endpoint (OSError when the port cannot be bound)."""
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, addr=host, registry=registry_for(reader))
    return MetricsServer(server, thread, reader)


def exposition(reader: Reader) -> bytes:
    """The text a scrape would get now (``ccmeter metrics`` prints it)."""
    from prometheus_client import generate_latest

    return bytes(generate_latest(registry_for(reader)))


def write_textfile(reader: Reader, path: Path) -> None:
    """Write the exposition to ``path`` for node_exporter's textfile collector, atomically
    (a temporary file in the same folder, renamed over ``path``: the collector never reads
    half a file)."""
    from prometheus_client import write_to_textfile

    write_to_textfile(str(path), registry_for(reader))
