"""The git repository a folder belongs to, found by walking up (no subprocess, no git).

Both the proxy (a request's working directory, on every call) and ``ccmeter run`` (its own
folder, before the command starts) name a project after it.
"""

from __future__ import annotations

import os
from functools import lru_cache

#: Longest working directory read from a request (Linux's PATH_MAX).
MAX_WORKING_DIR = 4096
#: Folders walked up from a working directory looking for its repository's ``.git``.
GIT_TOP_MAX_LEVELS = 64


@lru_cache(maxsize=512)
def git_top(directory: str) -> str | None:
    """The enclosing git repository's top folder, found by walking up (no subprocess).

    The walk is bounded: at most GIT_TOP_MAX_LEVELS folders of a path no longer than
    PATH_MAX, one string each (``Path.parents`` of a 100 KB path with 50,000 parts built
    50,000 paths of up to 100 KB: seconds of the event loop and gigabytes)."""
    if len(directory) > MAX_WORKING_DIR or not os.path.isabs(directory):
        return None
    here = os.path.normpath(directory)
    try:
        for _ in range(GIT_TOP_MAX_LEVELS):
            if os.path.exists(os.path.join(here, ".git")):
                return here
            parent = os.path.dirname(here)
            if parent == here:
                return None
            here = parent
    except (OSError, ValueError):
        return None
    return None


def detect_project(cwd: str | os.PathLike[str] | None = None) -> str:
    """The git repository's top folder name, else the folder's own name."""
    here = os.path.realpath(cwd if cwd is not None else os.getcwd())
    top = git_top(here)
    return os.path.basename(top) if top else (os.path.basename(here) or here)
