"""Incremental decoders for a compressed event stream.

The meter reads a decoded *copy*; the client always receives the upstream's raw bytes.
The libraries are the ones mitmproxy itself depends on: zlib, brotli, and for zstd
``zstandard`` (mitmproxy 11) or ``compression.zstd`` / ``backports.zstd`` (mitmproxy 12).

A compressed answer is untrusted: a few hundred KB can expand to gigabytes. The copy of one
answer decodes to at most MAX_DECODED_BYTES, or MAX_RATIO times the compressed bytes seen if
that is more (event streams compress 5-10 times; a bomb, a thousand), and each chunk's output
is capped at what is left (where the library can cap it: zlib always; brotli from 1.2; zstd
in ``backports.zstd`` and ``compression.zstd``). A bomb so costs the meter no more than an
honest answer of the same size on the wire, and stops the metering with a reason.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

Decoder = Callable[[bytes], bytes]
#: A decoder given the most output it may return (it may return one byte more, or less).
_Limited = Callable[[bytes, int], bytes]

#: Most one answer's metered copy decodes to, unless MAX_RATIO allows more. A Claude
#: answer's events are a few MB.
MAX_DECODED_BYTES = 16 * 1024 * 1024
MAX_RATIO = 50


class TooLarge(ValueError):
    """The answer decodes to more than its budget; ``partial`` is the output that fit."""

    def __init__(self, message: str, partial: bytes = b"") -> None:
        super().__init__(message)
        self.partial = partial


class _Bounded:
    """A decoder with an output budget for the whole body."""

    __slots__ = ("_inner", "budget", "given", "taken")

    def __init__(self, inner: _Limited, budget: int) -> None:
        self._inner = inner
        self.budget = budget
        self.taken = self.given = 0  # compressed bytes in, decoded bytes out

    def __call__(self, chunk: bytes) -> bytes:
        self.taken += len(chunk)
        left = max(self.budget, MAX_RATIO * self.taken) - self.given
        out = self._inner(chunk, left + 1)
        self.given += len(out)
        if len(out) > left:
            raise TooLarge(f"compressed answer decodes to more than {self.given} bytes from "
                           f"{self.taken}; not metered further", out[:left])
        return out


def _zstd_decoder() -> _Limited:
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+
    except ImportError:
        try:
            from backports import zstd  # type: ignore[import-not-found,no-redef]
        except ImportError:
            zstd = None
    if zstd is not None:
        decompress = zstd.ZstdDecompressor().decompress
        return lambda chunk, limit: decompress(chunk, max_length=limit)
    import zstandard

    unlimited = zstandard.ZstdDecompressor().decompressobj().decompress
    return lambda chunk, limit: unlimited(chunk)


def _brotli_decoder() -> _Limited:
    import brotli

    process: Any = brotli.Decompressor().process
    try:
        process(b"", output_buffer_limit=1)  # brotli 1.2+
    except TypeError:
        return lambda chunk, limit: process(chunk)
    return lambda chunk, limit: process(chunk, output_buffer_limit=limit)


class _Inflate:
    """gzip, zlib-wrapped deflate, or (as some servers send) raw deflate."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._obj = zlib.decompressobj(wbits=47)  # gzip or zlib header, auto-detected
        # Bytes fed before any output: until then the header may still prove wrong.
        self._unproven: bytes | None = b""

    def __call__(self, chunk: bytes, limit: int) -> bytes:
        seen = self._unproven + chunk if self._unproven is not None else None
        try:
            out = self._obj.decompress(chunk, limit)
        except zlib.error:
            if self.encoding != "deflate" or seen is None:
                raise
            self._obj = zlib.decompressobj(wbits=-15)
            out = self._obj.decompress(seen, limit)
        self._unproven = None if out or seen is None else seen
        return out


def incremental_decoder(encoding: str, budget: int = MAX_DECODED_BYTES) -> Decoder:
    """A callable that decodes successive chunks of a body with this Content-Encoding, and
    raises :class:`TooLarge` once they decode to more than ``budget`` bytes in all."""
    encoding = encoding.strip().lower()
    inner: _Limited
    if encoding in ("gzip", "x-gzip", "deflate"):
        inner = _Inflate(encoding)
    elif encoding == "br":
        inner = _brotli_decoder()
    elif encoding == "zstd":
        inner = _zstd_decoder()
    else:
        raise ValueError(f"unsupported content-encoding {encoding!r}")
    return _Bounded(inner, budget)
