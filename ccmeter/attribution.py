"""Who a metered call belongs to: session, project, agent, client and call kind.

Pure: request headers and the parsed JSON body in, an :class:`Attribution` out. Nothing
secret leaves this module: the auth header is reduced to its *kind*, and of the system
prompt only the working-directory line is read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from ccmeter import untrusted
from ccmeter.gitroot import MAX_WORKING_DIR  # a longer line is no real folder

#: Header a launcher (or ANTHROPIC_CUSTOM_HEADERS) may set to tag calls with a project.
#: The proxy strips it before the request goes upstream.
PROJECT_HEADER = "x-ccmeter-project"

#: Length limits, applied before any other work on a field (every one of them is untrusted).
MAX_ID = 128  # session and agent ids
MAX_PROJECT = 200
MAX_MODEL = 256
MAX_USER_ID = 4096  # metadata.user_id: a short JSON object in practice
MAX_USER_AGENT = 256

_SESSION_IN_LEGACY_USER_ID = re.compile(r"_session_([0-9a-fA-F-]{8,128})")
_WORKING_DIR = re.compile(
    rf"Primary working directory:\s*(\S[^\n]{{0,{MAX_WORKING_DIR - 1}}})([^\n]?)")
_USER_AGENT = re.compile(r"^\s*([A-Za-z0-9_.-]{1,64})/([0-9][A-Za-z0-9_.+-]{0,63})")
_SUBSCRIPTION_TOKEN_PREFIX = "sk-ant-oat"


@dataclass(frozen=True)
class Attribution:
    session_id: str | None = None
    project: str | None = None
    working_dir: str | None = None
    agent_id: str | None = None
    parent_agent_id: str | None = None
    call_kind: str = "main"
    client_name: str | None = None
    client_version: str | None = None
    auth_kind: str | None = None
    requested_model: str | None = None
    stream: bool = False


def session_id(headers: Mapping[str, str], body: Mapping[str, Any]) -> str | None:
    """The header Claude Code sends, else metadata.user_id (JSON string, or the old form)."""
    header = untrusted.text(headers.get("x-claude-code-session-id"), MAX_ID)
    if header:
        return header
    metadata = body.get("metadata")
    user_id = metadata.get("user_id") if isinstance(metadata, Mapping) else None
    if not isinstance(user_id, str):
        return None
    user_id = user_id[:MAX_USER_ID]
    if user_id.lstrip().startswith("{"):
        try:
            parsed = untrusted.loads(user_id)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            return untrusted.text(parsed.get("session_id"), MAX_ID)
    match = _SESSION_IN_LEGACY_USER_ID.search(user_id)
    return match.group(1) if match else None


def _system_texts(body: Mapping[str, Any]) -> list[str]:
    system = body.get("system")
    if isinstance(system, str):
        return [system]
    if isinstance(system, list):
        return [b["text"] for b in system if isinstance(b, dict) and isinstance(b.get("text"), str)]
    return []


def working_dir(body: Mapping[str, Any]) -> str | None:
    """The ``Primary working directory:`` line Claude Code puts in its system prompt; None
    when that line is longer than any real folder's path (it is then not read at all)."""
    for text in _system_texts(body):
        match = _WORKING_DIR.search(text)
        if match:
            if match.group(2):
                return None
            return untrusted.text(match.group(1), MAX_WORKING_DIR)
    return None


def project_tag(value: str | None) -> str | None:
    """The launcher's project tag header as it may be stored."""
    return untrusted.text(value, MAX_PROJECT)


def project_from_dir(directory: str, git_top: str | None) -> str:
    """Name a project after the git repository's top folder, else after the folder itself."""
    name = PurePath(git_top or directory).name or directory
    return untrusted.text(name, MAX_PROJECT) or name[:MAX_PROJECT]


def auth_kind(headers: Mapping[str, str]) -> str | None:
    """'api_key', 'subscription' (Claude Code OAuth login) or 'bearer'. Never the secret."""
    if headers.get("x-api-key"):
        return "api_key"
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        token = auth[7:].strip()
        return "subscription" if token.startswith(_SUBSCRIPTION_TOKEN_PREFIX) else "bearer"
    return None


def client(headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    match = _USER_AGENT.match(headers.get("user-agent", "")[:MAX_USER_AGENT])
    return (match.group(1), match.group(2)) if match else (None, None)


def call_kind(headers: Mapping[str, str], body: Mapping[str, Any]) -> str:
    """main, subagent, or auxiliary (quota probes, title and topic calls without tools)."""
    if headers.get("x-claude-code-agent-id") or headers.get("x-claude-code-parent-agent-id"):
        return "subagent"
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, int) and max_tokens <= 1:
        return "auxiliary"
    if not body.get("tools"):
        return "auxiliary"
    return "main"


def attribute(headers: Mapping[str, str], body: Mapping[str, Any]) -> Attribution:
    """``headers`` must be a case-insensitive mapping or have lower-case keys."""
    name, version = client(headers)
    model = body.get("model")
    tag = headers.get(PROJECT_HEADER)
    return Attribution(
        session_id=session_id(headers, body),
        project=project_tag(tag),
        working_dir=working_dir(body),
        agent_id=untrusted.text(headers.get("x-claude-code-agent-id"), MAX_ID),
        parent_agent_id=untrusted.text(headers.get("x-claude-code-parent-agent-id"), MAX_ID),
        call_kind=call_kind(headers, body),
        client_name=name,
        client_version=version,
        auth_kind=auth_kind(headers),
        requested_model=untrusted.text(model, MAX_MODEL),
        stream=body.get("stream") is True,
    )
