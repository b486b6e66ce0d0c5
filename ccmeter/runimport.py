"""What ``ccmeter run`` does about Claude Code's transcripts as it starts: cheap by design.

``import_on_run = true`` in the config: an incremental ``ccmeter import`` is started in the
background (its own low-priority process, output discarded), so reports include what Claude
Code did outside ccmeter; the run never waits for it. ``import_on_run = false``: nothing.
Unset: while nothing was ever imported and a transcript folder exists, one line on stderr
says how to import. Standard library only, and a few ``stat`` calls: both the full ``run``
and its quick path (:mod:`ccmeter.quickrun`) call :func:`at_run_start`.
"""

from __future__ import annotations

import os
import sys

from ccmeter import folders

TYPE_CHECKING = False  # typing itself costs 2 ms to import (the quick path counts them)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

#: Written by every ``ccmeter import``, in the data folder: its presence silences the hint.
STAMP_NAME = "transcripts-imported"

HINT = ("ccmeter: Claude Code's transcripts hold history from before ccmeter: "
        "`ccmeter import` adds it to your reports (or set import_on_run = true in the config "
        "to import at each run; false silences this line)")


def at_run_start(data_dir: str | os.PathLike[str], setting: Any,
                 notify: Callable[[str], None]) -> None:
    """Start a background import (``setting`` True), or say how to import (None, until
    something was imported), or nothing (False). ``setting`` was checked with the config
    (:func:`ccmeter.configcheck.checked_config`). Never raises: a run must not fail for want
    of history."""
    if setting is False:
        return
    try:
        if setting is True:
            _start_background_import()
        elif not os.path.exists(os.path.join(data_dir, STAMP_NAME)) and any(
                os.path.isdir(root) for root in folders.claude_transcript_roots(os.environ)):
            notify(HINT)
    except OSError:
        pass


def _start_background_import() -> None:
    import contextlib
    import subprocess

    def lower_priority() -> None:
        with contextlib.suppress(OSError):
            os.nice(10)

    # our own CLI, by the interpreter that runs us; -P: not from the current folder, where a
    # folder named ccmeter (a checkout of it) would be imported instead of the package
    subprocess.Popen(
        [sys.executable, "-P", "-m", "ccmeter.cli", "import", "--quiet"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, preexec_fn=lower_priority, close_fds=True,
    )
