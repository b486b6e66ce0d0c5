"""Plain-text tables (written off a terminal without rich) are exactly what rich prints.

:func:`ccmeter.plaintable.table_text` either returns rich's own layout character for
character, or None (and rich lays the table out). Compared here on the real report, sessions
and caps tables at many widths, and on generated tables with awkward names, amounts, long
titles and captions.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ccmeter import render
from ccmeter.plaintable import table_text

ROOT = Path(__file__).resolve().parent.parent


def _rich(rows, columns, *, title=None, totals=None, meta=None, width=120) -> str:
    buffer = io.StringIO()
    console = render.make_console(buffer, width=width)
    console.print(render.render_table(rows, columns, title=title, totals=totals, meta=meta,
                                      width=width))
    return buffer.getvalue()


COLUMNS = [
    render.Column("project", "Project", whole=True),
    render.Column("session", "Session"),
    render.Column("started", "Started", "datetime", keep=True),
    render.Column("calls", "Calls", "int"),
    render.Column("tokens", "Cache read", "int", drop=1),
    render.Column("cost", "Cost", "usd"),
    render.Column("used", "Used", "percent"),
    render.Column("rate", "Rate", "number", drop=2),
    render.Column("bar", "", "spark"),
]
names = st.text(st.sampled_from("abc-_ XYZ09/[]→·é✓漢\t⛔⚠└"), max_size=50)
amounts = st.one_of(st.none(), st.integers(0, 10**16))
rows_strategy = st.lists(st.fixed_dictionaries({
    "project": st.one_of(st.none(), names), "session": names,
    "started": st.one_of(st.none(), st.floats(1.6e9, 1.9e9)),
    "calls": st.one_of(st.none(), st.integers(0, 10**10)),
    "tokens": st.integers(0, 10**12), "cost": amounts,
    "used": st.one_of(st.none(), st.floats(0, 3)), "rate": st.sampled_from(["1.5", "0.075"]),
    "bar": st.floats(0, 1),
}), max_size=6)


@settings(max_examples=300, deadline=None)
@given(rows=rows_strategy, width=st.integers(20, 220), title=st.one_of(st.none(), names),
       caption=st.one_of(st.none(), names), some=st.integers(1, len(COLUMNS)),
       with_totals=st.booleans())
def test_plain_text_is_what_rich_prints(rows, width, title, caption, some, with_totals):
    columns = COLUMNS[:some]
    totals = {"calls": sum(r["calls"] or 0 for r in rows), "cost": None} if with_totals else None
    meta = {"note": caption} if caption is not None else None
    plain = table_text(rows, columns, title=title, totals=totals, meta=meta, width=width)
    if plain is not None:
        assert plain == _rich(rows, columns, title=title, totals=totals, meta=meta,
                              width=width)


def _table(args: list[str], env: dict[str, str], entry: str) -> str:
    code = f"from {entry} import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, check=True, timeout=120).stdout


def test_the_real_tables_take_the_plain_path_and_match_rich(user_dirs, monkeypatch):
    from tests.realistic_db import fill_realistic

    fill_realistic()
    user_dirs.config_file.parent.mkdir(parents=True, exist_ok=True)
    user_dirs.config_file.write_text('[caps]\ndaily = "5"\nmonthly = "90"\n', encoding="utf-8")
    from ccmeter.views import report as report_view

    seen = []
    real = table_text

    def spy(*args, **kwargs):
        text = real(*args, **kwargs)
        seen.append((text is not None, os.environ['COLUMNS'], kwargs.get('title')))
        if text is not None:
            assert text == _rich(*args, **kwargs)
        return text

    monkeypatch.setattr("ccmeter.plaintable.table_text", spy)
    for width in ("200", "120", "100", "80", "60"):
        monkeypatch.setenv("COLUMNS", width)
        for by, since in ((None, None), (["model", "day"], "14d"), (["session"], "14d"),
                          (["project"], "30d")):
            report_view.run(by, since, None, None, None, "table")
        from ccmeter.views.caps import show
        from ccmeter.views.sessions import run as sessions

        sessions("14d", None, None, None, 20, "table")
        show("table", None)
    # at 60 columns the sessions table does not fit (whole ids): rich squeezes it itself
    assert all(ok for ok, width, _ in seen if int(width) >= 80), [s for s in seen if not s[0]]
    assert sum(ok for ok, *_ in seen) >= len(seen) - 1
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "90"}
    assert "Spend by model" in _table(["report", "--by", "model", "--since", "14d"], env,
                                      "ccmeter.entry")


def _rich_frame(parts, width: int) -> str:
    from rich.console import Group

    from ccmeter.views.watch import _rich

    buffer = io.StringIO()
    render.make_console(buffer, width=width).print(Group(*(_rich(p) for p in parts)))
    return buffer.getvalue()


def test_watch_frames_match_rich(user_dirs):
    import time

    from ccmeter import config, store
    from ccmeter.views.watch import _plain_frame, frame_parts
    from tests.realistic_db import fill_realistic

    db = store.connect(user_dirs.db_file)
    now = time.time()
    empty = frame_parts(db, {}, now, 15, 100)
    assert _plain_frame(empty, 100) == _rich_frame(empty, 100)
    fill_realistic(now)
    plain_frames = 0
    for caps in ({}, {"daily": "500", "weekly": "4000"}, {"daily": "0.01"},
                 {"daily": "1000", "projects": {"web": {"daily": "0.5"}}}):
        cfg = {**config.load_config(), "caps": caps} if caps else {}
        for width in (200, 120, 100, 80, 60, 40, 25):
            for minutes in (15, 60 * 24 * 30):
                parts = frame_parts(db, cfg, now, minutes, width)
                plain = _plain_frame(parts, width)
                if plain is not None:
                    plain_frames += 1
                    assert plain == _rich_frame(parts, width), (caps, width, minutes)
    db.conn.close()
    assert plain_frames >= 20  # the usual frames take the plain path (not "⛔", 2 cells wide)
