"""``ccmeter dashboard``'s web server: the standard library's threading HTTP server on
loopback, answering GET with pages rendered from the database, read-only.

Design notes (the why):
- Each request opens its own read-only connection (``mode=ro`` + ``query_only``): nothing
  the dashboard does can write, and a thread never shares a connection.
- Live updates need nothing from the proxy: ``/api/version`` answers ``PRAGMA
  data_version`` of one long-lived connection (it changes whenever another connection
  commits) and the config file's mtime (caps set elsewhere). Pages poll it every second
  and fetch themselves again when it moves. The proxy's byte path is not involved at all.
- Requests whose ``Host`` is not this loopback address are refused (a web page elsewhere
  cannot reach the dashboard by DNS rebinding); only GET and HEAD exist.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ccmeter import config, store
from ccmeter.dashboard import data, layout, pages

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Dashboard:
    """The pages of one database, rendered on demand."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._lock = threading.Lock()
        self._watch: sqlite3.Connection | None = None

    def connect(self) -> Any:
        """A read-only connection for one request."""
        return store.MigratedDatabase(store.connect_reader(self.db_path))

    def version(self) -> str:
        """Moves whenever a call is written (by any process) or the config changes."""
        with self._lock:
            if self._watch is None:
                self._watch = store.connect_reader(self.db_path, any_thread=True)
            changes = store.data_version(self._watch)
        try:
            stamp = config.paths().config_file.stat().st_mtime_ns
        except OSError:
            stamp = 0
        return f"{changes}.{stamp}"

    def warm_waste(self, now: float | None = None) -> None:
        """Account every finished session's cache waste into the waste memo once, so that
        the waste page over any range is quick from its first view (run in the background
        at start; later sessions are added as pages need them)."""
        from ccmeter import wastereport

        try:
            _cfg, catalog = self._context()
            db = self.connect()
            try:
                wastereport.warm(db, catalog, time.time() if now is None else now)
            finally:
                db.conn.close()
        except Exception:  # the page computes what is missing itself
            log.debug("waste memo warm-up failed", exc_info=True)

    def close(self) -> None:
        with self._lock:
            if self._watch is not None:
                self._watch.close()
                self._watch = None

    def render(self, path: str, query: str, now: float | None = None) -> tuple[int, str, str]:
        """(status, content type, body) for a GET of ``path?query``."""
        now = time.time() if now is None else now
        if path == "/api/version":
            return 200, "application/json", json.dumps({"version": self.version()})
        route = self._route(path)
        if route is None:
            return 404, "text/html", layout.error_page(404, f"No page at {path}.")
        title, active, build = route
        params = parse_qs(query, keep_blank_values=True)
        version = self.version()
        db = self.connect()
        try:
            body = build(db, params, now)
        except config.CCMeterError as exc:
            return 400, "text/html", layout.page("Cannot show this", layout.filter_error(
                str(exc), path), active=active)
        except LookupError as exc:
            return 404, "text/html", layout.error_page(404, str(exc))
        finally:
            db.conn.close()
        return 200, "text/html", layout.page(title(params), body, active=active,
                                             version=version)

    def _route(self, path: str) -> tuple[Callable[[Any], str], str | None,
                                         Callable[[Any, Any, float], str]] | None:
        if path == "/":
            return (lambda p: "Overview"), "/", self._overview
        if path == "/projects":
            return (lambda p: "Projects"), "/projects", self._projects
        if path == "/sessions":
            return (lambda p: "Sessions"), "/sessions", self._sessions
        if path == "/caps":
            return (lambda p: "Caps and plan windows"), "/caps", self._caps
        if path == "/waste":
            return (lambda p: "Waste"), "/waste", self._waste
        for prefix, build, what in (("/project/", self._project, "Project"),
                                    ("/session/", self._session, "Session")):
            if path.startswith(prefix) and len(path) > len(prefix):
                name = unquote(path[len(prefix):])

                def bound(db: Any, params: Any, now: float, name: str = name,
                          build: Any = build) -> str:
                    return str(build(db, params, now, name))

                return (lambda p, n=name, w=what: f"{w} {n}"), None, bound
        return None

    # --- pages ------------------------------------------------------------------------------

    def _context(self) -> tuple[Any, Any]:
        from ccmeter.views.common import load_catalog

        cfg = config.load_config()
        return cfg, load_catalog(cfg)

    def _overview(self, db: Any, params: Any, now: float) -> str:
        cfg, catalog = self._context()
        pf = data.parse_filters(params, now)
        return pages.overview(data.overview(db, cfg, catalog, pf, now), pf)

    def _projects(self, db: Any, params: Any, now: float) -> str:
        from ccmeter import reports

        _cfg, catalog = self._context()
        pf = data.parse_filters(params, now)
        rows = reports.build_report(db, ["project"], pf.report, catalog).rows
        return pages.projects(rows, pf)

    def _project(self, db: Any, params: Any, now: float, name: str) -> str:
        _cfg, catalog = self._context()
        pf = data.parse_filters(params, now, project=name)
        return pages.project(name, data.project_page(db, catalog, pf, now), pf)

    def _sessions(self, db: Any, params: Any, now: float) -> str:
        from ccmeter import reports

        _cfg, catalog = self._context()
        pf = data.parse_filters(params, now)
        rows = reports.build_report(db, ["session"], pf.report, catalog).rows
        return pages.sessions_list(rows[:500], pf)

    def _session(self, db: Any, params: Any, now: float, sid: str) -> str:
        _cfg, catalog = self._context()
        try:
            found = data.session_page(db, catalog, sid)
        except ValueError as exc:
            raise LookupError(str(exc)) from None
        return pages.session(found)

    def _caps(self, db: Any, params: Any, now: float) -> str:
        cfg, _catalog = self._context()
        return pages.caps(data.caps_page(db, cfg, now), now)

    def _waste(self, db: Any, params: Any, now: float) -> str:
        _cfg, catalog = self._context()
        pf = data.parse_filters(params, now, default_since="7d")  # as `ccmeter waste` is run
        return pages.waste(data.waste_page(db, catalog, pf, now), pf)


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _refuse_method(self) -> None:
        self._send(405, "text/plain", "read-only: GET and HEAD only\n", True,
                   {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse_method

    def _answer(self, body: bool) -> None:
        if not self.server.host_allowed(self.headers.get("Host", "")):
            self._send(403, "text/plain", "ccmeter dashboard: unexpected Host header\n", body)
            return
        url = urlsplit(self.path)
        try:
            status, kind, text = self.server.dashboard.render(url.path, url.query)
        except Exception:
            log.exception("dashboard page %s failed", url.path)
            status, kind = 500, "text/html"
            text = layout.error_page(500, "This page failed; the details are in ccmeter's log.")
        self._send(status, kind, text, body)

    def _send(self, status: int, kind: str, text: str, body: bool,
              extra: dict[str, str] | None = None) -> None:
        payload = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", layout.CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("dashboard: " + format, *args)


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], dashboard: Dashboard) -> None:
        self.dashboard = dashboard
        if ":" in address[0]:  # an IPv6 address (::1)
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), self.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def host_allowed(self, header: str) -> bool:
        """The Host a browser sends for this server's own address (or ``localhost``)."""
        host = str(self.server_address[0])
        if not is_loopback(host):
            return True  # bound beyond loopback on purpose (--host): any name may reach it
        port = self.server_address[1]
        names = {f"{host}:{port}", f"[{host}]:{port}", f"localhost:{port}"}
        return header in names


