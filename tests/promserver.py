"""A real Prometheus server for the tests: a temporary config scraping the given targets
every second, its data in a temporary folder, its HTTP API on a free loopback port.
Not a conftest: imported by name (``from promserver import Prometheus``)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from mitm import free_port
from realclients import prometheus_bin


class Prometheus:
    def __init__(self, workdir: Path, targets: list[str], interval: str = "1s") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n"
            f"  scrape_interval: {interval}\n"
            f"  evaluation_interval: {interval}\n"
            "scrape_configs:\n"
            "  - job_name: ccmeter\n"
            f"    scrape_interval: {interval}\n"
            "    static_configs:\n"
            f"      - targets: {json.dumps(targets)}\n")
        self.log_path = workdir / "prometheus.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [prometheus_bin(), f"--config.file={config}",
             f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"prometheus did not start: {self.log_path.read_text()}")
            time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, expr: str) -> dict[str, Any]:
        """``/api/v1/query`` for ``expr`` now: the whole answer (status, data)."""
        query = urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/query?{query}", timeout=10) as a:
                return json.loads(a.read())
        except urllib.error.HTTPError as exc:  # a bad query: 400 with the error
            return json.loads(exc.read())

    def query(self, expr: str) -> dict[frozenset, float]:
        """An instant vector: each series' labels (without ``__name__``) -> its value."""
        answer = self.api(expr)
        assert answer["status"] == "success", (expr, answer)
        assert answer["data"]["resultType"] == "vector", (expr, answer)
        return {frozenset((k, v) for k, v in r["metric"].items() if k != "__name__"):
                float(r["value"][1]) for r in answer["data"]["result"]}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
