"""Every test runs in its own CCMETER_HOME, with a fixed terminal width and no colour."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("ccmeter-home")
    monkeypatch.setenv("CCMETER_HOME", str(home))
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("CCMETER_USER", raising=False)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY",
                 "no_proxy", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def home(isolated_home) -> Path:
    """This test's CCMETER_HOME, under the name most tests use for it."""
    return Path(isolated_home)
