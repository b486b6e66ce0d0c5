"""A real browser for the dashboard tests: Debian's chromium, headless, driven by Selenium
through chromium-driver. Locally a missing browser skips; in CI
(``CCMETER_REQUIRE_REAL_CLIENTS=1``, .ci/run installs both) it fails."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from realclients import _require

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1280,900", "--hide-scrollbars",
)


def _find(names: tuple[str, ...]) -> str | None:
    for name in names:
        found = shutil.which(name) or (name if os.path.exists(name) else None)
        if found:
            return found
    return None


@contextmanager
def chromium(*, dark: bool = False, width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A headless chromium (a fresh profile each time) whose console log can be read."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _require("selenium (pip install -e '.[test]')")
    binary = _find(("chromium", "/usr/bin/chromium", "chromium-browser"))
    driver_bin = _find(("chromedriver", "/usr/bin/chromedriver"))
    if binary is None or driver_bin is None:
        _require("chromium and chromium-driver (apt-get install chromium chromium-driver)")
    profile = tempfile.mkdtemp(prefix="ccmeter-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    options.add_argument(f"--user-data-dir={profile}")
    if dark:
        options.add_argument("--force-dark-mode")
        options.add_argument("--blink-settings=preferredColorScheme=0")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_bin), options=options)
    driver.set_page_load_timeout(30)
    try:
        if dark:  # the media query itself, whatever the flags did
            driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
                "features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver: Any) -> list[dict[str, Any]]:
    """The browser console's errors and warnings since the last call."""
    return [entry for entry in driver.get_log("browser")
            if entry.get("level") in ("SEVERE", "WARNING")]


def require_browser() -> None:
    """Skip (or, in CI, fail) before starting servers when there is no browser."""
    if _find(("chromium", "/usr/bin/chromium")) is None or _find(
            ("chromedriver", "/usr/bin/chromedriver")) is None:
        _require("chromium and chromium-driver (apt-get install chromium chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        _require("selenium (pip install -e '.[test]')")
