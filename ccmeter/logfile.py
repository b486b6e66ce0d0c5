"""ccmeter's log file: where the proxy, ``run`` and ``serve`` log, never the terminal."""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
from pathlib import Path

FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"


def setup(log_file: Path, level: int = logging.INFO) -> Path:
    """Send ccmeter's and mitmproxy's logging to ``log_file`` (rotated at 5 MB, three kept;
    its folder private to the user)."""
    log_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):
        os.chmod(log_file.parent, 0o700)
    handler = logging.handlers.RotatingFileHandler(
        log_file, maxBytes=5_000_000, backupCount=3, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # mitmproxy logs every connection at INFO; keep its warnings, drop the chatter.
    logging.getLogger("mitmproxy").setLevel(max(level, logging.WARNING))
    return log_file
