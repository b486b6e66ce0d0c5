"""Who a metered call belongs to: session, project, agent, client and call kind.

Pure: request headers and the parsed JSON body in, an :class:`Attribution` out. Nothing
secret leaves this module: the auth header is reduced to its *kind*, and of the system
prompt only the working-directory line is read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

#: Header a launcher (or ANTHROPIC_CUSTOM_HEADERS) may set to tag calls with a project.
#: The proxy strips it before the request goes upstream.
PROJECT_HEADER = "x-ccmeter-project"

_SESSION_IN_LEGACY_USER_ID = re.compile(r"_session_([0-9a-fA-F-]{8,})")
_WORKING_DIR = re.compile(r"Primary working directory:\s*(\S[^\n]*)")
_USER_AGENT = re.compile(r"^\s*([A-Za-z0-9_.-]+)/([0-9][A-Za-z0-9_.+-]*)")
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
    header = headers.get("x-claude-code-session-id")
    if header:
        return header.strip()[:128]
    metadata = body.get("metadata")
    user_id = metadata.get("user_id") if isinstance(metadata, Mapping) else None
    if not isinstance(user_id, str):
        return None
    if user_id.lstrip().startswith("{"):
        try:
            parsed = json.loads(user_id)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("session_id"), str):
            return parsed["session_id"][:128] or None
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
    """The ``Primary working directory:`` line Claude Code puts in its system prompt."""
    for text in _system_texts(body):
        match = _WORKING_DIR.search(text)
        if match:
            return match.group(1).strip()
    return None


def project_from_dir(directory: str, git_top: str | None) -> str:
    """Name a project after the git repository's top folder, else after the folder itself."""
    return PurePath(git_top or directory).name or directory


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
    match = _USER_AGENT.match(headers.get("user-agent", ""))
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
        project=tag.strip()[:200] if tag and tag.strip() else None,
        working_dir=working_dir(body),
        agent_id=(headers.get("x-claude-code-agent-id") or None),
        parent_agent_id=(headers.get("x-claude-code-parent-agent-id") or None),
        call_kind=call_kind(headers, body),
        client_name=name,
        client_version=version,
        auth_kind=auth_kind(headers),
        requested_model=model if isinstance(model, str) else None,
        stream=body.get("stream") is True,
    )
