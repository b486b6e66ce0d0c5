"""Where the reference clients are: the real Claude Code CLI and the official anthropic SDK.

Locally a missing client skips its tests; in CI (``CCMETER_REQUIRE_REAL_CLIENTS=1``, set by
.ci/run, which installs both) a missing client fails them, so they can never pass silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _require(what: str) -> None:
    if os.environ.get("CCMETER_REQUIRE_REAL_CLIENTS") == "1":
        pytest.fail(f"{what} is required in CI but was not found")
    pytest.skip(f"{what} not installed")


def claude_bin() -> str:
    candidates = [os.environ.get("CCMETER_CLAUDE_BIN"), shutil.which("claude"),
                  str(ROOT / "node_modules" / ".bin" / "claude")]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    _require("the Claude Code CLI (npm install @anthropic-ai/claude-code)")
    raise AssertionError("unreachable")


def sdk_python() -> str:
    """A Python interpreter with the ``anthropic`` package (may be another virtualenv)."""
    for candidate in (os.environ.get("CCMETER_SDK_PYTHON"), shutil.which("python3")):
        if not candidate:
            continue
        probe = subprocess.run([candidate, "-c", "import anthropic"], capture_output=True)
        if probe.returncode == 0:
            return candidate
    _require("the anthropic Python SDK (set CCMETER_SDK_PYTHON to a python that has it)")
    raise AssertionError("unreachable")


def prometheus_bin() -> str:
    """The Prometheus server (Debian's ``prometheus`` package; .ci/run installs it)."""
    found = os.environ.get("CCMETER_PROMETHEUS_BIN") or shutil.which("prometheus")
    if found and Path(found).exists():
        return found
    _require("the Prometheus server (apt-get install prometheus)")
    raise AssertionError("unreachable")
