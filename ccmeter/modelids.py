"""A model name as a client sends it, to the forms worth looking up in the catalog:
Bedrock ids (geo prefixes, ``anthropic.``, ``-v1:0``), inference-profile ARNs, Vertex's
``@date``, Claude Code's ``[1m]`` display suffix, percent-encoded paths.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import unquote

_BEDROCK_GEO_PREFIXES = ("us.", "eu.", "apac.", "au.", "jp.", "global.")
_BEDROCK_VERSION = re.compile(r"-v\d+(?::\d+)?$")
_DISPLAY_SUFFIX = re.compile(r"\[[^\]]*\]$")
_VERTEX_DATE = re.compile(r"@(\d{8})$")


def strip_bedrock(name: str) -> str | None:
    """``us.anthropic.claude-x-v1:0`` -> ``claude-x``; None if it is not a Bedrock id."""
    for prefix in _BEDROCK_GEO_PREFIXES:
        if name.startswith(prefix + "anthropic."):
            name = name[len(prefix):]
            break
    if not name.startswith("anthropic."):
        return None
    return _BEDROCK_VERSION.sub("", name[len("anthropic."):])


def candidates(model: str) -> Iterator[str]:
    """The forms worth looking up, most literal first.

    Each is looked up exactly: no prefix matching, so ``claude-opus-5`` can never reach
    ``claude-opus-5-5``, and a dated id of a dateless model stays unknown.
    """
    name = model.strip().lower()
    if "%" in name:
        name = unquote(name)  # Bedrock paths percent-encode ':' and '/'
    if name.startswith("arn:"):
        name = name.rsplit("/", 1)[-1]  # an inference-profile ARN ends in the model id
    name = _DISPLAY_SUFFIX.sub("", name).strip()  # Claude Code's "[1m]"
    yield name
    bedrock = strip_bedrock(name)
    if bedrock:
        yield bedrock
    yield _VERTEX_DATE.sub(r"-\1", name)  # claude-haiku-4-5@20251001
