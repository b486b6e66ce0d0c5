"""The dashboard over real HTTP (no browser): every page's figures equal the CLI's reports,
filters narrow them as ``--project`` / ``--model`` do, the server is loopback-only and
read-only, and ``report --format html`` is one self-contained file."""

from __future__ import annotations

import html
import http.client
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from realistic_db import PROJECTS, fill_realistic

from ccmeter import config, store
from ccmeter.dashboard.server import DashboardServer, make_server


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ccmeter.entry", *args], capture_output=True,
                          text=True, timeout=120)


def cli_json(*args: str) -> dict:
    done = cli(*args, "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def filled(user_dirs) -> int:
    return fill_realistic()


@pytest.fixture
def server(filled) -> Iterator[DashboardServer]:
    srv = make_server(config.paths().db_file)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    srv.dashboard.close()


def get(srv: DashboardServer, path: str, *, method: str = "GET",
        host: str | None = None) -> tuple[int, dict[str, str], str]:
    port = srv.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True)
        conn.putheader("Host", host or f"127.0.0.1:{port}")
        conn.endheaders()
        response = conn.getresponse()
        body = response.read().decode()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def picousd(page: str, ident: str) -> int | None:
    found = re.search(rf'id="{ident}" data-picousd="(\d*)"', page)
    assert found, f"no #{ident} in the page"
    return int(found.group(1)) if found.group(1) else None


def calls_shown(page: str) -> int:
    found = re.search(r'id="total-calls">([\d,]+)<', page)
    assert found
    return int(found.group(1).replace(",", ""))


PAGES = ["/", "/projects", "/sessions", "/caps", "/waste",
         "/project/" + quote(PROJECTS[0]), "/?stack=model&since=all"]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_answers_with_nothing_from_the_network(server, path):
    status, headers, page = get(server, path)
    assert status == 200, page[-500:]
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in headers["content-security-policy"]
    # nothing fetched from anywhere: no external src/href, no script file
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page)
    assert "<script src" not in page
    assert 'rel="icon" href="data:,"' in page  # not even a favicon request


def test_overview_totals_equal_the_report_command(server):
    _, _, page = get(server, "/?since=30d")
    report = cli_json("report", "--since", "30d")["totals"]
    assert picousd(page, "total-cost") == report["cost_picousd"]
    assert picousd(page, "total-saved") == report["cache_savings_picousd"]
    assert calls_shown(page) == report["calls"]
    today = cli_json("report", "--since", "today")["totals"]
    card = page.split('id="period-today"')[1].split('id="period-this-week"')[0]
    assert f'data-picousd="{today["cost_picousd"]}"' in card
    # the project table: each row as report --by project has it
    by_project = cli_json("report", "--by", "project", "--since", "30d")["rows"]
    table = page.split('id="by-project"')[1].split("</table>")[0]
    for row in by_project:
        assert html.escape(row["project"]) in table
        assert f'data-picousd="{row["cost_picousd"]}"' in table


def test_filters_narrow_the_figures_as_the_cli_options_do(server):
    project = PROJECTS[1]
    _, _, page = get(server, f"/?since=30d&project={quote(project)}&model=opus")
    report = cli_json("report", "--since", "30d", "--project", project, "--model", "opus")
    assert picousd(page, "total-cost") == report["totals"]["cost_picousd"]
    assert calls_shown(page) == report["totals"]["calls"]
    everything = cli_json("report", "--since", "30d")["totals"]
    assert 0 < report["totals"]["calls"] < everything["calls"]
    _, _, project_page = get(server, "/project/" + quote(project) + "?since=30d")
    only = cli_json("report", "--since", "30d", "--project", project)["totals"]
    assert picousd(project_page, "total-cost") == only["cost_picousd"]
    _, _, page = get(server, "/?since=2h&until=1h")
    narrow = cli_json("report", "--since", "2h", "--until", "1h")["totals"]
    assert calls_shown(page) == narrow["calls"]


def test_the_session_page_equals_the_session_command(server):
    sid = cli_json("sessions")["rows"][0]["session"]
    status, _, page = get(server, f"/session/{sid[:8]}")
    assert status == 200
    detail = cli_json("session", sid[:8])
    assert picousd(page, "total-cost") == detail["totals"]["cost_picousd"]
    assert calls_shown(page) == len(detail["rows"]) == len(re.findall(
        r"<tr>", page.split('id="calls"')[1])) - 1
    assert detail["meta"]["session_id"] in page
    saved = cli_json("report", "--by", "session")
    row = next(r for r in saved["rows"] if r["session"] == detail["meta"]["session_id"])
    assert picousd(page, "total-saved") == row["cache_savings_picousd"]
    assert get(server, "/session/nothing-like-it")[0] == 404


def test_caps_page_shows_each_cap_as_ccmeter_caps_does(server):
    assert cli("caps", "set", "--daily", "20", "--monthly", "0.01").returncode == 0
    _, _, page = get(server, "/caps")
    caps = {row["cap"]: row for row in cli_json("caps")["rows"]}
    table = page.split('id="caps"')[1]
    assert "daily" in table and "monthly" in table
    assert caps["monthly"]["state"] == "reached" and 'class="state-reached"' in table
    _, _, overview = get(server, "/")
    month = overview.split('id="period-this-month"')[1].split("</div></div>")[0]
    assert "of the monthly cap $0.01" in month and "state-reached" in month


