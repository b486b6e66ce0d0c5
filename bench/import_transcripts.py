"""Time `ccmeter import` on a generated corpus of realistic Claude Code transcripts.

Usage::

    python bench/import_transcripts.py                      # >= 1 GB, >= 2,000,000 lines
    python bench/import_transcripts.py --mb 250 --keep /tmp/cc-corpus
    python bench/import_transcripts.py --corpus /tmp/cc-corpus   # reuse a kept corpus

The corpus is written to a temporary folder (never into the repository) in the shape Claude
Code 2.1.197 writes (tests/fixtures/claude-code-2.1.197-session.jsonl): one file per session
under project folders, subagents' files under ``<session>/subagents/``; per turn a prompt,
queue operations, attachments, file-history snapshots and progress lines, assistant
messages written over several lines (thinking, text, tool_use; the early lines with partial
usage), tool results (file contents, command output, with escapes and non-ASCII text) both in
the message and in ``toolUseResult``; a few ``<synthetic>`` messages, resumed sessions that
copy earlier lines, several models over 120 days.

Each measured step runs as its own process (so its peak RSS is its own): the first import
into an empty database, an unchanged re-import (in-process and as the whole command), and
first imports of an eighth, a quarter and half of the corpus (to show memory does not grow
with the corpus). Targets: >= 100 MB/s, re-import
<= 0.5 s, flat memory.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MODELS = [("claude-opus-4-8", 6), ("claude-sonnet-4-5-20250929", 3),
          ("claude-haiku-4-5-20251001", 1)]
_PROSE = ("the function returns a value when the test passes but the build fails on CI because "
          "of a missing import in module café naïve 日本語 — see line 42; fix: add `import os` "
          "and rerun pytest -q")
_WORDS = _PROSE.split(" ")


def _text(rnd: random.Random, size: int) -> str:
    out: list[str] = []
    length = 0
    while length < size:
        word = rnd.choice(_WORDS)
        if rnd.random() < 0.08:
            word += '\n    if x == "y":\n\treturn {"k": [1, 2]}\n'
        out.append(word)
        length += len(word) + 1
    return " ".join(out)[:size]


class Writer:
    """Writes sessions until the corpus has ``target_bytes`` and ``target_lines``."""

    def __init__(self, root: Path, target_bytes: int, target_lines: int, seed: int = 7) -> None:
        self.root, self.target_bytes, self.target_lines = root, target_bytes, target_lines
        self.rnd = random.Random(seed)
        self.bytes = self.lines = self.calls = 0
        self.blobs = [_text(self.rnd, n) for n in (200, 600, 1500, 4000, 12000, 40000)]
        self.start = datetime(2026, 8, 1, tzinfo=UTC)

    def blob(self, size: int) -> str:
        base = self.rnd.choice([b for b in self.blobs if len(b) >= size] or self.blobs[-1:])
        at = self.rnd.randrange(0, max(1, len(base) - size))
        return base[at:at + size]

    def done(self) -> bool:
        return self.bytes >= self.target_bytes and self.lines >= self.target_lines

    def run(self) -> None:
        projects = [f"-home-ana-work-{name}" for name in
                    ("shop-api", "web", "infra", "data-pipeline", "mobile", "docs", "ml")]
        while not self.done():
            project = self.rnd.choice(projects)
            self.session(self.root / project, "/" + project[1:].replace("-", "/", 3))

    def _write(self, handle, doc: dict) -> None:
        line = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        handle.write(line)
        self.bytes += len(line)
        self.lines += 1

    def session(self, folder: Path, cwd: str, copy_from: list[dict] | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        sid = str(uuid.UUID(int=self.rnd.getrandbits(128)))
        when = self.start + timedelta(seconds=self.rnd.randrange(0, 120 * 86400))
        base = {"userType": "external", "entrypoint": "cli", "cwd": cwd, "sessionId": sid,
                "version": "2.1.197", "gitBranch": "main"}
        kept: list[dict] = []
        with open(folder / f"{sid}.jsonl", "wb") as handle:
            for doc in copy_from or ():  # a resumed session starts with the old lines
                self._write(handle, doc)
            for _ in range(self.rnd.randint(5, 60)):
                when += timedelta(seconds=self.rnd.randint(5, 300))
                self.turn(handle, base, when, kept, sid, folder)
                if self.done():
                    break
        if copy_from is None and self.rnd.random() < 0.05:
            self.session(folder, cwd, copy_from=kept[:40])

    def turn(self, handle, base: dict, when: datetime, kept: list[dict], sid: str,
             folder: Path) -> None:
        rnd = self.rnd

        def ts() -> str:
            return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{rnd.randrange(1000):03d}Z"

        self._write(handle, {"type": "queue-operation", "operation": "enqueue",
                             "timestamp": ts(), "sessionId": sid, "content": self.blob(80)})
        self._write(handle, {"parentUuid": None, "isSidechain": False, "type": "user",
                             "message": {"role": "user", "content": self.blob(120)},
                             "uuid": str(uuid.uuid4()), "timestamp": ts(), **base})
        if rnd.random() < 0.5:
            self._write(handle, {"type": "file-history-snapshot", "messageId": str(uuid.uuid4()),
                                 "snapshot": {"trackedFileBackups": {}, "timestamp": ts()},
                                 "isSnapshotUpdate": False})
        for _ in range(rnd.randint(1, 6)):  # one API call per step of the agent loop
            self.call(handle, base, ts, kept, sidechain=False)
            for _ in range(rnd.randint(2, 16)):
                self._write(handle, {"type": "progress", "data": {
                    "type": "bash_progress", "output": self.blob(rnd.choice((20, 60))),
                    "elapsedTimeSeconds": 2}, "toolUseID": "toolu_01" + "x" * 22,
                    "parentToolUseID": "toolu_01" + "y" * 22, "uuid": str(uuid.uuid4()),
                    "timestamp": ts(), **base})
            size = rnd.choices((100, 300, 1200, 4000, 12000, 40000),
                               (30, 40, 20, 6, 3, 1))[0]
            content = self.blob(size)
            self._write(handle, {
                "parentUuid": None, "isSidechain": False, "type": "user",
                "message": {"role": "user", "content": [{
                    "tool_use_id": "toolu_01" + "z" * 22, "type": "tool_result",
                    "content": content}]},
                "uuid": str(uuid.uuid4()), "timestamp": ts(),
                "toolUseResult": {"stdout": content[: size // 2], "stderr": "",
                                  "interrupted": False}, **base})
            for _ in range(rnd.randint(0, 3)):
                self._write(handle, {"type": "system", "subtype": "informational",
                                     "content": self.blob(120), "level": "info",
                                     "timestamp": ts(), "uuid": str(uuid.uuid4()), **base})
        self.call(handle, base, ts, kept, sidechain=False)
        if rnd.random() < 0.01:
            self._write(handle, {"parentUuid": None, "isSidechain": False, "type": "assistant",
                                 "message": {"id": str(uuid.uuid4()), "model": "<synthetic>",
                                             "role": "assistant", "type": "message",
                                             "content": [{"type": "text",
                                                          "text": "API Error: 529"}],
                                             "usage": {"input_tokens": 0, "output_tokens": 0}},
                                 "isApiErrorMessage": True, "timestamp": ts(), **base})
        if rnd.random() < 0.08:  # a subagent's own file
            sub = folder / base["sessionId"] / "subagents"
            sub.mkdir(parents=True, exist_ok=True)
            agent = f"a{rnd.getrandbits(64):016x}"
            with open(sub / f"agent-{agent}.jsonl", "wb") as sub_handle:
                for _ in range(rnd.randint(2, 8)):
                    self.call(sub_handle, {**base, "agentId": agent}, ts, [], sidechain=True)
        self._write(handle, {"type": "last-prompt", "lastPrompt": self.blob(60),
                             "sessionId": sid})

    def call(self, handle, base: dict, ts, kept: list[dict], *, sidechain: bool) -> None:
        rnd = self.rnd
        model = rnd.choices([m for m, _ in MODELS], [w for _, w in MODELS])[0]
        msg_id = "msg_01" + "".join(rnd.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijk123456789")
                                    for _ in range(22))
        req_id = "req_01" + msg_id[6:]
        usage = {"input_tokens": rnd.randint(1, 4000),
                 "cache_creation_input_tokens": rnd.choice((0, 0, rnd.randint(100, 30000))),
                 "cache_read_input_tokens": rnd.randint(0, 150000),
                 "output_tokens": rnd.randint(1, 3000),
                 "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
                 "service_tier": "standard", "inference_geo": "", "iterations": [],
                 "speed": "standard"}
        usage["cache_creation"] = {"ephemeral_1h_input_tokens": usage[
            "cache_creation_input_tokens"], "ephemeral_5m_input_tokens": 0}
        blocks = [{"type": "thinking", "thinking": self.blob(rnd.choice((200, 800))),
                   "signature": "Eq" + "A" * rnd.choice((200, 600))}] if rnd.random() < 0.3 else []
        blocks.append({"type": "text", "text": self.blob(rnd.choice((60, 200, 800)))})
        if rnd.random() < 0.7:
            blocks.append({"type": "tool_use", "id": "toolu_01" + "q" * 22,
                           "name": rnd.choice(("Read", "Bash", "Edit", "Write", "Grep")),
                           "input": {"file_path": base["cwd"] + "/src/app.py",
                                     "content": self.blob(rnd.choice((50, 300, 2000)))}})
        for index, block in enumerate(blocks):  # one line per content block
            last = index == len(blocks) - 1
            line_usage = dict(usage) if last else {**usage, "output_tokens": rnd.randint(
                1, usage["output_tokens"])}  # written mid-stream: partial output counts
            doc = {"parentUuid": None, "isSidechain": sidechain, "message": {
                "model": model, "id": msg_id, "type": "message", "role": "assistant",
                "content": [block], "stop_reason": None if not last else "end_turn",
                "stop_sequence": None, "usage": line_usage},
                "requestId": req_id, "type": "assistant", "uuid": str(uuid.uuid4()),
                "timestamp": ts(), **base}
            self._write(handle, doc)
            if len(kept) < 40:
                kept.append(doc)
        self.calls += 1


def generate(root: Path, mb: int, lines: int) -> Writer:
    writer = Writer(root, mb * 1_000_000, lines)
    writer.run()
    return writer


_STEP = """
import json, resource, sys, time
from pathlib import Path
from ccmeter import importer, store
from ccmeter.pricing import Catalog
db = store.connect(sys.argv[1])
started = time.perf_counter()
stats = importer.import_transcripts(db, Catalog.bundled(), [Path(sys.argv[2])])
seconds = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({**stats.as_dict(), "wall": seconds, "max_rss_mb": usage.ru_maxrss / 1024,
                  "cpu": usage.ru_utime + usage.ru_stime}))
