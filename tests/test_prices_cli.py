"""`ccmeter prices`, `prices import` (LiteLLM's file) and `reprice`."""

from __future__ import annotations

import json
import time
import tomllib
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from ccmeter import config, store
from ccmeter.cli import app
from ccmeter.commands.prices import canonical_id, read_litellm, usage_from_row
from ccmeter.pricing import Catalog
from ccmeter.usage import Hop, TokenCounts, Usage

LITELLM = {
    "sample_spec": {"input_cost_per_token": 0},
    "claude-3-5-sonnet-20240620": {
        "litellm_provider": "anthropic", "mode": "chat",
        "input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05,
        "cache_creation_input_token_cost": 3.75e-06, "cache_read_input_token_cost": 3e-07,
    },
    "bedrock/us.anthropic.claude-3-5-sonnet-20240620-v1:0": {
        "litellm_provider": "bedrock", "input_cost_per_token": 9e-06,
        "output_cost_per_token": 9e-05,
    },
    "claude-opus-4-8": {
        "litellm_provider": "anthropic", "input_cost_per_token": 4e-06,
        "output_cost_per_token": 2.5e-05, "cache_creation_input_token_cost": 6.25e-06,
        "cache_creation_input_token_cost_above_1hr": 1e-05,
        "cache_read_input_token_cost": 5e-07,
    },
    "claude-haiku-4-5-20251001": {
        "litellm_provider": "anthropic", "input_cost_per_token": 1e-06,
        "output_cost_per_token": 5e-06, "cache_creation_input_token_cost": 1.25e-06,
        "cache_read_input_token_cost": 1e-07,
    },
    "gpt-4o": {"litellm_provider": "openai", "input_cost_per_token": 2.5e-06,
               "output_cost_per_token": 1e-05},
}



@pytest.fixture
def litellm_file(tmp_path):
    path = tmp_path / "model_prices_and_context_window.json"
    path.write_text(json.dumps(LITELLM))
    return path


def test_prices_lists_the_catalog(home):
    runner = CliRunner()
    result = runner.invoke(app, ["prices"])
    assert result.exit_code == 0, result.output
    assert "claude-opus-4-8" in result.output and Catalog.bundled().version in result.output
    doc = json.loads(runner.invoke(app, ["prices", "--format", "json"]).output)
    opus = next(r for r in doc["rows"] if r["model"] == "claude-opus-4-8")
    assert opus["input"] == "5" and opus["cache_read"] == "0.5" and opus["source"] == "catalog"
    assert doc["meta"]["catalog_version"] == Catalog.bundled().version


def test_exact_conversion_and_filtering():
    models, _warnings = read_litellm(LITELLM)
    by_id = {m.model: m for m in models}
    assert set(by_id) == {"claude-3-5-sonnet-20240620", "claude-opus-4-8",
                          "claude-haiku-4-5-20251001"}
    sonnet = by_id["claude-3-5-sonnet-20240620"]
    assert sonnet.source_key == "claude-3-5-sonnet-20240620"  # anthropic's entry wins
    assert {k: str(v) for k, v in sonnet.rates.items()} == {
        "input": "3", "output": "15", "cache_write_5m": "3.75", "cache_read": "0.3"}
    assert str(by_id["claude-opus-4-8"].rates["cache_write_1h"]) == "10"
    assert canonical_id("vertex_ai/claude-3-5-sonnet@20240620") == "claude-3-5-sonnet-20240620"
    assert canonical_id("eu.anthropic.claude-3-haiku-20240307-v1:0") == "claude-3-haiku-20240307"


