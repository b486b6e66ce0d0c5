"""What ``ccmeter run`` does about Claude Code's transcripts as it starts: cheap by design.

``import_on_run = true`` in the config: an incremental ``ccmeter import`` is started in the
background (its own low-priority process, output discarded), so reports include what Claude
Code did outside ccmeter; the run never waits for it. ``import_on_run = false``: nothing.
Unset: while nothing was ever imported and a transcript folder exists, one line on stderr
says how to import. All this costs ``run`` a few ``stat`` calls (no database, no parsing).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ccmeter import config

#: Written by every ``ccmeter import``: its presence silences the hint.
STAMP_NAME = "transcripts-imported"

HINT = ("ccmeter: Claude Code's transcripts hold history from before ccmeter: "
        "`ccmeter import` adds it to your reports (or set import_on_run = true in the config "
        "to import at each run; false silences this line)")


def stamp_file(paths: config.Paths) -> Path:
    return paths.data_dir / STAMP_NAME


def import_on_run(cfg: Mapping[str, Any]) -> bool | None:
    """The ``import_on_run`` setting: True, False, or None when it is not set."""
    value = cfg.get("import_on_run")
    if value is None or isinstance(value, bool):
        return value
    raise config.CCMeterError(f"import_on_run in the config must be true or false, got {value!r}")


def at_run_start(paths: config.Paths, cfg: Mapping[str, Any],
                 notify: Callable[[str], None]) -> None:
    """Start a background import, or say how to import, as the config asks. Never raises
    for a problem of its own (a run must not fail for want of history)."""
    setting = import_on_run(cfg)
    if setting is False:
        return
    try:
        if setting:
            _start_background_import()
            return
        if stamp_file(paths).exists():
            return
        if any(root.is_dir() for root in config.claude_transcript_roots()):
            notify(HINT)
    except OSError:
        pass


def _start_background_import() -> None:
    def lower_priority() -> None:
        with contextlib.suppress(OSError):
            os.nice(10)

    subprocess.Popen(  # our own CLI, by the interpreter that runs us
        [sys.executable, "-m", "ccmeter.cli", "import", "--quiet"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, preexec_fn=lower_priority, close_fds=True,
    )
