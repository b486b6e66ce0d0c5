"""Hard mode: what a stream has cost so far, and where it must be cut. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, tzinfo
from typing import Any

from ccmeter.caps.messages import refusal_message
from ccmeter.caps.policy import CapStatus

#: Hard mode's output estimate: one token per this many UTF-8 bytes of streamed text
#: (English averages ~4 bytes a token, code ~3, CJK ~3 bytes a character and a token each),
#: so the estimate errs high and a stream is cut early rather than late.
BYTES_PER_TOKEN = 3


class RunningCost:
    """What a stream has cost so far: its usage priced, plus output tokens estimated from
    the UTF-8 bytes of text/thinking/tool-input deltas seen (one token per
    ``BYTES_PER_TOKEN`` bytes), whichever is higher. Decimal pricing runs only when the
    usage changes; each delta is integer arithmetic."""

    __slots__ = ("_base", "_catalog", "_per_mtok", "_reported", "_when", "model", "streamed_bytes")

    def __init__(self, catalog: Any, when: datetime) -> None:
        self._catalog = catalog
        self._when = when
        self._base = 0
        self._per_mtok = 0  # picodollars per million more output tokens
        self._reported = 0
        self.model: str | None = None
        self.streamed_bytes = 0

    def set_usage(self, model: str | None, usage: Any) -> None:
        self.model = model
        base = self._catalog.price(model, usage, self._when).cost_picousd
        more = replace(usage, output_tokens=usage.output_tokens + 1_000_000)
        plus = self._catalog.price(model, more, self._when).cost_picousd
        if base is None or plus is None:
            return
        self._base, self._per_mtok, self._reported = base, plus - base, usage.output_tokens

    @property
    def estimated_output_tokens(self) -> int:
        return max(self._reported, -(-self.streamed_bytes // BYTES_PER_TOKEN))

    @property
    def picousd(self) -> int:
        extra = self.estimated_output_tokens - self._reported
        return self._base + extra * self._per_mtok // 1_000_000

class StreamLimit:
    """Hard mode for one stream: the cap with the least headroom at admission, and the
    stream's running cost. ``crossed`` once the call alone would reach that cap."""

    __slots__ = ("_usage", "headroom", "running", "status", "tz")

    def __init__(self, status: CapStatus, headroom: int, running: RunningCost,
                 tz: tzinfo | None = None) -> None:
        self.status, self.headroom, self.running, self.tz = status, headroom, running, tz
        self._usage: Any = None

    def observe(self, name: str, data: Mapping[str, Any] | None, model: str | None,
                usage: Any) -> None:
        """Fold one decoded event in (``usage``/``model``: the message state after it)."""
        if usage is not None and usage is not self._usage:
            self._usage = usage
            self.running.set_usage(model, usage)
        if name == "content_block_delta" and data is not None:
            delta = data.get("delta")
            if isinstance(delta, Mapping):
                for key in ("text", "thinking", "partial_json"):
                    piece = delta.get(key)
                    if isinstance(piece, str):
                        self.running.streamed_bytes += len(piece.encode("utf-8"))

    @property
    def crossed(self) -> bool:
        return self.running.picousd >= self.headroom

    def message(self, now: float) -> str:
        spent = self.status.spent_picousd + self.running.picousd
        status = self.status._replace(spent_picousd=spent,
                                      fraction=spent / self.status.limit_picousd
                                      if self.status.limit_picousd else 1.0)
        return refusal_message(status, now, self.tz)
