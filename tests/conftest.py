"""Every test runs in a user's own layout: a fresh ``HOME`` and nothing else.

The default (autouse) is what a newcomer has after ``pip install``: ``HOME`` set, no
``CCMETER_HOME``, no ``XDG_*`` variables, so ccmeter uses the platform folders
(``~/.config/ccmeter`` for the config, ``~/.local/share/ccmeter`` for the data on Linux). The
``user_dirs`` fixture names those folders for a test to look into.

``home`` (and its older name ``isolated_home``) opts a test into the one-folder layout of
``CCMETER_HOME`` instead; prefer the default for new tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccmeter import config

_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy",
               "ANTHROPIC_BASE_URL")
_LAYOUT_VARS = ("CCMETER_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME",
                "XDG_CACHE_HOME", "XDG_RUNTIME_DIR", "CCMETER_USER")


@pytest.fixture(autouse=True)
def user_home(tmp_path_factory, monkeypatch) -> Iterator[Path]:
    """A fresh ``HOME`` with no ccmeter or XDG variables: the layout users have."""
    home = tmp_path_factory.mktemp("user-home")
    monkeypatch.setenv("HOME", str(home))
    for name in _LAYOUT_VARS + _PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setenv("NO_COLOR", "1")
    yield home
    _stop_resident_proxies(home)


def _stop_resident_proxies(*roots: Path) -> None:
    """A ``ccmeter run`` leaves its shared proxy running until it has been idle a while
    (ten minutes by default): stop the ones this test's runs started, by their status files."""
    homes = [*roots, *(Path(h) for h in [os.environ.get("CCMETER_HOME")] if h)]
    for root in homes:
        for status in root.glob("**/proxies/*.json"):
            try:
                pid = json.loads(status.read_text())["pid"]
                if isinstance(pid, int) and pid not in (0, os.getpid()):
                    os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError, KeyError, TypeError):
                pass


@pytest.fixture
def user_dirs(user_home) -> config.Paths:
    """The platform folders ccmeter uses under this test's ``HOME``."""
    where = config.paths()
    assert where.config_dir != where.data_dir or where.config_dir.is_relative_to(user_home)
    return where


@pytest.fixture
def isolated_home(user_home, tmp_path_factory, monkeypatch) -> Path:
    """Opt-in one-folder layout: ``CCMETER_HOME`` set to a fresh folder."""
    root = tmp_path_factory.mktemp("ccmeter-home")
    monkeypatch.setenv("CCMETER_HOME", str(root))
    return root


@pytest.fixture
def home(isolated_home) -> Path:
    """This test's CCMETER_HOME, under the name most tests use for it."""
    return Path(isolated_home)


@pytest.fixture
def residents(user_dirs) -> Iterator[config.Paths]:
    """The platform folders, and the shared proxies a test's runs left behind stopped."""
    from ccmeter import proxies

    yield user_dirs
    for doc in proxies.running(user_dirs):
        if doc.get("serves"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(doc["pid"], signal.SIGTERM)


@pytest.fixture
def work(tmp_path) -> Path:
    """A working folder (no git repository) whose name is the project: ``work``."""
    folder = tmp_path / "work"
    folder.mkdir()
    return folder