def test_live_version_moves_when_a_call_lands(server):
    before = json.loads(get(server, "/api/version")[2])["version"]
    assert json.loads(get(server, "/api/version")[2])["version"] == before  # stable at rest
    db = store.connect(config.paths().db_file)
    try:
        store.upsert_calls(db, [{"call_uid": "live-1", "started_ts": time.time(),
                                 "started_at": "now", "status": "ok", "model": "claude-opus-4-8",
                                 "input_tokens": 1, "output_tokens": 1,
                                 "updated_ts": time.time()}])
    finally:
        db.conn.close()
    after = json.loads(get(server, "/api/version")[2])["version"]
    assert after != before


def test_read_only_and_loopback_only(server):
    assert get(server, "/", method="POST")[0] == 405
    assert get(server, "/", method="DELETE")[0] == 405
    # a page elsewhere that rebinds its name to 127.0.0.1 is refused by the Host check
    assert get(server, "/", host=f"evil.example:{server.server_address[1]}")[0] == 403
    assert get(server, "/", host=f"localhost:{server.server_address[1]}")[0] == 200
    assert str(server.server_address[0]) == "127.0.0.1"


def test_a_bad_filter_is_one_line_and_a_way_back(server):
    status, _, page = get(server, "/?since=fortnight")
    assert status == 400
    assert "not a duration" in page or "fortnight" in page
    assert 'href="/">Show this page without filters' in page
    assert get(server, "/?stack=colour")[0] == 400
    assert get(server, "/no/such/page")[0] == 404


def test_report_format_html_is_one_self_contained_file(filled):
    done = cli("report", "--since", "30d", "--by", "model", "--by", "day", "--format", "html")
    assert done.returncode == 0, done.stderr
    page = done.stdout
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page)
    assert "<svg" in page and "<style>" in page
    totals = cli_json("report", "--since", "30d", "--by", "model", "--by", "day")["totals"]
    assert picousd(page, "total-cost-0") == totals["cost_picousd"]
    default = cli("report", "--format", "html")
    assert default.returncode == 0 and "Today by project" in default.stdout
    assert "This week by project" in default.stdout
    bad = cli("sessions", "--format", "html")  # html is the report's alone
    assert bad.returncode != 0 and "unknown --format 'html'" in bad.stderr


def test_dashboard_command_serves_until_stopped_and_warns_beyond_loopback(user_dirs):
    proc = subprocess.Popen([sys.executable, "-m", "ccmeter.entry", "dashboard", "--no-open"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert found, line + (proc.stderr.read() if proc.stderr else "")
        conn = http.client.HTTPConnection("127.0.0.1", int(found.group(1)), timeout=30)
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 200 and b"No calls recorded yet" in response.read()
        conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    wide = subprocess.Popen([sys.executable, "-m", "ccmeter.entry", "dashboard", "--no-open",
                             "--host", "0.0.0.0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        first = wide.stdout.readline() if wide.stdout else ""
        assert "beyond loopback" in first
    finally:
        wide.terminate()
        wide.wait(timeout=10)


def test_an_ipv6_loopback_address_serves_too(filled):
    srv = make_server(config.paths().db_file, "::1", 0)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                     daemon=True).start()
    try:
        assert srv.url.startswith("http://[::1]:")
        conn = http.client.HTTPConnection("::1", srv.server_address[1], timeout=30)
        conn.request("GET", "/caps")  # http.client sends Host: [::1]:PORT
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        srv.shutdown()
        srv.server_close()
        srv.dashboard.close()


def test_the_session_page_marks_refused_and_failed_calls(server):
    now = time.time()
    base = {"session_id": "refused-session", "project": "api-server", "updated_ts": now,
            "started_at": "now", "model": "claude-opus-4-8", "input_tokens": 10,
            "output_tokens": 5, "cost_picousd": 1_000_000}
    db = store.connect(config.paths().db_file)
    try:
        store.upsert_calls(db, [
            {**base, "call_uid": "r-1", "started_ts": now - 30, "status": "ok",
             "http_status": 200},
            {**base, "call_uid": "r-2", "started_ts": now - 20, "status": "blocked",
             "http_status": 429, "cost_picousd": None, "output_tokens": 0},
            {**base, "call_uid": "r-3", "started_ts": now - 10, "status": "upstream_error",
             "http_status": 529, "cost_picousd": None, "output_tokens": 0}])
    finally:
        db.conn.close()
    status, _, page = get(server, "/session/refused-session")
    assert status == 200
    assert "1 refused by a cap · 1 failed or incomplete" in page
    calls = page.split('id="calls"')[1]
    assert '<span class="status-refused">blocked</span>' in calls
    assert '<span class="status-failed">upstream_error 529</span>' in calls
    timeline = page.split("Calls on a timeline")[1].split("</svg>")[0]
    assert 'class="refused"' in timeline and 'class="failed"' in timeline
