"""Every command's --help at 80 columns: no type placeholders, no pointer to a docs/ file an
installed user does not have, every option explained, prose that wraps to the terminal."""

from __future__ import annotations

import itertools
import re
from datetime import datetime

import pytest
import typer.main
from typer.testing import CliRunner

from ccmeter import config
from ccmeter.cli import app
from ccmeter.schema_doc import schema_markdown

WIDTH = 80


def command_paths() -> list[list[str]]:
    """Every command and sub-command, as the words that name it."""
    found: list[list[str]] = [[]]

    def walk(command: object, path: list[str]) -> None:
        for name, sub in sorted((getattr(command, "commands", None) or {}).items()):
            found.append([*path, name])
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


def command_at(path: list[str]) -> object:
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    return command


PATHS = command_paths()


def test_the_walk_finds_the_sub_commands():
    names = {" ".join(p) for p in PATHS}
    assert {"report", "caps pause", "team report", "prices import", "schema"} <= names


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "ccmeter")
def test_help_at_80_columns(path, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    text = result.output
    assert not re.search(r"<[a-z][\w\[\], ]*>", text), text  # <bool>, <str>, <list[str]>
    assert "docs/" not in text, text
    assert all(len(line) <= WIDTH for line in text.splitlines()), text
    # prose wraps to the terminal: a short line is the end of a paragraph, not a hard break
    prose = text.split("╭")[0].splitlines()
    for line, following in itertools.pairwise(prose):
        line, following = line.strip(), following.strip()
        commands = ("ccmeter", "echo", "mitmdump", "Usage")
        if line and following and not line.endswith(":") and not following.startswith(
                commands) and not line.startswith(commands):
            assert len(line) >= WIDTH - 25, f"ragged wrap after {line!r}:\n{text}"
    for param in command_at(path).params:  # type: ignore[attr-defined]
        if getattr(param, "param_type_name", "") == "option" and not param.hidden:
            assert param.help and param.help.strip(), f"{param.opts} has no help"


def test_schema_prints_what_docs_schema_holds():
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0
    assert result.output == schema_markdown()
    assert "## view `calls`" in result.output


def test_caps_pause_without_for_pauses_one_hour(user_dirs):
    before = datetime.now().astimezone()
    result = CliRunner().invoke(app, ["caps", "pause"])
    assert result.exit_code == 0, result.output
    paused = config.load_config()["caps"]["paused_until"]
    minutes = (paused - before).total_seconds() / 60
    assert 59 <= minutes <= 61, paused
    assert "caps paused until" in result.output


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "ccmeter")
def test_examples_stay_whole_at_80_columns(path, monkeypatch):
    """An example is copied and pasted: rich wrapping one mid-pipeline put ``ccmeter
    statusline`` on a line of its own. Every indented block line shows on one line."""
    from ccmeter.commands.helptext import _KEEP_INDENT

    monkeypatch.setenv("COLUMNS", str(WIDTH))
    text = CliRunner().invoke(app, [*path, "--help"]).output
    shown = [line.strip() for line in text.split("╭")[0].splitlines()]
    help_text = getattr(command_at(path), "help", None) or ""
    block = [line.replace(_KEEP_INDENT, "").strip().replace("\\[", "[")
             for line in help_text.splitlines() if _KEEP_INDENT in line]
    for line in block:
        if line:
            assert line in shown, f"{line!r} is wrapped in:\n{text}"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "ccmeter")
def test_option_descriptions_get_room(path, monkeypatch):
    """A --x/--no-x pair took a column of its own and left descriptions ~23 characters."""
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    text = CliRunner().invoke(app, [*path, "--help"]).output
    panel = text.split("╭", 1)[1] if "╭" in text else ""
    for param in command_at(path).params:  # type: ignore[attr-defined]
        if getattr(param, "param_type_name", "") != "option" or not param.help:
            continue
        start = " ".join(param.help.replace("\\[", "[").split()[:2])
        line = next((x for x in panel.splitlines() if start in x), None)
        if line is not None:
            assert line.index(start) <= 45, f"{param.opts}: description squeezed:\n{text}"
