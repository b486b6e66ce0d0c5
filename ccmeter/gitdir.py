"""A working directory's git repository, found on disk: what names a project.

Pure of any framework (stdlib only), so both the proxy (:mod:`ccmeter.requestread`, from the
working directory in Claude Code's system prompt) and the transcript import (from a
transcript line's ``cwd``) name a project the same way.
"""

from __future__ import annotations

import os
from functools import lru_cache

from ccmeter import attribution

#: Folders walked up from a working directory looking for its repository's ``.git``.
GIT_TOP_MAX_LEVELS = 64


@lru_cache(maxsize=512)
def git_top(directory: str) -> str | None:
    """The enclosing git repository's top folder, found by walking up (no subprocess).

    The walk is bounded: at most GIT_TOP_MAX_LEVELS folders of a path no longer than
    PATH_MAX, one string each (``Path.parents`` of a 100 KB path with 50,000 parts built
    50,000 paths of up to 100 KB: seconds of the event loop and gigabytes)."""
    if len(directory) > attribution.MAX_WORKING_DIR or not os.path.isabs(directory):
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


def project_for_dir(directory: str) -> str:
    """The project a working directory belongs to: its git repository's folder name, else
    the folder's own name (cut and cleaned as every stored name is)."""
    return attribution.project_from_dir(directory, git_top(directory))
