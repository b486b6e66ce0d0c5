"""Writing config.toml so that what the user wrote stays: comments, order, blank lines.

``ccmeter caps set`` and the other commands that change the config read it as plain data,
change that, and hand the result here. Rather than writing the data out afresh (which drops
every comment in a file the docs invite users to edit by hand), the file as it is now is
parsed with tomlkit, brought to the new data key by key — a removed key goes, with its own
comment; a changed value is replaced in place; a new key is added at the end of its table —
and written back.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

import tomlkit


def dumps(new: Mapping[str, Any], current_text: str | None = None) -> str:
    """The TOML text of ``new``, laid out as ``current_text`` was where they agree."""
    if not current_text:
        return tomlkit.dumps(new)
    document = tomlkit.parse(current_text)
    _sync(document, new)
    return tomlkit.dumps(document)


def _sync(table: MutableMapping[str, Any], new: Mapping[str, Any]) -> None:
    for key in [k for k in table if k not in new]:
        del table[key]
    for key, value in new.items():
        here = table.get(key)
        if isinstance(here, MutableMapping) and isinstance(value, Mapping):
            _sync(here, value)
        elif key not in table or _plain(here) != value or type(_plain(here)) is not type(value):
            table[key] = value


def _plain(item: Any) -> Any:
    """A tomlkit item as the plain value it stands for (a String compares as its text)."""
    unwrap = getattr(item, "unwrap", None)
    return unwrap() if callable(unwrap) else item
