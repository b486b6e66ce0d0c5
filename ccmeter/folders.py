"""Where ccmeter's files are, in the platform's folders, with nothing but ``os``.

:func:`ccmeter.config.paths` is the answer the rest of ccmeter uses; it builds on
:func:`folders`, which ``ccmeter run``'s quick path (:mod:`ccmeter.quickrun`) also calls
without importing the config module's TOML and dataclasses.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

APP = "ccmeter"
CONFIG_NAME = "config.toml"


def folders(env: Mapping[str, str], platform: str, home: str | None = None) -> tuple[str, str]:
    """``(config folder, data folder)``.

    ``home`` (the addon's ``ccmeter_home`` option) means exactly what ``CCMETER_HOME`` means
    and wins over it: config and data both in that one folder. Without either, the platform's
    folders: on Linux the config in ``$XDG_CONFIG_HOME/ccmeter`` (``~/.config/ccmeter``) and
    the data in ``$XDG_DATA_HOME/ccmeter`` (``~/.local/share/ccmeter``).
    """
    home = home or env.get("CCMETER_HOME")
    if home:
        root = os.path.expanduser(home)
        return root, root
    user_home = env.get("HOME") or os.path.expanduser("~")
    if platform == "darwin":
        base = os.path.join(user_home, "Library", "Application Support", APP)
        return base, base
    if platform == "win32":
        local = env.get("LOCALAPPDATA") or os.path.join(user_home, "AppData", "Local")
        base = os.path.join(local, APP)
        return base, base
    config = os.path.join(env.get("XDG_CONFIG_HOME") or os.path.join(user_home, ".config"), APP)
    data = os.path.join(env.get("XDG_DATA_HOME") or os.path.join(user_home, ".local", "share"),
                        APP)
    return config, data


def stamp(path: str | os.PathLike[str]) -> list[int] | None:
    """What tells a file's versions apart without reading it (inode, size, mtime in ns);
    None when it does not exist. A proxy records its config file's stamp beside what it
    read from it, so a run can use that instead of parsing the file again."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def claude_transcript_roots(env: Mapping[str, str], home: str | None = None) -> list[str]:
    """Where Claude Code keeps its transcripts (what ``ccmeter import`` reads):
    ``$CLAUDE_CONFIG_DIR/projects`` (several folders may be given, separated by commas), else
    ``~/.claude/projects`` and ``~/.config/claude/projects`` (newer CLIs), those that exist
    (the first when neither does)."""
    configured = env.get("CLAUDE_CONFIG_DIR", "").strip()
    if configured:
        return [os.path.join(os.path.expanduser(part.strip()), "projects")
                for part in configured.split(",") if part.strip()]
    base = home or env.get("HOME") or os.path.expanduser("~")
    candidates = [os.path.join(base, ".claude", "projects"),
                  os.path.join(base, ".config", "claude", "projects")]
    return [path for path in candidates if os.path.isdir(path)] or candidates[:1]