"""


_PARSE = """
import json, os, resource, sys, time
from ccmeter import importer, transcripts
started = time.perf_counter()
size = calls = 0
for path in importer.transcript_files([sys.argv[1]]):
    with open(path, "rb") as handle:
        tail = b""
        while block := handle.read(importer.BLOCK_BYTES):
            size += len(block)
            block = tail + block
            cut = block.rfind(b"\\n") + 1
            tail = block[cut:]
            for line in block[:cut].split(b"\\n")[:-1]:
                calls += transcripts.classify(line)[1] is not None
seconds = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"bytes": size, "wall": seconds, "cpu": usage.ru_utime + usage.ru_stime,
                  "call_lines": calls}))
"""


def parse_only(corpus: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", _PARSE, str(corpus)], check=True,
                         capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout)


def step(db: Path, corpus: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", _STEP, str(db), str(corpus)], check=True,
                         capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=1100, help="corpus size (MB, default 1100)")
    parser.add_argument("--lines", type=int, default=2_000_000, help="at least this many lines")
    parser.add_argument("--corpus", type=Path, help="reuse this generated corpus")
    parser.add_argument("--keep", type=Path, help="generate into this folder and keep it")
    args = parser.parse_args()

    temp = Path(tempfile.mkdtemp(prefix="ccmeter-import-bench-"))
    try:
        corpus = args.corpus or args.keep or temp / "projects"
        if args.corpus is None:
            started = time.perf_counter()
            writer = generate(corpus, args.mb, args.lines)
            print(f"generated {writer.bytes / 1e6:,.0f} MB, {writer.lines:,} lines, "
                  f"{writer.calls:,} calls in {time.perf_counter() - started:.0f} s -> {corpus}")
        files = sorted(corpus.rglob("*.jsonl"))
        size = sum(f.stat().st_size for f in files)
        print(f"corpus: {len(files):,} files, {size / 1e6:,.0f} MB; load average "
              f"{os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")

        parsed = parse_only(corpus)
        print(f"parse only:       {parsed['wall']:6.2f} s  "
              f"{parsed['bytes'] / 1e6 / parsed['wall']:6.0f} MB/s  (every line classified, "
              f"{parsed['call_lines']:,} call lines read; {parsed['cpu']:.2f} CPU s: "
              f"{parsed['bytes'] / 1e6 / parsed['cpu']:.0f} MB per CPU second; no database)")
        first = step(temp / "full.db", corpus)
        rate = first["bytes_read"] / 1e6 / first["wall"]
        print(f"first import:     {first['wall']:6.2f} s  {rate:6.0f} "
              f"MB/s  {first['lines']:,} lines, {first['new_calls']:,} calls, "
              f"max RSS {first['max_rss_mb']:.0f} MB; {first['cpu']:.2f} CPU s "
              f"(process, start-up included): {first['bytes_read'] / 1e6 / first['cpu']:.0f} "
              "MB per CPU second")
        again = step(temp / "full.db", corpus)
        print(f"unchanged import: {again['wall']:6.2f} s  ({again['files']:,} files, "
              f"{again['bytes_read']} bytes read), max RSS {again['max_rss_mb']:.0f} MB")
        timed = subprocess.run([sys.executable, "-m", "ccmeter.cli", "import", "--from",
                                str(corpus), "--quiet"], cwd=ROOT, env=dict(
                                    os.environ, CCMETER_HOME=str(temp / "home")))
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ccmeter.cli", "import", "--from", str(corpus),
                        "--quiet"], cwd=ROOT, env=dict(os.environ, CCMETER_HOME=str(
                            temp / "home")), check=True)
        print(f"`ccmeter import` unchanged, the whole command: "
              f"{time.perf_counter() - started:.2f} s (exit {timed.returncode} the first time)")

        for name, part in (("an eighth", 8), ("a quarter", 4), ("a half", 2)):
            folder = temp / f"part-{part}"
            for f in files[: len(files) // part]:
                target = folder / f.relative_to(corpus)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(f, target)
            small = step(temp / f"part-{part}.db", folder)
            rate = small["bytes_read"] / 1e6 / small["wall"]
            print(f"{name + ':':17} {small['wall']:6.2f} s  {rate:6.0f} MB/s  "
                  f"{small['bytes_read'] / 1e6:,.0f} MB, max RSS {small['max_rss_mb']:.0f} MB "
                  f"(the whole corpus: {first['max_rss_mb']:.0f} MB)")
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
