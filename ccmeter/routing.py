"""Where metered calls go, and the proxy's own answer when that place cannot be reached.

The upstream and the extra hosts come from the addon's options (``ccmeter_upstream``,
``ccmeter_hosts``: ``run`` and ``serve`` set them, ``--set`` does under ``mitmdump``) or,
when an option is unset, from ``upstream`` and ``hosts`` in config.toml, re-read when the
file changes. A call to ``api.anthropic.com`` (or a cloud host) is re-routed to the upstream.

Until the upstream has answered once (and again after it could not be reached) a metered
call's destination is tried first (one TCP connect): when it cannot be reached, the client
gets an error in the provider's shape naming ccmeter and the URL tried, instead of
mitmproxy's HTML 502 page, which Claude Code retried for three minutes and then blamed on
status.claude.com. See docs/configuration.md, "When the upstream cannot be reached".
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from mitmproxy import ctx, http

from ccmeter import config, providers
from ccmeter.desk import ANTHROPIC_HOST
from ccmeter.failures import connection_cause

log = logging.getLogger(__name__)

#: How long the first try of an upstream may take before the call is answered "timed out".
PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Upstream:
    scheme: str
    host: str
    port: int
    prefix: str

    @property
    def url(self) -> str:
        default = 443 if self.scheme == "https" else 80
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}{self.prefix}"


def parse_upstream(url: str) -> Upstream:
    """``https://gateway.example.com/prefix`` as an :class:`Upstream` (ValueError if not)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL, got {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Upstream(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))


class Routes:
    """The upstream and metered hosts of one proxy: options first, then the config."""

    def __init__(self) -> None:
        self._option_upstream: Upstream | None = None
        self._option_hosts: tuple[str, ...] = ()
        self._config_upstream: Upstream | None = None
        self._config_hosts: tuple[str, ...] = ()
        self.upstream: Upstream | None = None
        self.hosts: frozenset[str] = frozenset({ANTHROPIC_HOST})

    def options(self, upstream: str | None, hosts: Iterable[str]) -> None:
        """The addon's options (ValueError for a bad upstream URL)."""
        self._option_upstream = parse_upstream(upstream) if upstream else None
        self._option_hosts = tuple(h.lower() for h in hosts)
        self._resolve()

    def config(self, cfg: Mapping[str, Any]) -> str | None:
        """``upstream`` and ``hosts`` from config.toml; why they were not taken, if so (the
        previous ones stay)."""
        try:
            raw = config.config_text(cfg, "upstream")
            upstream = parse_upstream(raw) if raw else None
            hosts = cfg.get("hosts", [])
            if not isinstance(hosts, list) or not all(isinstance(h, str) and h for h in hosts):
                raise ValueError("must be a list of host names")
        except (ValueError, config.CCMeterError) as exc:
            return f"upstream/hosts: {exc}"
        self._config_upstream = upstream
        self._config_hosts = tuple(h.lower() for h in hosts)
        self._resolve()
        return None

    def _resolve(self) -> None:
        before = self.upstream
        self.upstream = self._option_upstream or self._config_upstream
        hosts = {ANTHROPIC_HOST, *(self._option_hosts or self._config_hosts)}
        if self.upstream is not None:
            hosts.add(self.upstream.host.lower())
        self.hosts = frozenset(hosts)
        if self.upstream != before:
            log.info("ccmeter: metered calls go to %s%s",
                     self.upstream.url if self.upstream else f"https://{ANTHROPIC_HOST}",
                     " (from the config file)" if self.upstream is not None
                     and self._option_upstream is None else "")

    def lazy_connections(self) -> None:
        """With an upstream, mitmproxy must not dial the original host when a client sends
        CONNECT (its default, ``connection_strategy=eager``): the call goes elsewhere, and
        that host may not even resolve here. Only the upstream is dialled, once the request
        is read."""
        with contextlib.suppress(AttributeError, KeyError):
            if self.upstream is not None and ctx.options.connection_strategy == "eager":
                log.info("ccmeter: connection_strategy set to lazy: with an upstream, the "
                         "original host is never dialled")
                ctx.options.update(connection_strategy="lazy")

    def route(self, flow: http.HTTPFlow, original: str) -> None:
        """Send a call for ``original`` (its host, lower-cased) to the upstream, if any."""
        if self.upstream is None:
            return
        up = self.upstream
        if providers.is_cloud_host(original):
            # Only the destination changes: path, Host and every signed header stay as sent.
            headers, authority = flow.request.headers.copy(), flow.request.authority
            flow.request.scheme, flow.request.host, flow.request.port = up.scheme, up.host, up.port
            flow.request.headers, flow.request.authority = headers, authority
            flow.request.path = up.prefix + flow.request.path
            return
        if original != ANTHROPIC_HOST:
            return
        flow.request.scheme = up.scheme
        flow.request.host = up.host
        flow.request.port = up.port
        flow.request.path = up.prefix + flow.request.path
        flow.request.headers["host"] = up.host if up.port in (80, 443) else f"{up.host}:{up.port}"


def target(flow: http.HTTPFlow) -> str:
    """The URL a flow was sent to (scheme, host, port): what the log names."""
    request = flow.request
    default = 443 if request.scheme == "https" else 80
    port = "" if request.port == default else f":{request.port}"
    return f"{request.scheme}://{request.host}{port}"


async def unreachable(host: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Try one TCP connection to ``host:port``: None when it is made (and closed at once),
    else why not, in a few words (``connection refused``)."""
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except TimeoutError:
        return "timed out"
    except OSError as exc:
        return connection_cause(str(exc))
    writer.close()
    return None


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def should_retry(host: str, cause: str) -> bool:
    """A refused connection to an upstream on this machine is a server that is not running:
    retrying cannot help, so the client is told at once. Anything else (a time-out, a name
    that does not resolve, a remote host refusing) may be a passing blip: the client's own
    retries (Claude Code: up to 10, with back-off) deserve their chance."""
    return not (cause == "connection refused" and is_loopback(host))


def unreachable_response(provider: str, url: str, cause: str, *, retry: bool) -> http.Response:
    """What the client gets for a call whose upstream cannot be reached."""
    message = f"ccmeter: cannot reach the upstream {url} ({cause})"
    answer = providers.upstream_unreachable(provider, message, retry=retry)
    return http.Response.make(answer.status, answer.body, answer.headers)
