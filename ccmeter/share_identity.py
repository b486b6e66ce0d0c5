"""Who this machine publishes to the team share as, and how names are shown there.

Design notes (the why):
- A machine's summaries (one ccmeter data folder: one database, one machine id) are
  published under one name at a time: ``user=<name>/part-<machine id>.jsonl``. Moving them
  to another name deletes the files under the old one, so it is never a side effect of
  whatever name a push happens to resolve (cron has no ``CCMETER_USER``; ``login@host``
  differs between a shell and a container). It happens only on ``push --rename-to NAME``.
- The name a machine publishes under is kept in the data folder (``share-identity.json``),
  written by its first push and by ``--rename-to``. A push that names no user (no
  ``--user``, ``CCMETER_USER`` or ``[share] user``) publishes under it, so a cron line works
  unchanged; a push that names another user is refused with a one-line message saying how
  to change it. Before that file existed the share itself says: the user folders holding
  this machine's part files.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import tempfile
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ccmeter.config import CCMeterError, Paths

MACHINE_ID_FILE = "machine-id"
IDENTITY_FILE = "share-identity.json"
#: Where a user name came from, strongest first; "default" is login@host.
SOURCES = ("option", "env", "config", "default")

@dataclass(frozen=True)
class ShareSettings:
    """Where to push and how names are shown, resolved from options, env and config."""

    user: str
    #: A folder (Path) or an object store URL (``s3://bucket/prefix``, kept as text).
    share: Path | str | None = None
    anonymize: bool = False
    hash_projects: bool = False
    salt: str | None = None
    project_names: Mapping[str, str] = field(default_factory=dict)
    #: Where ``user`` came from: one of :data:`SOURCES` (``"kept"`` once settled).
    user_source: str = "option"
    #: The team and group this machine's spend counts towards (``ccmeter team set``).
    team: str | None = None
    group: str | None = None

    def public_user(self) -> str:
        """The user name as it appears in the share (hashed with --anonymize)."""
        if self.anonymize:
            return "u-" + _keyed_hash(self._salt("--anonymize"), "user", self.user)[:16]
        return self.user

    def public_project(self, name: str | None) -> str | None:
        """The project name as it appears in the share: mapped, hashed or as is."""
        if name is None or not name.strip():
            return None
        name = project_leaf(name)
        if name in self.project_names:
            return self.project_names[name]
        if self.hash_projects:
            return "p-" + _keyed_hash(self._salt("hashing project names"), "project", name)[:12]
        return name

    def _salt(self, what: str) -> str:
        if not self.salt:
            raise CCMeterError(
                f"{what} needs a team salt: set salt = \"<a long random string>\" under "
                "[share] in ccmeter's config.toml, the same value on every teammate's machine"
            )
        return self.salt


def _keyed_hash(salt: str, kind: str, value: str) -> str:
    return hmac.new(salt.encode(), f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()


def project_leaf(name: str) -> str:
    """A project name never carries a path: keep only its last component."""
    parts = [p for p in re.split(r"[\\/]+", name.strip()) if p]
    return parts[-1] if parts else name.strip()


def default_user() -> str:
    try:
        login = getpass.getuser()
    except Exception:  # no login name (some containers): still produce something stable
        login = "user"
    host = socket.gethostname().split(".")[0] or "host"
    return f"{login}@{host}"


def resolve_settings(
    cfg: Mapping[str, Any],
    env: Mapping[str, str],
    *,
    share: str | Path | None = None,
    user: str | None = None,
    anonymize: bool | None = None,
    hash_projects: bool | None = None,
) -> ShareSettings:
    """Options beat the environment, which beats ``[share]`` in the config, then defaults."""
    section = cfg.get("share") or {}
    if not isinstance(section, Mapping):
        raise CCMeterError("[share] in config.toml must be a table, e.g. [share] path = \"...\"")
    names = section.get("project_names") or {}
    if not isinstance(names, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in names.items()
    ):
        raise CCMeterError(
            '[share.project_names] must map names to non-empty names, e.g. "secret" = "Project A"'
        )
    candidates = (("option", user), ("env", env.get("CCMETER_USER")),
                  ("config", section.get("user")), ("default", default_user()))
    source, chosen_user = next((s, v) for s, v in candidates if v)
    salt = section.get("salt")
    if salt is not None and not isinstance(salt, str):
        raise CCMeterError("[share] salt must be a string")
    return ShareSettings(
        user=check_user(str(chosen_user)),
        share=share_folder(cfg, share),
        anonymize=bool(section.get("anonymize", False)) if anonymize is None else anonymize,
        hash_projects=(bool(section.get("hash_projects", False))
                       if hash_projects is None else hash_projects),
        salt=salt or None,
        project_names=dict(names),
        user_source=source,
        team=_name(section.get("team"), "team"),
        group=_name(section.get("group"), "group"),
    )


def _name(value: Any, what: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 100 or any(
            ord(c) < 32 or c in "/\\" for c in value) or not value.strip():
        raise CCMeterError(f"[share] {what} must be a short name without slashes; got {value!r}")
    return value.strip()


def share_folder(cfg: Mapping[str, Any], option: str | Path | None) -> Path | str | None:
    """The share: the option, else ``[share] path`` in the config, else None. A folder is a
    Path; an object store URL (``s3://…``, ``gs://…``, ``az://…``) stays text."""
    from ccmeter.sharestore import location

    section = cfg.get("share") or {}
    raw = option if option is not None else (
        section.get("path") if isinstance(section, Mapping) else None)
    return location(raw) if raw else None


def check_user(user: str) -> str:
    user = user.strip()
    if not user or len(user) > 200 or any(ord(c) < 32 for c in user) or user in (".", ".."):
        raise CCMeterError(f"{user!r} is not a usable user name for the share; pass --user NAME")
    return user


def machine_id(paths: Paths) -> str:
    """A random id for this machine, created once and kept in ccmeter's data folder."""
    path = paths.data_dir / MACHINE_ID_FILE
    with contextlib.suppress(FileNotFoundError):
        existing = path.read_text(encoding="ascii").strip()
        if re.fullmatch(r"[0-9a-f]{16}", existing):
            return existing
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    new = secrets.token_hex(8)
    try:  # O_EXCL: two first pushes at once agree on one id
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        time.sleep(0.05)
        existing = path.read_text(encoding="ascii").strip()
        if re.fullmatch(r"[0-9a-f]{16}", existing):
            return existing
        raise CCMeterError(f"{path} is damaged; delete it and push again") from None
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(new + "\n")
    return new



# --- the name this machine publishes under -------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """The ``user=`` folder this machine's files are in, and the name it came from (None
    when only the share said so)."""

    public: str
    user: str | None = None


def read_identity(paths: Paths) -> Identity | None:
    path = paths.data_dir / IDENTITY_FILE
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
        public, user = data["public"], data.get("user")
        if not isinstance(public, str) or not (user is None or isinstance(user, str)):
            raise ValueError("not strings")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise CCMeterError(f"{path} is damaged ({exc}); delete it and push again with "
                           "--user NAME (the name this machine publishes as)") from None
    return Identity(public=check_user(public), user=user)


def write_identity(paths: Paths, identity: Identity) -> None:
    """Keep the name (temp file and rename: a reader sees the old or the new one)."""
    path = paths.data_dir / IDENTITY_FILE
    if read_identity(paths) == identity:
        return
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    data = json.dumps({"public": identity.public, "user": identity.user,
                       "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, ensure_ascii=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{IDENTITY_FILE}.", dir=paths.data_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(data + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def settle(paths: Paths, settings: ShareSettings, found: Collection[str], *,
           rename: bool = False) -> ShareSettings:
    """The settings to push with, or a one-line refusal.

    ``found`` are the ``user=`` folders that hold this machine's part files now. A push
    that names no user publishes under the kept name; one that names another user is
    refused unless ``rename`` (``push --rename-to``) says to move this machine's files.
    """
    public = settings.public_user()
    if rename:
        return settings
    kept = read_identity(paths)
    if kept is None and found:
        if public in found:
            return settings
        if len(found) > 1:
            names = ", ".join(sorted(found))
            raise CCMeterError(f"this machine's files are in the share under {names}; "
                               f"say which name it publishes as: ccmeter push --rename-to NAME")
        kept = Identity(public=next(iter(found)))
    if kept is None or kept.public == public:
        return settings
    if settings.user_source == "default":
        user = kept.user if kept.user is not None else kept.public
        settings = replace(settings, user=user, user_source="kept")
        public = settings.public_user()
        if public == kept.public:
            return settings
    how = f"ccmeter push --rename-to {settings.user}" + (" --anonymize" if settings.anonymize
                                                         else "")
    raise CCMeterError(f"this machine publishes to the share as {kept.public}, not {public}; "
                       f"to move its files to {public} run `{how}`, else push as "
                       f"{kept.user or kept.public}")
