"""Run the metering proxy inside this process, for ``ccmeter run`` and ``ccmeter serve``.

mitmproxy runs on its own thread with its own event loop (on Python 3.12+ ``Master.run``
changes the loop's task factory, so it must not share ours). A plain ``Master`` with the
default addons is used rather than ``DumpMaster``: DumpMaster's ErrorCheck would
``sys.exit`` the thread on a startup error, and its terminal logger would write into the
wrapped program's screen.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccmeter import config, desk, providers
from ccmeter.addon import ANTHROPIC_HOST, Meter
from ccmeter.rundesk import RunDesk
from ccmeter.shutdown import end_connections

log = logging.getLogger(__name__)

START_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class ProxySettings:
    """What to run. ``reverse`` accepts plain HTTP and forwards it to the API (no CA needed)."""

    paths: config.Paths
    port: int = 0
    host: str = "127.0.0.1"
    reverse: bool = False
    upstream: str | None = None
    project: str | None = None
    extra_hosts: tuple[str, ...] = ()
    ssl_insecure: bool = False
    upstream_ca: str | None = None
    #: Clouds whose runtime hosts are decrypted and metered too ("bedrock", "vertex").
    cloud: tuple[str, ...] = ()
    #: Stop after this long without a run, a connection or a call (None: run until stopped).
    idle_exit_s: float | None = None
    #: Serve Prometheus metrics on this port (None: no), on ``metrics_host``.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    #: The port was asked for on the command line: a port in use stops the start (from the
    #: config, as in a proxy ``run`` started, it is logged and the proxy goes on).
    metrics_required: bool = False

    def metered_hosts(self) -> list[str]:
        return desk.metered_hosts(self.upstream, self.extra_hosts)

    def intercept_patterns(self) -> list[str]:
        """``allow_hosts`` regexes: decrypt only API hosts; tunnel everything else untouched."""
        patterns = [rf"^{re.escape(h)}(:\d+)?$" for h in self.metered_hosts()]
        for name in self.cloud:
            patterns += providers.host_patterns(name)
        return patterns


class ProxyStartError(config.CCMeterError):
    pass


class _Lifecycle:
    """Added last: reports the bound port once the servers and the CA exist."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.addrs: list[Any] = []

    def running(self) -> None:
        from mitmproxy import ctx

        self.addrs = ctx.master.addons.get("proxyserver").listen_addrs()
        self.ready.set()

    async def done(self) -> None:
        # Master.shutdown() leaves the listening sockets and client connections open.
        await end_connections()


@dataclass
class RunningProxy:
    settings: ProxySettings
    port: int
    meter: Meter
    desk: RunDesk
    _master: Any = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    #: The Prometheus endpoint (ccmeter.metrics.prom.MetricsServer), when it serves one.
    metrics: Any = None
    #: The OTLP exporter (ccmeter.metrics.otlp.Exporter), when the environment asks for one.
    otlp: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    @property
    def ca_cert(self) -> Path:
        return self.settings.paths.ca_cert

    def stop(self, timeout: float = 10.0) -> None:
        self._master.shutdown()
        self._thread.join(timeout)
        stop_exporters(self)


def stop_exporters(running: RunningProxy) -> None:
    for exporter in (running.metrics, running.otlp):
        if exporter is not None:
            try:
                exporter.stop()
            except Exception:
                log.exception("ccmeter: stopping a metrics exporter failed")
    running.metrics = running.otlp = None


def start_metrics(settings: ProxySettings) -> Any:
    """The Prometheus endpoint of ``settings`` (None when it asks for none, or when a port
    from the config is taken: logged, and the proxy goes on — another proxy sharing the
    database may serve the very same figures there)."""
    if settings.metrics_port is None:
        return None
    from ccmeter.metrics import prom
    from ccmeter.metrics.snapshot import Reader

    reader = Reader(settings.paths.db_file, settings.paths)
    try:
        server = prom.serve(reader, settings.metrics_port, settings.metrics_host)
    except OSError as exc:
        where = f"{settings.metrics_host}:{settings.metrics_port}"
        if settings.metrics_required:
            raise ProxyStartError(f"cannot serve metrics on {where} ({exc.strerror or exc}); "
                                  "pick another --metrics-port") from exc
        log.warning("ccmeter: no Prometheus metrics from this proxy: %s is taken (%s); "
                    "another ccmeter proxy may serve them there", where, exc.strerror or exc)
        return None
    log.info("ccmeter: Prometheus metrics on %s", server.url)
    # The first read sums every stored call (~2 s on 1,000,000): done now, off every path,
    # so that the first scrape need not wait for it.
    threading.Thread(target=reader.snapshot, name="ccmeter-metrics-warm", daemon=True).start()
    return server


