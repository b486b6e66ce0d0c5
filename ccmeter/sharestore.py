"""Where the team share lives: a folder, or a bucket of an object store.

:mod:`ccmeter.share` (push), :mod:`ccmeter.team` (report) and :mod:`ccmeter.tiers` (team
budgets) see a share as keys (``ccmeter/v1/month=2026-11/user=ana/part-<id>.jsonl``) under
a root, through the few operations below; :func:`open_share` picks the backend.

Design notes (the why):
- A folder needs nothing but the standard library: files are written to a dot-named
  temporary beside the target, fsynced and ``os.replace``-d over it, so a reader sees the
  old file or the new one, never half of one.
- ``s3://``, ``gs://`` and ``az://`` shares go through fsspec with s3fs, gcsfs or adlfs (the
  ``ccmeter[s3]``, ``[gcs]``, ``[azure]`` or ``[cloud]`` extras), imported only when such a
  share is used. Each of them signs with its own cloud's SDK (botocore, google-auth,
  azure-identity), so credentials come from that cloud's standard chain: environment,
  profiles and SSO, instance and workload roles; ``AWS_ENDPOINT_URL`` points S3 at any
  S3-compatible store. fsspec is what DuckDB, pandas and dask already use for the same URLs.
- An object store PUT is atomic (a reader gets the old object or the new one, whole), so
  an object is written with one PUT; a key that must never be overwritten (a budget change)
  is written create-only (S3 ``If-None-Match: *``) where the backend offers it.
- Listing caches are off: the budgets and the others' spend must be read as they are now.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ccmeter.config import CCMeterError

STALE_TEMP_SECONDS = 3600

#: URL scheme -> (fsspec protocol, the extra that brings it).
SCHEMES: dict[str, tuple[str, str]] = {
    "s3": ("s3", "s3"),
    "gs": ("gcs", "gcs"),
    "gcs": ("gcs", "gcs"),
    "az": ("az", "azure"),
    "abfs": ("abfs", "azure"),
    "abfss": ("abfs", "azure"),
}


#: A share that does not answer is said so within seconds (a proxy's background thread
#: reads it every minute), not after botocore's and s3fs's retries have run for a minute.
BACKEND_OPTIONS: dict[str, dict[str, Any]] = {
    "s3": {"config_kwargs": {"connect_timeout": 5, "read_timeout": 30,
                             "retries": {"max_attempts": 2, "mode": "standard"}}},
}
#: s3fs's own retry loop around botocore's (a class attribute: 5 by default).
BACKEND_RETRIES = {"s3": 2}


def is_url(raw: str | Path) -> bool:
    """Does ``raw`` name an object store (``s3://bucket/prefix``) rather than a folder?"""
    text = str(raw)
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def location(raw: str | Path) -> str | Path:
    """A share as the user gave it: a URL (kept as text, ``//`` and all) or a folder."""
    text = str(raw).strip()
    if is_url(text):
        return text.rstrip("/")
    return Path(text).expanduser()


class ShareError(CCMeterError):
    """The share could not be read or written (one line, naming it)."""


class FolderShare:
    """A share in a folder: a mounted team folder, NFS, SMB or a sync folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    def where(self, key: str) -> Path:
        return self.root / key

    def check(self) -> None:
        if not self.root.is_dir():
            raise ShareError(f"share folder {self.root} does not exist (is it mounted?); "
                             "ccmeter creates folders inside it but never the share itself")

    def exists(self) -> bool:
        return self.root.is_dir()

    def read(self, key: str) -> bytes | None:
        try:
            return self.where(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ShareError(f"cannot read {self.where(key)}: {exc.strerror or exc}") from exc

    def write(self, key: str, data: bytes) -> None:
        path = self.where(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            clean_stale_temps(path)
            write_atomic(path, data)
        except OSError as exc:
            raise ShareError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def tidy(self, key: str) -> None:
        """Remove this machine's temporaries of ``key`` left by a push that died."""
        with contextlib.suppress(OSError):
            clean_stale_temps(self.where(key))

    def write_new(self, key: str, data: bytes) -> None:
        """Write ``key`` only if it does not exist yet (a link: atomic and exclusive)."""
        path = self.where(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.chmod(tmp, 0o644)
                os.link(tmp, path)  # fails if the name is taken
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        except FileExistsError:
            raise ShareError(f"{path} exists already") from None
        except OSError as exc:
            raise ShareError(f"cannot write {path}: {exc.strerror or exc}") from exc
        fsync_dir(path.parent)

    def remove(self, key: str) -> bool:
        """One unlink: readers see the file whole or not at all. False if already gone."""
        path = self.where(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise ShareError(f"cannot remove {path}: {exc.strerror or exc}") from exc
        fsync_dir(path.parent)
        return True

    def keys(self, prefix: str) -> list[str]:
        """Every file under ``prefix`` (a folder key), as keys, sorted; none if missing."""
        return sorted(self.stamps(prefix))

    def stamps(self, prefix: str) -> dict[str, str]:
        """Every file under ``prefix`` with a stamp that changes when the file does."""
        out: dict[str, str] = {}
        for folder, _dirs, files in os.walk(self.where(prefix)):
            rel = Path(folder).relative_to(self.root).as_posix()
            for name in files:
                with contextlib.suppress(OSError):
                    st = os.stat(os.path.join(folder, name))
                    out[f"{rel}/{name}"] = f"{st.st_mtime_ns}:{st.st_size}:{st.st_ino}"
        return out


class ObjectShare:
    """A share in an object store bucket (``s3://bucket/prefix`` and the like), via fsspec."""

    def __init__(self, url: str) -> None:
        scheme, _, rest = url.partition("://")
        protocol, extra = SCHEMES[scheme.lower()]
        self.url = url
        try:
            import fsspec

            self.fs: Any = fsspec.filesystem(protocol, use_listings_cache=False,
                                             skip_instance_cache=True,
                                             **BACKEND_OPTIONS.get(protocol, {}))
            if protocol in BACKEND_RETRIES:
                self.fs.retries = BACKEND_RETRIES[protocol]
        except ImportError:
            raise CCMeterError(f"{scheme}:// shares need the {extra} extra: "
                               f"pip install 'ccmeter[{extra}]'") from None
        self.root = rest.strip("/")
        self.bucket = self.root.split("/", 1)[0]
        if not self.bucket:
            raise CCMeterError(f"{url} names no bucket; use {scheme}://BUCKET/PREFIX")

    def where(self, key: str) -> str:
        return f"{self.url}/{key}"

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def _fail(self, what: str, key: str | None, exc: BaseException) -> ShareError:
        target = self.where(key) if key is not None else self.url
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return ShareError(f"cannot {what} {target}: {text[:300]}")

    def check(self) -> None:
        try:
            self.fs.info(self.bucket)  # raises what went wrong (exists() says only False)
            return
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise self._fail("reach", None, exc) from exc
        raise ShareError(f"bucket {self.bucket} of share {self.url} does not exist (or "
                             "these credentials cannot see it); ccmeter never creates it")

    def exists(self) -> bool:
        try:
            return bool(self.fs.exists(self.bucket))
        except Exception:
            return False

    def read(self, key: str) -> bytes | None:
        try:
            return bytes(self.fs.cat_file(self._path(key)))
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self._fail("read", key, exc) from exc

    def write(self, key: str, data: bytes) -> None:
        try:
            self.fs.pipe_file(self._path(key), data)  # one PUT: the object appears whole
        except Exception as exc:
            raise self._fail("write", key, exc) from exc

    def tidy(self, key: str) -> None:
        """Nothing to tidy: an object store has no temporaries."""

    def write_new(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            try:
                self.fs.pipe_file(path, data, mode="create")  # If-None-Match: *
            except FileExistsError:
                raise
            except Exception:  # a backend or S3-compatible store without create-only writes
                if self.fs.exists(path):
                    raise FileExistsError(path) from None
                self.fs.pipe_file(path, data)  # keys are unique: a plain PUT is safe
        except FileExistsError:
            raise ShareError(f"{self.where(key)} exists already") from None
        except Exception as exc:
            raise self._fail("write", key, exc) from exc

    def remove(self, key: str) -> bool:
        path = self._path(key)
        try:
            if not self.fs.exists(path):
                return False
            self.fs.rm_file(path)
        except FileNotFoundError:
            return False
        except Exception as exc:
            raise self._fail("remove", key, exc) from exc
        return True

    def keys(self, prefix: str) -> list[str]:
        return sorted(self.stamps(prefix))

    def stamps(self, prefix: str) -> dict[str, str]:
        """Every object under ``prefix`` with its ETag (one LIST, paged): a reader GETs
        again only the objects whose ETag changed."""
        base = self._path(prefix).rstrip("/")
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        except Exception as exc:
            raise self._fail("list", prefix, exc) from exc
        cut = len(self.root) + 1
        out = {}
        for path, info in found.items():
            if str(path).startswith(self.root + "/"):
                stamp = info.get("ETag") or info.get("etag") or info.get("md5") or (
                    f"{info.get('size')}:{info.get('LastModified') or info.get('mtime')}")
                out[str(path)[cut:]] = str(stamp)
        return out


Share = FolderShare | ObjectShare


def open_share(raw: str | Path) -> Share:
    """The backend for a share given as a folder or a URL."""
    where = location(raw)
    if isinstance(where, Path):
        return FolderShare(where)
    return ObjectShare(where)


# --- folder helpers -------------------------------------------------------------------------


def fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError, AttributeError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Temp file in the same folder (dot-named), fsync, rename over; fsync the folder."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # teammates read it; mkstemp made it 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def clean_stale_temps(path: Path) -> None:
    """Remove this machine's own temporaries left by a push that died (never others')."""
    cutoff = time.time() - STALE_TEMP_SECONDS
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
