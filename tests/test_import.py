"""``ccmeter import`` (:mod:`ccmeter.importer`): incremental, safe with bad input, counted
once beside the wire, and nothing but numbers, ids, models, times and projects stored."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_transcripts import assistant_line
from typer.testing import CliRunner

from ccmeter import importer, store
from ccmeter.cli import app
from ccmeter.pricing import Catalog

CATALOG = Catalog.bundled()


def write(path: Path, *lines: bytes, mode: str = "wb") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode) as handle:
        for line in lines:
            handle.write(line + b"\n")


def calls(db) -> list[dict]:
    return store.query(db, "SELECT * FROM calls ORDER BY started_at, call_uid")


@pytest.fixture
def db(tmp_path):
    database = store.connect(tmp_path / "ccmeter.db")
    yield database
    database.conn.close()


@pytest.fixture
def projects(tmp_path) -> Path:
    return tmp_path / "claude" / "projects"


def run(db, projects: Path) -> importer.ImportStats:
    return importer.import_transcripts(db, CATALOG, [projects])


def test_calls_are_priced_at_their_time_and_named_after_their_repository(db, projects,
                                                                         tmp_path):
    repo = tmp_path / "shop-api"
    (repo / ".git").mkdir(parents=True)
    (repo / "src").mkdir()
    write(projects / "-shop-api-src" / "s1.jsonl",
          assistant_line(cwd=str(repo / "src"), usage={
              "input_tokens": 1000, "cache_creation_input_tokens": 2000,
              "cache_creation": {"ephemeral_5m_input_tokens": 500,
                                 "ephemeral_1h_input_tokens": 1500},
              "cache_read_input_tokens": 4000, "output_tokens": 100}),
          assistant_line(message_id="msg_02", request_id="req_02", model="claude-new-model-9"))
    stats = run(db, projects)
    assert (stats.new_calls, stats.call_lines, stats.files_read) == (2, 2, 1)
    priced, unpriced = calls(db)
    assert priced["project"] == "shop-api" and priced["source"] == "transcript"
    assert (priced["cache_write_5m_tokens"], priced["cache_write_1h_tokens"]) == (500, 1500)
    # Opus 4.8: $5 in, $6.25 5m writes, $10 1h writes, $0.50 reads, $25 out per MTok
    assert priced["cost_picousd"] == (1000 * 5 + 500 * 6.25 + 1500 * 10 + 4000 * 0.5
                                      + 100 * 25) * 10**6
    assert priced["started_at"] == "2026-11-02T10:00:00.000Z"
    assert unpriced["cost_picousd"] is None and "unknown model" in unpriced["pricing_note"]


def test_re_import_reads_only_what_was_appended(db, projects):
    path = projects / "p" / "s1.jsonl"
    write(path, assistant_line(usage={"input_tokens": 10, "output_tokens": 1}))
    assert run(db, projects).new_calls == 1
    unchanged = run(db, projects)
    assert (unchanged.files_read, unchanged.bytes_read, unchanged.new_calls) == (0, 0, 0)

    later = [assistant_line(usage={"input_tokens": 10, "output_tokens": 50}),  # same call
             assistant_line(message_id="msg_02", request_id="req_02")]
    write(path, *later, mode="ab")
    grown = run(db, projects)
    assert grown.bytes_read == sum(len(line) + 1 for line in later)
    assert (grown.lines, grown.new_calls, grown.updated_calls) == (2, 1, 1)
    assert [c["output_tokens"] for c in calls(db)] == [50, 31]


def test_a_rewritten_file_is_read_again(db, projects):
    path = projects / "p" / "s1.jsonl"
    write(path, assistant_line(text="a long first answer " * 20),
          assistant_line(message_id="msg_02", request_id="req_02"))
    run(db, projects)
    replacement = path.with_suffix(".tmp")
    write(replacement, assistant_line(message_id="msg_03", request_id="req_03"))
    os.replace(replacement, path)  # a new file under the old name
    stats = run(db, projects)
    assert (stats.files_reread, stats.new_calls) == (1, 1)
    write(path, assistant_line(message_id="msg_04", request_id="req_04",
                               timestamp="2026-11-02T11:00:00.000Z"))  # rewritten in place
    stats = run(db, projects)
    assert (stats.files_reread, stats.new_calls) == (1, 1)
    assert len(calls(db)) == 4  # rows are never removed: each was a call


def test_bad_lines_are_counted_and_skipped_never_a_traceback(db, projects):
    path = projects / "p" / "s1.jsonl"
    write(path, assistant_line(), b"{not json", b'["a", "list"]', b'{"type":"mystery","x":1}',
          assistant_line(message_id="msg_s", model="<synthetic>"), b"\xff\xfe\x00binary",
          b"[" * 50_000, assistant_line(message_id="msg_bad", usage={"input_tokens": -1}),
          b"", assistant_line(message_id="msg_02", request_id="req_02"))
    with open(path, "ab") as handle:
        handle.write(assistant_line(message_id="msg_cut")[:80])  # a cut last line
    stats = run(db, projects)
    assert (stats.malformed, stats.unknown_types, stats.synthetic, stats.truncated) == (
        4, 1, 1, 1)
    assert stats.new_calls == 3
    bad = next(c for c in calls(db) if c["message_id"] == "msg_bad")
    assert bad["cost_picousd"] is None and "input_tokens=-1" in bad["pricing_note"]
    # the cut line is finished later: it is read then, from where the import stopped
    with open(path, "ab") as handle:
        handle.write(assistant_line(message_id="msg_cut")[80:] + b"\n")
    stats = run(db, projects)
    assert (stats.new_calls, stats.malformed, stats.truncated) == (1, 0, 0)


def test_an_unreadable_file_is_counted(db, projects):
    write(projects / "p" / "s1.jsonl", assistant_line())
    (projects / "p" / "gone.jsonl").symlink_to(projects / "p" / "deleted.jsonl")
    stats = run(db, projects)
    assert (stats.unreadable, stats.new_calls) == (1, 1)


def test_subagent_files_and_every_project_folder_are_read(db, projects):
    write(projects / "-a" / "s1.jsonl", assistant_line(session="s1"))
    write(projects / "-a" / "s1" / "subagents" / "agent-x.jsonl",
          assistant_line(message_id="msg_sub", session="s1", sidechain=True, agent="x"))
    write(projects / "-b" / "s2.jsonl", assistant_line(message_id="msg_b", session="s2"))
    (projects / "-b" / "notes.txt").write_text("not a transcript")
    assert run(db, projects).new_calls == 3
    sub = next(c for c in calls(db) if c["message_id"] == "msg_sub")
    assert (sub["call_kind"], sub["agent_id"], sub["session_id"]) == ("subagent", "x", "s1")


def test_a_call_resumed_into_another_file_counts_once(db, projects):
    write(projects / "p" / "s1.jsonl", assistant_line(session="s1"))
    write(projects / "p" / "s2.jsonl", assistant_line(session="s2"),
          assistant_line(message_id="msg_new", session="s2",
                         timestamp="2026-11-02T12:00:00.000Z"))
    run(db, projects)
    assert [(c["message_id"], c["session_id"]) for c in calls(db)] == [
        ("msg_01A", "s1"), ("msg_new", "s2")]


# --- beside the wire: once, from the wire ----------------------------------------------------


def _wire_row(**extra) -> dict:
    now = time.time()
    row = {"call_uid": "flow-1", "started_at": "2026-11-02T10:00:00.100Z",
           "started_ts": 1793613600.1, "status": "ok", "session_id": "sess-1",
           "model": "claude-opus-4-8", "input_tokens": 27, "output_tokens": 40,
           "cost_picousd": 1_135_000_000, "updated_ts": now}
    row.update(extra)
    return row


@pytest.mark.parametrize("order", ["wire first", "import first"])
@pytest.mark.parametrize("match", ["request id", "message id"])
def test_a_call_seen_both_ways_counts_once_from_the_wire(db, projects, order, match):
    ids = {"request_id": "req_01A"} if match == "request id" else {"message_id": "msg_01A"}
    write(projects / "p" / "s1.jsonl", assistant_line(),
          assistant_line(message_id="msg_only_here", request_id="req_only_here"))
    if order == "wire first":
        store.upsert_calls(db, [_wire_row(**ids)])
        assert run(db, projects).on_wire == 1
    else:
        assert run(db, projects).on_wire == 0
        store.upsert_calls(db, [_wire_row(**ids)])
    rows = calls(db)
    assert sorted((r["source"], r["output_tokens"]) for r in rows) == [
        ("transcript", 31), ("wire", 40)]
    from ccmeter import reports

    rep = reports.build_report(db, ["project"], reports.Filters(), CATALOG)
    assert (rep.totals["calls"], rep.totals["transcript_calls"]) == (2, 1)
    wire = reports.build_report(db, ["project"], reports.Filters(source="wire"), CATALOG)
    only = reports.build_report(db, ["project"], reports.Filters(source="transcript"), CATALOG)
    assert (wire.totals["calls"], only.totals["calls"]) == (1, 1)
    assert wire.totals["cost"] + only.totals["cost"] == rep.totals["cost"]


def test_reconcile_compares_sessions_seen_both_ways(db, projects):
    write(projects / "p" / "s1.jsonl", assistant_line(usage={"input_tokens": 27,
                                                             "output_tokens": 10}))
    write(projects / "p" / "old.jsonl", assistant_line(message_id="msg_old", session="old"))
    run(db, projects)
    store.upsert_calls(db, [
        _wire_row(request_id="req_01A", message_id="msg_01A"),
        _wire_row(call_uid="flow-2", request_id="req_haiku", message_id="msg_haiku",
                  model="claude-haiku-4-5", input_tokens=20, output_tokens=2,
                  cost_picousd=30_000_000),
        _wire_row(call_uid="flow-3", status="blocked", cost_picousd=0)])
    from ccmeter.reconcile import reconcile

    result = reconcile(db)
    [row] = result.rows  # the session "old" was never on the wire
    assert (row["session"], row["wire_calls"], row["transcript_calls"],
            row["missing_calls"]) == ("sess-1", 2, 1, 1)
    assert row["output_tokens_diff"] == 40 + 2 - 10
    assert row["input_tokens_diff"] == 20
    assert row["wire_cost"] == 1_135_000_000 + 30_000_000
    assert row["transcript_cost"] == (27 * 5 + 10 * 25) * 10**6
    assert row["difference"] == row["wire_cost"] - row["transcript_cost"]
    assert result.totals["difference"] == row["difference"]


# --- privacy --------------------------------------------------------------------------------


def test_nothing_but_numbers_ids_models_times_and_projects_is_stored(db, projects, tmp_path):
    secret = "SECRET-PROMPT-TEXT-4711"
    write(projects / "p" / "s1.jsonl",
          json.dumps({"type": "user", "message": {"role": "user", "content": secret},
                      "cwd": f"/home/ana/{secret}-dir/shop", "sessionId": "s1"}).encode(),
          assistant_line(text=f"Answer with {secret}", cwd=f"/home/ana/{secret}-dir/shop"),
          json.dumps({"type": "user", "toolUseResult": {"stdout": secret, "usage": {
              "input_tokens": 5}, "type": "assistant"}}).encode())
    run(db, projects)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    stored = (tmp_path / "ccmeter.db").read_bytes()
    assert secret.encode() not in stored.replace(b"/projects/p/", b"")
    [row] = calls(db)
    assert row["project"] == "shop"  # the folder's name, never its path


# --- the same lines in any order and repetition, through files: one row -------------------


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 400), st.integers(0, 9)),
                min_size=1, max_size=5),
       st.randoms(use_true_random=False), st.integers(1, 3))
def test_any_order_and_repetition_through_files_gives_one_row(tmp_path_factory, lines, rnd,
                                                              files):
    built = [assistant_line(usage={"input_tokens": i, "output_tokens": o},
                            timestamp=f"2026-11-02T10:00:0{t}.000Z") for i, o, t in lines]
    copies = built * 2
    rnd.shuffle(copies)
    root = tmp_path_factory.mktemp("lines")
    database = store.connect(root / "db.sqlite")
    try:
        for n in range(files):  # spread over files, and over two imports
            write(root / "projects" / "p" / f"s{n}.jsonl", *copies[n::files])
            importer.import_transcripts(database, CATALOG, [root / "projects"])
        [row] = calls(database)
    finally:
        database.conn.close()
    assert row["input_tokens"] == max(i for i, _, _ in lines)
    assert row["output_tokens"] == max(o for _, o, _ in lines)
    assert row["started_at"] == f"2026-11-02T10:00:0{min(t for *_, t in lines)}.000Z"
    assert row["cost_picousd"] == (row["input_tokens"] * 5 + row["output_tokens"] * 25) * 10**6


# --- the command ----------------------------------------------------------------------------


def test_import_command_human_and_json(projects, monkeypatch):
    write(projects / "p" / "s1.jsonl", assistant_line(), b"{broken")
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(projects.parent))
    runner = CliRunner()
    result = runner.invoke(app, ["import"])
    assert result.exit_code == 0, result.output
    assert "Added 1 call" in result.output and "1 malformed line" in result.output
    result = runner.invoke(app, ["import", "--format", "json"])
    doc = json.loads(result.output)
    assert doc["rows"][0]["files"] == 1 and doc["rows"][0]["new_calls"] == 0
    assert runner.invoke(app, ["import", "--from", str(projects / "nope")]).exit_code != 0
    result = runner.invoke(app, ["report", "--by", "month", "-f", "csv"])
    assert "transcript" in result.output.splitlines()[1]
    result = runner.invoke(app, ["sessions", "--since", "3000d", "-f", "json"])
    [session] = json.loads(result.output)["rows"]
    assert (session["source"], session["transcript_calls"]) == ("transcript", 1)
    result = runner.invoke(app, ["session", "sess-1"])
    assert result.exit_code == 0 and "transcript" in result.output
    result = runner.invoke(app, ["reconcile", "--since", "3000d"])
    assert result.exit_code == 0 and "No session" in result.output
    result = runner.invoke(app, ["report", "--source", "elsewhere"])
    assert result.exit_code != 0


def test_roots_follow_claude_config_dir(tmp_path):
    from ccmeter.folders import claude_transcript_roots

    assert claude_transcript_roots({"CLAUDE_CONFIG_DIR": "/a, /b"}) == [
        "/a/projects", "/b/projects"]
    assert claude_transcript_roots({"HOME": str(tmp_path)}) == [
        str(tmp_path / ".claude" / "projects")]
    (tmp_path / ".config" / "claude" / "projects").mkdir(parents=True)
    assert claude_transcript_roots({"HOME": str(tmp_path)}) == [
        str(tmp_path / ".config" / "claude" / "projects")]


def test_the_calls_view_has_source_for_every_row(db):
    store.upsert_calls(db, [_wire_row()])
    assert [r["source"] for r in calls(db)] == ["wire"]


# --- `ccmeter run` and the import -------------------------------------------------------------


def _transcript_in_home(home: Path) -> None:
    write(home / ".claude" / "projects" / "-work-shop" / "s1.jsonl", assistant_line())


def test_run_hints_until_something_was_imported_and_import_on_run_imports(user_home,
                                                                           user_dirs):
    from test_user_layout import cli

    quiet = cli("run", "--", "true")
    assert quiet.returncode == 0 and "ccmeter import" not in quiet.stderr  # no transcripts
    _transcript_in_home(user_home)
    hinted = cli("run", "--", "true")
    assert [line for line in hinted.stderr.splitlines() if "ccmeter import" in line]

    user_dirs.config_file.parent.mkdir(parents=True, exist_ok=True)
    user_dirs.config_file.write_text("import_on_run = false\n")
    assert "ccmeter import" not in cli("run", "--", "true").stderr

    user_dirs.config_file.write_text("import_on_run = true\n")
    started = cli("run", "--", "true")
    assert started.returncode == 0 and "ccmeter import" not in started.stderr
    for _ in range(200):  # the import runs in the background: the run did not wait for it
        database = store.connect(user_dirs.db_file)
        try:
            if store.has_imported_calls(database):
                break
        finally:
            database.conn.close()
        time.sleep(0.1)
    else:
        raise AssertionError("the background import did not run")

    user_dirs.config_file.write_text('import_on_run = "yes"\n')
    refused = cli("run", "--", "true")
    assert refused.returncode != 0 and "import_on_run" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_the_background_import_runs_from_a_folder_that_holds_a_ccmeter_folder(
        user_home, user_dirs, tmp_path, monkeypatch):
    """`ccmeter run` started in a folder with a ccmeter checkout in it: the background import
    must import the installed package, not that folder."""
    from ccmeter import runimport

    _transcript_in_home(user_home)
    (tmp_path / "work" / "ccmeter").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    runimport.at_run_start(user_dirs.data_dir, True, lambda line: None)
    stamp = user_dirs.data_dir / runimport.STAMP_NAME
    for _ in range(300):
        if stamp.exists():
            break
        time.sleep(0.1)
    database = store.connect(user_dirs.db_file)
    try:
        assert store.has_imported_calls(database)
    finally:
        database.conn.close()
