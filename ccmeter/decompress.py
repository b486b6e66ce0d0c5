"""Incremental decoders for a compressed event stream.

The meter reads a decoded *copy*; the client always receives the upstream's raw bytes.
The libraries are the ones mitmproxy itself depends on: zlib, brotli, and for zstd
``zstandard`` (mitmproxy 11) or ``compression.zstd`` / ``backports.zstd`` (mitmproxy 12).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

Decoder = Callable[[bytes], bytes]


def _zstd_decoder() -> Decoder:
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+
    except ImportError:
        try:
            from backports import zstd  # type: ignore[import-not-found,no-redef]
        except ImportError:
            zstd = None
    if zstd is not None:
        return zstd.ZstdDecompressor().decompress
    import zstandard

    return zstandard.ZstdDecompressor().decompressobj().decompress


class _Inflate:
    """gzip, zlib-wrapped deflate, or (as some servers send) raw deflate."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._obj = zlib.decompressobj(wbits=47)  # gzip or zlib header, auto-detected
        # Bytes fed before any output: until then the header may still prove wrong.
        self._unproven: bytes | None = b""

    def __call__(self, chunk: bytes) -> bytes:
        seen = self._unproven + chunk if self._unproven is not None else None
        try:
            out = self._obj.decompress(chunk)
        except zlib.error:
            if self.encoding != "deflate" or seen is None:
                raise
            self._obj = zlib.decompressobj(wbits=-15)
            out = self._obj.decompress(seen)
        self._unproven = None if out or seen is None else seen
        return out


def incremental_decoder(encoding: str) -> Decoder:
    """A callable that decodes successive chunks of a body with this Content-Encoding."""
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        return _Inflate(encoding)
    if encoding == "br":
        import brotli

        return brotli.Decompressor().process
    if encoding == "zstd":
        return _zstd_decoder()
    raise ValueError(f"unsupported content-encoding {encoding!r}")