def start(settings: ProxySettings) -> RunningProxy:
    """Start the proxy on a thread and return once it listens (or raise ProxyStartError)."""
    from mitmproxy import options
    from mitmproxy.addons import default_addons
    from mitmproxy.master import Master

    config.ensure_private_dir(settings.paths.data_dir)
    config.ensure_private_dir(settings.paths.ca_dir)
    meter, life = Meter(settings.paths), _Lifecycle()
    exporter = start_otlp(settings, meter)  # before the first call can come
    runs = RunDesk(meter, desk.serves_doc(
        reverse=settings.reverse, upstream=None if settings.reverse else settings.upstream,
        hosts=settings.metered_hosts(), cloud=settings.cloud,
        idle_exit_s=settings.idle_exit_s, otlp=desk.otlp_endpoint(os.environ)),
        settings.idle_exit_s, settings.paths)
    box: dict[str, Any] = {}

    def thread_main() -> None:
        async def main() -> None:
            if settings.reverse:
                target = settings.upstream or f"https://{ANTHROPIC_HOST}"
                mode = [f"reverse:{target}"]
            else:
                mode = ["regular"]
            opts = options.Options(
                listen_host=settings.host,
                listen_port=settings.port,
                confdir=str(settings.paths.ca_dir),
                mode=mode,
                ssl_insecure=settings.ssl_insecure,
            )
            if not settings.reverse:
                opts.update(allow_hosts=settings.intercept_patterns())
            if settings.upstream_ca:
                opts.update(ssl_verify_upstream_trusted_ca=settings.upstream_ca)
            master = Master(opts)
            master.addons.add(*default_addons())
            master.addons.add(runs, meter, life)  # the desk tags a run's flows first
            master.options.update(
                connection_strategy="lazy",
                ccmeter_upstream=None if settings.reverse else settings.upstream,
                ccmeter_hosts=list(settings.extra_hosts),
                ccmeter_project=settings.project,
            )
            box["master"] = master
            await master.run()

        try:
            asyncio.run(main())
        except BaseException as exc:
            box["error"] = exc
            log.exception("ccmeter: the proxy thread stopped")
        finally:
            life.ready.set()

    thread = threading.Thread(target=thread_main, name="ccmeter-proxy", daemon=True)
    thread.start()
    if not life.ready.wait(START_TIMEOUT_S):
        if exporter is not None:
            exporter.stop()
        raise ProxyStartError("the proxy did not start within 20 s; see the log file")
    if "error" in box or not life.addrs:
        if exporter is not None:
            exporter.stop()
        if "master" in box:
            box["master"].shutdown()
        thread.join(5)
        reason = box.get("error")
        hint = (
            f"port {settings.port} on {settings.host} is in use? pick another with --port"
            if settings.port
            else "see the log file"
        )
        raise ProxyStartError(f"the proxy could not listen ({reason or hint})")
    port = int(life.addrs[0][1])
    running = RunningProxy(settings=settings, port=port, meter=meter, desk=runs,
                           _master=box["master"], _thread=thread, otlp=exporter)
    try:
        running.metrics = start_metrics(settings)
        if running.metrics is not None:
            meter.status.metrics(running.metrics.url)
    except BaseException:
        running.stop()
        raise
    return running


def start_otlp(settings: ProxySettings, meter: Meter) -> Any:
    """The OTLP exporter the standard ``OTEL_*`` variables ask for (None: they ask for
    none), counting each call's final row as the meter queues it."""
    if desk.otlp_endpoint(os.environ) is None:
        return None
    from ccmeter.metrics import otlp

    exporter = otlp.start(settings.paths, os.environ)
    if exporter is not None:
        meter.on_final_row = exporter.record
        log.info("ccmeter: OTLP metrics to %s", exporter.endpoint)
    return exporter
