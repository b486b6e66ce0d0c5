"""The dashboard in a real browser (headless chromium via Selenium): pages load without a
console error, the totals on screen are the database's, the filter form and the keyboard
work, dark mode is dark, and the overview updates by itself after a call through a real
proxy. Locally without chromium these skip; in CI they must run (see tests/browser.py)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from browser import chromium, console_errors, require_browser
from realistic_db import PROJECTS, fill_realistic
from standin import StandIn
from userproxy import UserProxy

from ccmeter import config
from ccmeter.dashboard.server import DashboardServer, make_server
from ccmeter.money import format_usd


@pytest.fixture(scope="module")
def browser() -> Iterator:
    require_browser()
    with chromium() as driver:
        yield driver


@pytest.fixture
def server(user_dirs) -> Iterator[DashboardServer]:
    fill_realistic()
    srv = make_server(config.paths().db_file)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                     daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()
    srv.dashboard.close()


def url(srv: DashboardServer, path: str) -> str:
    return srv.url.rstrip("/") + path


def db_totals(where: str = "", params: tuple = ()) -> tuple[int, int]:
    """(calls, picodollars) straight from the database file."""
    conn = sqlite3.connect(config.paths().db_file)
    try:
        row = conn.execute(f"SELECT COUNT(*), SUM(cost_picousd) FROM api_calls {where}",
                           params).fetchone()
    finally:
        conn.close()
    return int(row[0]), int(row[1] or 0)


def shown(driver, ident: str) -> tuple[str, str]:
    """The text of ``#ident`` and its exact ``data-picousd``."""
    el = driver.find_element("id", ident)
    return el.text, el.get_attribute("data-picousd") or ""


def shown_calls(driver) -> int:
    return int(driver.find_element("id", "total-calls").text.replace(",", ""))


def assert_clean(driver, what: str) -> None:
    errors = console_errors(driver)
    assert not errors, f"{what}: console says {errors}"


def test_every_page_loads_without_console_errors(browser, server):
    sid = db_sessions()[0]
    for path in ("/", "/projects", "/sessions", f"/session/{sid}", "/caps", "/waste",
                 "/project/" + quote(PROJECTS[0]), "/?stack=model&since=all"):
        browser.get(url(server, path))
        assert browser.find_element("tag name", "h1").text, path
        assert browser.find_elements("css selector", "svg.chart") or path == "/caps", path
        assert_clean(browser, path)


def db_sessions() -> list[str]:
    conn = sqlite3.connect(config.paths().db_file)
    try:
        return [r[0] for r in conn.execute(
            "SELECT session_id FROM api_calls GROUP BY 1 ORDER BY SUM(cost_picousd) DESC")]
    finally:
        conn.close()


def test_totals_on_screen_are_the_databases_and_the_filter_form_narrows_them(browser, server):
    browser.get(url(server, "/?since=all"))
    count, cost = db_totals()
    text, pico = shown(browser, "total-cost")
    assert (shown_calls(browser), int(pico)) == (count, cost)
    assert text == format_usd(cost)
    # the filter form, by keyboard: type a project, Enter submits
    project = PROJECTS[2]
    field = browser.find_element("css selector", "form.filters input[name=project]")
    field.send_keys(project + "\n")
    wait_for(lambda: "project=" in browser.current_url)
    count_p, cost_p = db_totals("WHERE project = ?", (project,))
    assert 0 < count_p < count
    assert shown_calls(browser) == count_p
    assert shown(browser, "total-cost") == (format_usd(cost_p), str(cost_p))
    assert_clean(browser, "filtered overview")
    # a session page: its calls and cost
    sid = db_sessions()[0]
    browser.get(url(server, f"/session/{sid[:8]}"))
    count_s, cost_s = db_totals("WHERE session_id = ?", (sid,))
    assert shown_calls(browser) == count_s and shown(browser, "total-cost")[1] == str(cost_s)
    rows = browser.find_elements("css selector", "#calls tbody tr")
    assert len(rows) == count_s


def test_keyboard_reaches_the_navigation_and_follows_it(browser, server):
    from selenium.webdriver.common.keys import Keys

    browser.get(url(server, "/"))
    body = browser.find_element("tag name", "body")
    body.send_keys(Keys.TAB)
    active = browser.switch_to.active_element
    assert active.text == "Skip to content"
    seen = []
    for _ in range(6):
        active.send_keys(Keys.TAB)
        active = browser.switch_to.active_element
        seen.append(active.text)
        if active.text == "Caps & plan":
            break
    assert seen[-1] == "Caps & plan", seen
    outline = browser.execute_script(
        "return getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"  # focus is visible
    active.send_keys(Keys.ENTER)
    wait_for(lambda: browser.current_url.endswith("/caps"))
    assert browser.find_element("tag name", "h1").text == "Caps and plan windows"


def test_dark_mode_is_dark(server):
    require_browser()
    with chromium(dark=True) as driver:
        driver.get(url(server, "/"))
        background = driver.execute_script(
            "return getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(20, 23, 27)"
        assert_clean(driver, "dark overview")


def test_the_html_export_opens_offline_without_errors(browser, user_dirs, tmp_path):
    fill_realistic()
    done = subprocess.run([sys.executable, "-m", "ccmeter.entry", "report", "--since", "30d",
                           "--by", "project", "--by", "day", "--format", "html"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    page = tmp_path / "spend.html"
    page.write_text(done.stdout)
    browser.get(page.as_uri())
    _, cost = db_totals("WHERE started_ts >= ?", (time.time() - 30 * 86400,))
    assert shown(browser, "total-cost-0")[1] == str(cost)
    assert browser.find_elements("css selector", "svg.chart")
    assert_clean(browser, "the exported file")


def wait_for(predicate, timeout: float = 10.0) -> float:
    """Seconds until ``predicate()`` held; fails at the timeout."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        try:
            if predicate():
                return time.monotonic() - began
        except Exception:  # the page swapping its content under the query
            pass
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def test_the_overview_updates_by_itself_after_a_call_through_a_real_proxy(browser, server,
                                                                          tmp_path):
    import json

    browser.get(url(server, "/?since=all"))
    before = shown_calls(browser)
    assert browser.find_element("id", "live").text == "live"
    body = json.dumps({"model": "claude-opus-4-8", "max_tokens": 100, "stream": True,
                       "metadata": {"user_id": json.dumps({"session_id": "live-session"})},
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    with StandIn() as standin, UserProxy(standin.url, tmp_path) as proxy:
        status, _, _ = proxy.post(body)
        assert status == 200
        # from the end of the answer to the new call on screen, with no reload by us
        waited = wait_for(lambda: shown_calls(browser) == before + 1, timeout=8)
    print(f"the overview showed the call {waited:.2f}s after its answer ended")
    assert waited < 3.0, f"the overview took {waited:.2f}s after the call ended"
    count, cost = db_totals()
    assert shown(browser, "total-cost")[1] == str(cost) and count == before + 1
    assert "updated" in browser.find_element("id", "live").text
    assert_clean(browser, "live overview")


def test_screenshot_files_are_small(tmp_path):
    """The docs' screenshots exist and stay small (kept under 300 KB each)."""
    docs = Path(__file__).resolve().parent.parent / "docs" / "images"
    shots = sorted(docs.glob("dashboard-*.png"))
    assert len(shots) >= 6, shots
    for shot in shots:
        assert shot.stat().st_size < 300_000, shot