def test_import_adds_new_models_and_keeps_known_ones(home, litellm_file):
    runner = CliRunner()
    result = runner.invoke(app, ["prices", "import", str(litellm_file), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "nothing written" in result.output
    assert not config.paths().config_file.exists()

    result = runner.invoke(app, ["prices", "import", str(litellm_file)])
    assert result.exit_code == 0, result.output
    assert "1 added" in result.output and "1 differs (kept)" in result.output
    assert "1 unchanged" in result.output
    saved = tomllib.loads(config.paths().config_file.read_text())
    added = saved["prices"]["models"]["claude-3-5-sonnet-20240620"]
    assert added == {"input": "3", "output": "15", "cache_write_5m": "3.75",
                     "cache_read": "0.3", "cache_write_1h": "6"}  # 1h derived: 2 x input
    assert "claude-opus-4-8" not in saved["prices"]["models"]

    doc = json.loads(runner.invoke(app, ["prices", "-f", "json"]).output)
    row = next(r for r in doc["rows"] if r["model"] == "claude-3-5-sonnet-20240620")
    assert row["source"] == "added" and row["input"] == "3"

    result = runner.invoke(app, ["prices", "import", str(litellm_file), "--replace-known",
                                 "-f", "json"])
    doc = json.loads(result.output)
    assert {r["model"]: r["action"] for r in doc["rows"]}["claude-opus-4-8"] == "updated"
    saved = tomllib.loads(config.paths().config_file.read_text())
    assert saved["prices"]["models"]["claude-opus-4-8"]["input"] == "4"


def test_import_rejects_a_file_without_claude(home, tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"gpt-4o": LITELLM["gpt-4o"]}))
    result = CliRunner().invoke(app, ["prices", "import", str(path)])
    assert result.exit_code != 0
    assert "no Claude models" in str(result.exception)


def test_usage_from_row_rebuilds_hops():
    usage = Usage(input_tokens=5, output_tokens=7, hops=(
        Hop("advisor_message", "claude-opus-4-8", TokenCounts(input_tokens=3, output_tokens=2)),))
    from dataclasses import asdict

    row = {"input_tokens": 5, "cache_write_5m_tokens": 0, "cache_write_1h_tokens": 0,
           "cache_read_tokens": 0, "output_tokens": 7,
           "hops_json": json.dumps([asdict(h) for h in usage.hops])}
    assert usage_from_row(row) == usage


def test_reprice_keeps_history(home, litellm_file):
    now = time.time()
    ts = now - 3600
    rows = [
        {"call_uid": "unknown", "started_at": "x", "started_ts": ts, "status": "ok",
         "model": "claude-3-5-sonnet-20240620", "input_tokens": 1000, "output_tokens": 100,
         "cost_picousd": None, "catalog_version": "old", "updated_ts": ts},
        {"call_uid": "known", "started_at": "x", "started_ts": ts, "status": "ok",
         "model": "claude-opus-4-8", "input_tokens": 1000, "output_tokens": 100,
         "cost_picousd": 123, "catalog_version": "old", "updated_ts": ts},
        {"call_uid": "too-old", "started_at": "x", "started_ts": now - 40 * 86400,
         "status": "ok", "model": "claude-opus-4-8", "input_tokens": 1,
         "cost_picousd": 999, "catalog_version": "old", "updated_ts": ts},
    ]
    db = store.connect(config.paths().db_file)
    store.upsert_calls(db, rows)
    runner = CliRunner()
    assert runner.invoke(app, ["reprice"]).exit_code != 0  # --since or --all is required
    assert runner.invoke(app, ["prices", "import", str(litellm_file)]).exit_code == 0

    result = runner.invoke(app, ["reprice", "--since", "7d", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "2 would change" in result.output and "1 newly priced" in result.output
    assert store.get_call(db, "unknown")["cost_picousd"] is None

    result = runner.invoke(app, ["reprice", "--since", "7d", "-f", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["meta"]["changed"] == 2 and doc["meta"]["newly_priced"] == 1
    at = datetime.fromtimestamp(ts, UTC)
    catalog = Catalog.bundled().with_overrides(
        tomllib.loads(config.paths().config_file.read_text())["prices"])
    new_unknown = catalog.price("claude-3-5-sonnet-20240620",
                                Usage(input_tokens=1000, output_tokens=100), at).cost_picousd
    assert new_unknown == 1000 * 3_000_000 + 100 * 15_000_000
    assert store.get_call(db, "unknown")["cost_picousd"] == new_unknown
    assert store.get_call(db, "known")["cost_picousd"] == 1000 * 5_000_000 + 100 * 25_000_000
    assert store.get_call(db, "too-old")["cost_picousd"] == 999
    history = store.cost_history(db, "known")
    assert [(h["old_cost_picousd"], h["old_catalog_version"]) for h in history] == [(123, "old")]
    assert history[0]["new_catalog_version"] == catalog.version
    assert store.cost_history(db, "unknown")[0]["old_cost_picousd"] is None

    result = runner.invoke(app, ["reprice", "--since", "7d"])
    assert "0 changed" in result.output  # idempotent
