"""config.toml is rewritten by the caps commands: what the user wrote by hand stays."""

from __future__ import annotations

import tomllib

from hypothesis import given, settings
from hypothesis import strategies as st
from test_user_layout import cli

from ccmeter import configwrite

HAND_WRITTEN = """\
# my settings
idle_exit = "30m"   # keep it up longer

[caps]
daily = "20"  # my daily budget
weekly = "100"

[share]
# where the team's summaries go
path = "/srv/share"
"""


def test_the_caps_commands_keep_comments_and_layout(user_dirs):
    user_dirs.config_dir.mkdir(parents=True)
    user_dirs.config_file.write_text(HAND_WRITTEN, encoding="utf-8")
    assert cli("caps", "set", "--monthly", "300").returncode == 0
    assert cli("caps", "unset", "weekly").returncode == 0
    text = user_dirs.config_file.read_text(encoding="utf-8")
    assert text == HAND_WRITTEN.replace('weekly = "100"\n', 'monthly = "300"\n')
    assert tomllib.loads(text)["caps"] == {"daily": "20", "monthly": "300"}


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
values = st.one_of(st.integers(-10**6, 10**6), st.booleans(), st.text(max_size=12),
                   st.lists(st.integers(0, 9), max_size=3))
tables = st.dictionaries(names, st.one_of(values, st.dictionaries(names, values, max_size=4)),
                         max_size=6)


@settings(max_examples=200, deadline=None)
@given(tables, tables)
def test_whatever_was_there_the_file_says_exactly_the_new_data(before, after):
    text = configwrite.dumps(after, configwrite.dumps(before))
    assert tomllib.loads(text) == after