def make_server(db_path: Path, host: str = "127.0.0.1", port: int = 0) -> DashboardServer:
    """A server on ``host:port`` (port 0: a free one), not yet serving."""
    return DashboardServer((host, port), Dashboard(db_path))


def lower_priority() -> None:
    """Render pages at a lower CPU priority (nice 10): a proxy on the same machine, whose
    calls a person is waiting on, wins any contention with a page being redrawn."""
    # no nice on Windows; at the lowest priority already: either way, as it is
    with contextlib.suppress(AttributeError, OSError):
        os.nice(10)


def display_plausible() -> bool:
    """Whether opening a browser could show anything (not over SSH without X, not in CI)."""
    import sys

    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run(host: str = "127.0.0.1", port: int = 0, open_browser: bool = True,
        echo: Callable[[str], None] = print) -> None:
    """Serve the dashboard until interrupted (the ``ccmeter dashboard`` command)."""
    from ccmeter.views.common import open_db

    if not is_loopback(host):
        echo(f"ccmeter: warning: listening on {host}, beyond loopback: anyone who can reach "
             "this machine can read your spend (no login: the dashboard is meant for you)")
    open_db().conn.close()  # created and migrated once; the pages then only read it
    try:
        server = make_server(config.paths().db_file, host, port)
    except OSError as exc:
        raise config.CCMeterError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
                                  "pick another --port (0: any free port)") from None
    lower_priority()
    threading.Thread(target=server.dashboard.warm_waste, daemon=True).start()
    echo(f"ccmeter dashboard: {server.url}  (live; Ctrl-C to stop)")
    if open_browser and display_plausible():
        import webbrowser

        threading.Thread(target=webbrowser.open, args=(server.url,), daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.dashboard.close()
