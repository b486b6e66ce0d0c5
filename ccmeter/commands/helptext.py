"""Help that reads well at 80 columns, for every command of the tree at once.

Typer shows each option's Python type as a placeholder (``<bool>``, ``<str>``,
``<list[str]>``) and keeps the docstrings' hard line breaks, so a paragraph wraps raggedly in
a narrow terminal. :class:`TidyGroup` is the root group's class: once Click has built the
tree it walks every command and sub-command and

- gives each option a metavar (its name in capitals, unless it has one) and flags none;
- reflows prose paragraphs into one line each (rich wraps them to the terminal), keeping
  example blocks (indented lines) as they are;
- escapes ``[table]`` names such as ``[prices]`` that rich would take for markup.
"""

from __future__ import annotations

import inspect
import re
import textwrap
from typing import Any

from typer.core import TyperGroup

_UNESCAPED_BRACKET = re.compile(r"(?<!\\)\[(?=[a-z_.]+\])")
_KEEP_INDENT = "[dim][/dim]"
#: Placeholders that say more than the option's name would.
METAVARS = {"since": "WHEN", "until": "WHEN", "by": "FIELD", "hourly": "USD", "daily": "USD",
            "weekly": "USD", "monthly": "USD", "total": "USD", "estimate": "USD",
            "for": "DURATION", "to": "FOLDER", "from": "FOLDER", "active": "DURATION",
            "interval": "SECONDS", "limit": "N", "warn-at": "FRACTIONS", "timezone": "ZONE"}


def reflow(text: str | None) -> str | None:
    """Paragraphs on one line each; indented lines (examples) and the lines after a line
    ending in ``:`` stay as written."""
    if not text:
        return text
    paragraphs = []
    for paragraph in escape(inspect.cleandoc(text)).split("\n\n"):
        lines = paragraph.splitlines()
        block = len(lines) > 1 and (lines[0].rstrip().endswith(":")
                                    or any(line[:1].isspace() for line in lines[1:]))
        if block:
            head, rest = lines[0], textwrap.dedent("\n".join(lines[1:])).splitlines()
            # an empty markup tag first: Typer dedents the help after its first paragraph, and
            # would take the examples' indent away when they are all that is left
            paragraphs.append("\n".join([head, *(_KEEP_INDENT + "  " + line.rstrip()
                                                  for line in rest)]))
        else:
            paragraphs.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(paragraphs)


def escape(text: str) -> str:
    """``[prices]`` -> ``\\[prices]`` so rich prints it rather than swallowing it."""
    return _UNESCAPED_BRACKET.sub(r"\\[", text)


def _no_type(*_: Any, **__: Any) -> None:
    return None


def tidy_param(param: Any) -> None:
    # duck-typed: recent Typer builds on its own copy of Click, older ones on click itself
    kind = getattr(param, "param_type_name", None)
    if kind == "option":
        if param.help:
            param.help = escape(param.help)
        if getattr(param, "is_flag", False) or getattr(param, "count", False):
            setattr(param, "display_type_rich", _no_type)  # noqa: B010 (one instance)
        elif param.metavar is None and param.name:
            long = next((o[2:] for o in param.opts if o.startswith("--")), param.name)
            param.metavar = METAVARS.get(long, long.replace("-", "_").upper())
    elif kind == "argument" and param.name:
        if param.metavar is None:
            param.metavar = param.name.upper() + ("..." if param.nargs != 1 else "")
        setattr(param, "display_type_rich", _no_type)  # noqa: B010 (one instance)


def tidy(command: Any) -> None:
    """Tidy ``command``'s help, its parameters', and every sub-command's."""
    if hasattr(command, "rich_markup_mode"):  # sub-apps too (their examples stay indented)
        command.rich_markup_mode = "rich"
    command.help = reflow(command.help)
    make_help_option = command.get_help_option

    def get_help_option(ctx: Any) -> Any:
        option = make_help_option(ctx)
        if option is not None:
            tidy_param(option)
        return option

    command.get_help_option = get_help_option
    if command.short_help:
        command.short_help = reflow(command.short_help)
    for param in command.params:
        tidy_param(param)
    for sub in (getattr(command, "commands", None) or {}).values():
        tidy(sub)


class TidyGroup(TyperGroup):
    """The root group: tidies the whole command tree once it is built."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tidy(self)

    def get_params(self, ctx: Any) -> list[Any]:
        """The root's own options too: Typer adds the completion ones after building it."""
        params = super().get_params(ctx)
        for param in params:
            tidy_param(param)
        return params
