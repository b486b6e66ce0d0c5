"""An OTLP/HTTP metrics receiver for the tests: POST /v1/metrics decoded with the official
OpenTelemetry protobufs (``opentelemetry-proto``), each request kept in order.
Not a conftest: imported by name (``from otlpreceiver import Receiver``)."""

from __future__ import annotations

import gzip
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def attributes(items: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in items}


class Receiver:
    def __init__(self) -> None:
        self.requests: list[ExportMetricsServiceRequest] = []
        self.content_types: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/metrics":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportMetricsServiceRequest()
                request.ParseFromString(body)
                receiver.requests.append(request)
                receiver.content_types.append(self.headers.get("content-type", ""))
                answer = ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def latest(self) -> dict[str, dict[frozenset, float]]:
        """Each metric's newest value per (resource + point) attribute set, as received
        (cumulative sums and gauges: the newest point is the figure)."""
        out: dict[str, dict[frozenset, tuple[int, float]]] = {}
        for request in list(self.requests):
            for rm in request.resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        data = metric.sum if metric.HasField("sum") else metric.gauge
                        for point in data.data_points:
                            key = frozenset(attributes(point.attributes).items())
                            kind = point.WhichOneof("value")
                            number = float(getattr(point, kind))
                            series = out.setdefault(metric.name, {})
                            if key not in series or series[key][0] <= point.time_unix_nano:
                                series[key] = (point.time_unix_nano, number)
        return {name: {k: v for k, (_, v) in series.items()} for name, series in out.items()}

    def resources(self) -> list[dict[str, Any]]:
        return [attributes(rm.resource.attributes)
                for request in self.requests for rm in request.resource_metrics]

    def metric(self, name: str) -> Any:
        """The newest received metric ``name`` (its unit, description, kind)."""
        for request in reversed(self.requests):
            for rm in request.resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        if metric.name == name:
                            return metric
        return None

    def wait(self, predicate: Any, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, self.latest()
            time.sleep(0.1)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
