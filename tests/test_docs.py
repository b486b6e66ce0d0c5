"""Docs that are generated must match what the code generates."""

from __future__ import annotations

from pathlib import Path

from ccmeter.schema_doc import schema_markdown

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_schema_doc_is_current():
    assert (DOCS / "schema.md").read_text() == schema_markdown(), (
        "docs/schema.md is stale: run `python -m ccmeter.schema_doc > docs/schema.md`"
    )
