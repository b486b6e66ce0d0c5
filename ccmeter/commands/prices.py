"""``ccmeter prices``, ``prices import`` and ``reprice``: the rates in use, and applying new ones.

Imported rates are written as user overrides into ``config.toml`` (``[prices.models]``), the
same table the proxy already reads; decimal strings, so nothing is rounded on the way. See
docs/reports.md for the rules.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import typer

from ccmeter import config
from ccmeter.commands.common import FormatOption, ModelOption, ProjectOption, check_format

RATE_NAMES = ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output")
#: LiteLLM field (USD per token) -> our rate name. The first field present wins.
LITELLM_FIELDS: dict[str, tuple[str, ...]] = {
    "input": ("input_cost_per_token",),
    "output": ("output_cost_per_token",),
    "cache_write_5m": ("cache_creation_input_token_cost",),
    "cache_write_1h": ("cache_creation_input_token_cost_above_1hr",
                       "cache_creation_input_token_cost_1h",
                       "cache_creation_input_token_cost_above_1h"),
    "cache_read": ("cache_read_input_token_cost",),
}
#: Used only for a model new to ccmeter whose file entry lacks a cache rate; listed as
#: "derived" in the import's output. (Anthropic's standard multipliers of the input rate.)
DERIVED_MULTIPLIERS = {"cache_write_5m": Decimal("1.25"), "cache_write_1h": Decimal(2),
                       "cache_read": Decimal("0.1")}
_BEDROCK_PREFIXES = ("us.", "eu.", "apac.", "au.", "jp.", "global.")

prices_app = typer.Typer(no_args_is_help=False)  # help: the callback's docstring


def register(app: typer.Typer) -> None:
    app.add_typer(prices_app, name="prices")
    app.command()(reprice)


# --- prices --------------------------------------------------------------------------------


def _plain(value: Decimal) -> str:
    """A Decimal without exponent or trailing zeros: ``3``, ``0.3``, ``18.75``."""
    return format(value.normalize(), "f")


def _override_table(cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    prices = cfg.get("prices") or {}
    models = prices.get("models") if isinstance(prices, Mapping) else None
    return models if isinstance(models, Mapping) else {}


@prices_app.callback(invoke_without_command=True)
def prices(
    ctx: typer.Context,
    fmt: FormatOption = "table",
) -> None:
    """List the catalog in use: its version, each model's rates (USD per million tokens)
    in force today, and which come from your overrides in config.toml [prices].

    Examples:
      ccmeter prices
      ccmeter prices --format json
      ccmeter prices import model_prices_and_context_window.json
    """
    if ctx.invoked_subcommand is not None:
        return
    from ccmeter import render, reports
    from ccmeter.pricing import Catalog

    fmt = check_format(fmt)
    paths = config.paths()
    cfg = config.load_config(paths)
    try:
        catalog = reports.current_catalog(cfg)
    except ValueError as exc:
        raise config.CCMeterError(f"[prices] in {paths.config_file}: {exc}") from None
    bundled = Catalog.bundled()
    overridden = {}
    for name in _override_table(cfg):
        key = bundled.resolve(str(name))
        overridden[key or str(name).strip().lower()] = "override" if key else "added"
    rows = []
    for model in catalog.models():
        rates = model.rates
        rows.append({
            "model": model.id,
            "name": model.name,
            "aliases": ", ".join(model.aliases),
            "since": model.since.isoformat() if model.since.year > 1 else "",
            **{name: _plain(getattr(rates, name)) for name in RATE_NAMES},
            "long_context": (f">{model.long_context.threshold_tokens:,}: in "
                             f"{_plain(model.long_context.rates.input)} / out "
                             f"{_plain(model.long_context.rates.output)}"
                             if model.long_context else ""),
            "fast": (f"in {_plain(model.fast.input)} / out {_plain(model.fast.output)}"
                     if model.fast else ""),
            "source": overridden.get(model.id, "catalog"),
        })
    columns = [render.Column("model", "Model"), render.Column("since", "Since"),
               render.Column("input", "Input"), render.Column("cache_write_5m", "Write 5m"),
               render.Column("cache_write_1h", "Write 1h"),
               render.Column("cache_read", "Read"), render.Column("output", "Output"),
               render.Column("long_context", "Long context"), render.Column("fast", "Fast"),
               render.Column("source", "Source")]
    if fmt == "table":
        columns, rows = _table_view(rows, bool(overridden))
    meta = {
        "catalog_version": catalog.version,
        "bundled_version": bundled.version,
        "unit": "USD per million tokens",
        "discount_percent": _plain(catalog.discount_percent),
        "overrides": len(overridden),
        "config_file": str(paths.config_file),
    }
    if fmt == "table":
        caption = {"unit": "USD per million tokens", "catalog": catalog.version,
                   "overrides": (f"{len(overridden)} in {paths.config_file}"
                                 if paths.config_file.exists() else
                                 f"none ({paths.config_file} does not exist yet)")}
        if catalog.discount_percent:
            caption["discount"] = f"{_plain(catalog.discount_percent)}%"
        render.emit(rows, columns, fmt, title=f"Prices ({catalog.version})", meta=caption)
    else:
        columns[1:1] = [render.Column("name", "Name"), render.Column("aliases", "Aliases")]
        render.emit(rows, columns, fmt, title="Prices", meta=meta)


def _table_view(rows: list[dict[str, Any]], overrides: bool
                ) -> tuple[list[Any], list[dict[str, Any]]]:
    """The prices table for people: whole model ids and the five rates first (on a narrow
    terminal the dates, long-context and fast rates go); every rate shows one number
    of decimals, as many as the most precise rate needs (at least two), so points align."""
    from ccmeter import render

    shown = [dict(row) for row in rows]
    places = max([2, *(-int(Decimal(row[name]).as_tuple().exponent)
                       for row in rows for name in RATE_NAMES)])
    for row in shown:
        for name in RATE_NAMES:
            row[name] = f"{Decimal(row[name]):.{places}f}"
    columns = [render.Column("model", "Model", whole=True),
               render.Column("input", "Input", "number", keep=True),
               render.Column("cache_write_5m", "Write 5m", "number", keep=True),
               render.Column("cache_write_1h", "Write 1h", "number", drop=2),
               render.Column("cache_read", "Read", "number", keep=True),
               render.Column("output", "Output", "number", keep=True),
               render.Column("since", "Since", drop=3),
               render.Column("long_context", "Long context", drop=5),
               render.Column("fast", "Fast", drop=4)]
    if overrides:  # otherwise every row says "catalog"
        columns.append(render.Column("source", "Source", drop=1))
    return columns, shown


# --- prices import -------------------------------------------------------------------------


def canonical_id(name: str) -> str:
    """The plain Anthropic id a LiteLLM key names: provider paths, Bedrock and Vertex forms
    reduced (``bedrock/us.anthropic.claude-x-v1:0`` -> ``claude-x``)."""
    import re

    text = name.strip().lower().rsplit("/", 1)[-1]
    for prefix in _BEDROCK_PREFIXES:
        if text.startswith(prefix + "anthropic."):
            text = text[len(prefix):]
    if text.startswith("anthropic."):
        text = re.sub(r"-v\d+(?::\d+)?$", "", text[len("anthropic."):])
    text = re.sub(r"@(\d{8})$", r"-\1", text)
    return re.sub(r"\[[^\]]*\]$", "", text)


def _per_mtok(value: Any, where: str) -> Decimal | None:
    """USD per token (a JSON number) -> exact USD per million tokens, via its repr."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    try:
        number = Decimal(str(value)) * 10**6
    except InvalidOperation:
        raise ValueError(f"{where}: {value!r} is not a number") from None
    if not number.is_finite() or number < 0:
        raise ValueError(f"{where}: {value!r} must be a finite number >= 0")
    return Decimal(_plain(number))


@dataclass
class Imported:
    """One Claude model read from a LiteLLM file."""

    model: str
    source_key: str
    rates: dict[str, Decimal]
    derived: list[str] = field(default_factory=list)


def read_litellm(data: Any) -> tuple[list[Imported], list[str]]:
    """Claude models from LiteLLM's ``model_prices_and_context_window.json`` and warnings.

    Keeps entries with ``litellm_provider == "anthropic"`` or a key containing ``claude``;
    several keys naming one model (Bedrock, Vertex, provider paths) collapse to one, the
    ``anthropic`` provider's entry winning.
    """
    if not isinstance(data, Mapping):
        raise ValueError("expected a JSON object of model name -> prices (LiteLLM's format)")
    found: dict[str, tuple[int, Imported]] = {}
    warnings: list[str] = []
    for key, entry in data.items():
        if not isinstance(entry, Mapping) or key == "sample_spec":
            continue
        provider = str(entry.get("litellm_provider") or "")
        if provider != "anthropic" and "claude" not in key.lower():
            continue
        rates: dict[str, Decimal] = {}
        try:
            for rate, names in LITELLM_FIELDS.items():
                for name in names:
                    value = _per_mtok(entry.get(name), f"{key}.{name}")
                    if value is not None:
                        rates[rate] = value
                        break
        except ValueError as exc:
            warnings.append(f"skipped {key}: {exc}")
            continue
        if "input" not in rates or "output" not in rates:
            warnings.append(f"skipped {key}: no input/output price")
            continue
        model = canonical_id(key)
        rank = 0 if provider == "anthropic" else 1
        if model not in found or rank < found[model][0]:
            found[model] = (rank, Imported(model, key, rates))
    return [item for _, item in sorted(found.values(), key=lambda pair: pair[1].model)], warnings


def import_prices(file: Path, cfg: dict[str, Any], *, replace_known: bool) -> dict[str, Any]:
    """Merge a LiteLLM file into ``cfg['prices']['models']``; returns what changed.

    Models the catalog does not know are added (missing cache rates derived, and listed);
    for known models only differing rates matter, and they replace the catalog's only with
    ``replace_known``. Raises CCMeterError for an unreadable file.
    """
    from ccmeter import reports
    from ccmeter.pricing import Catalog

    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise config.CCMeterError(f"cannot read {file}: {exc.strerror}") from None
    except ValueError as exc:
        raise config.CCMeterError(f"{file} is not JSON: {exc}") from None
    try:
        imported, warnings = read_litellm(data)
        current = reports.current_catalog(cfg)
    except ValueError as exc:
        raise config.CCMeterError(f"{file}: {exc}") from None
    if not imported:
        raise config.CCMeterError(f"{file} has no Claude models (is it LiteLLM's "
                                  "model_prices_and_context_window.json?)")
    bundled = Catalog.bundled()
    overrides = dict(_override_table(cfg))
    changes: list[dict[str, Any]] = []
    today = datetime.now(UTC)
    for item in imported:
        key = current.resolve(item.model)
        if key is None:
            for rate, multiplier in DERIVED_MULTIPLIERS.items():
                if rate not in item.rates:
                    item.rates[rate] = Decimal(_plain(item.rates["input"] * multiplier))
                    item.derived.append(rate)
            action, old = "added", {}
        else:
            row = next(r for r in current.models(today) if r.id == key)
            old = {name: getattr(row.rates, name) for name in RATE_NAMES}
            differing = {n: v for n, v in item.rates.items() if old[n] != v}
            if not differing:
                action = "unchanged"
            elif replace_known or bundled.resolve(item.model) is None:
                action = "updated"
            else:
                action = "differs (kept)"
        if action in ("added", "updated"):
            name = key if key is not None and bundled.resolve(item.model) is not None \
                else item.model
            overrides[name] = {rate: _plain(value) for rate, value in item.rates.items()}
        changes.append({
            "model": item.model,
            "source_key": item.source_key,
            "action": action,
            **{rate: _plain(item.rates[rate]) if rate in item.rates else "" for rate in RATE_NAMES},
            **{f"old_{rate}": _plain(old[rate]) if rate in old else "" for rate in RATE_NAMES},
            "derived": ", ".join(item.derived),
        })
    prices = dict(cfg.get("prices") or {})
    prices["models"] = overrides
    new_cfg = {**cfg, "prices": prices}
    try:
        reports.current_catalog(new_cfg)
    except ValueError as exc:
        raise config.CCMeterError(f"the imported prices do not form a valid catalog: {exc}") \
            from None
    return {"config": new_cfg, "changes": changes, "warnings": warnings}


@prices_app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="LiteLLM's model_prices_and_context_window.json "
                                         "(or a file in the same format).")],
    replace_known: Annotated[bool, typer.Option(
        "--replace-known", help="Also replace the bundled catalog's rates for models it "
        "already knows where the file differs (default: keep ccmeter's, list differences).")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n",
                       help="Show what would change; write nothing.")] = False,
    fmt: FormatOption = "table",
) -> None:
    """Import Claude prices from LiteLLM's price file as overrides in config.toml.

    Per-token USD figures become exact per-million-token decimals. Models ccmeter does not
    know are added; known ones keep ccmeter's rates unless --replace-known. New rates apply
    to calls metered after the proxy restarts; `ccmeter reprice` applies them to stored calls.

    Examples:
      ccmeter prices import model_prices_and_context_window.json --dry-run
      ccmeter prices import ~/Downloads/prices.json --replace-known
    """
    from ccmeter import render

    fmt = check_format(fmt)
    paths = config.paths()
    cfg = config.load_config(paths)
    result = import_prices(file, cfg, replace_known=replace_known)
    changes = result["changes"]
    written = any(c["action"] in ("added", "updated") for c in changes)
    if written and not dry_run:
        config.save_config(result["config"], paths)
    counts: dict[str, int] = {}
    for change in changes:
        counts[change["action"]] = counts.get(change["action"], 0) + 1
    columns = [render.Column("model", "Model"), render.Column("action", "Change")]
    columns += [render.Column(r, h) for r, h in (
        ("input", "Input"), ("cache_write_5m", "Write 5m"), ("cache_write_1h", "Write 1h"),
        ("cache_read", "Read"), ("output", "Output"))]
    if fmt != "table":
        columns += [render.Column(f"old_{r}", f"Old {r}") for r in RATE_NAMES]
        columns += [render.Column("source_key", "Source key"), render.Column("derived",
                                                                              "Derived")]
        meta = {"file": str(file), "dry_run": dry_run, "written": written and not dry_run,
                "config_file": str(paths.config_file), "counts": counts,
                "warnings": result["warnings"]}
        render.emit(changes, columns, fmt, title="Imported prices", meta=meta)
        return
    columns.append(render.Column("derived", "Derived"))
    shown = [c for c in changes if c["action"] != "unchanged"]
    if shown:
        render.emit(shown, columns, fmt, title="Price changes (USD per million tokens)")
    summary = ", ".join(f"{n} {a}" for a, n in sorted(counts.items()))
    where = ("nothing written (--dry-run)" if dry_run else
             f"written to [prices.models] in {paths.config_file}" if written else
             "nothing to write")
    typer.echo(f"{len(changes)} Claude models in {file.name}: {summary}; {where}.")
    if counts.get("differs (kept)"):
        typer.echo("Models that differ from ccmeter's catalog kept its rates; "
                   "--replace-known applies the file's.")
    if written and not dry_run:
        typer.echo("Restart running proxies to meter with them; apply them to stored calls "
                   "with: ccmeter reprice --since 30d")
    for warning in result["warnings"][:10]:
        typer.echo(f"note: {warning}", err=True)


# --- reprice -------------------------------------------------------------------------------


def usage_from_row(row: Mapping[str, Any]) -> Any:
    """Rebuild the ``Usage`` a stored call was priced from (advisor hops from hops_json)."""
    from ccmeter.usage import Hop, TokenCounts, Usage

    hops = []
    if row.get("hops_json"):
        for hop in json.loads(row["hops_json"]):
            tokens = hop.get("tokens") or {}
            hops.append(Hop(kind=hop["kind"], model=hop["model"], tokens=TokenCounts(
                **{k: int(tokens.get(k) or 0) for k in (
                    "input_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens",
                    "cache_read_tokens", "output_tokens")})))
    return Usage(
        input_tokens=int(row["input_tokens"] or 0),
        cache_write_5m_tokens=int(row["cache_write_5m_tokens"] or 0),
        cache_write_1h_tokens=int(row["cache_write_1h_tokens"] or 0),
        cache_read_tokens=int(row["cache_read_tokens"] or 0),
        output_tokens=int(row["output_tokens"] or 0),
        thinking_tokens=row.get("thinking_tokens"),
        web_search_requests=int(row.get("web_search_requests") or 0),
        web_fetch_requests=int(row.get("web_fetch_requests") or 0),
        service_tier=row.get("service_tier"),
        inference_geo=row.get("inference_geo"),
        speed=row.get("speed"),
        hops=tuple(hops),
    )


def reprice_rows(db: Any, catalog: Any, *, since: float, until: float,
                 project: str | None = None, model: str | None = None, dry_run: bool = False,
                 batch: int = 5000) -> dict[str, Any]:
    """Recompute stored costs with ``catalog``; rows whose cost or catalog version changes are
    rewritten and their old figures kept in ``cost_history``. Returns a summary."""
    from ccmeter import store

    summary: dict[str, Any] = {"examined": 0, "changed": 0, "newly_priced": 0,
                               "now_unpriced": 0, "old_cost": 0, "new_cost": 0,
                               "by_model": {}}
    after_ts, after_uid = float("-inf"), ""
    params = {"since": since, "until": until, "project": project,
              "model": model.lower() if model else None, "limit": batch}
    while True:
        rows = store.query(db, store.REPRICE_ROWS_SQL,
                           {**params, "after_ts": after_ts, "after_uid": after_uid})
        if not rows:
            break
        changes = []
        for row in rows:
            summary["examined"] += 1
            name = row["model"] or row["requested_model"]
            try:
                price = catalog.price(name, usage_from_row(row),
                                      datetime.fromtimestamp(row["started_ts"], UTC))
            except (ValueError, KeyError, TypeError) as exc:
                sys.stderr.write(f"ccmeter: cannot reprice {row['call_uid']}: {exc}\n")
                continue
            new = price.cost_picousd
            old = row["cost_picousd"]
            if new == old and price.catalog_version == row["catalog_version"]:
                continue
            summary["changed"] += 1
            summary["newly_priced"] += old is None and new is not None
            summary["now_unpriced"] += old is not None and new is None
            summary["old_cost"] += old or 0
            summary["new_cost"] += new or 0
            entry = summary["by_model"].setdefault(name or "?", {"calls": 0, "old": 0, "new": 0})
            entry["calls"] += 1
            entry["old"] += old or 0
            entry["new"] += new or 0
            changes.append({
                "call_uid": row["call_uid"], "old_cost_picousd": old,
                "old_catalog_version": row["catalog_version"],
                "old_pricing_note": row["pricing_note"], "cost_picousd": new,
                "catalog_version": price.catalog_version, "pricing_note": price.note,
            })
        if changes and not dry_run:
            store.reprice_calls(db, changes)
        after_ts, after_uid = rows[-1]["started_ts"], rows[-1]["call_uid"]
    return summary


def reprice(
    since: Annotated[str | None, typer.Option(
        "--since", "-s", help="Reprice calls from this time on (a date, 7d, 2w, 3mo, ...).")
    ] = None,
    until: Annotated[str | None, typer.Option(
        "--until", "-u", help="Only calls before this time (a bare date includes that day).")
    ] = None,
    all_calls: Annotated[bool, typer.Option("--all", help="Reprice every stored call.")] = False,
    project: ProjectOption = None,
    model: ModelOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n",
                       help="Show what would change; write nothing.")] = False,
    fmt: FormatOption = "table",
) -> None:
    """Recompute stored costs with the current catalog (bundled + config.toml [prices]).

    Every changed call keeps its old cost and catalog version in the cost_history table.

    Examples:
      ccmeter reprice --since 30d --dry-run
      ccmeter reprice --since 2026-11-01 --model opus
      ccmeter reprice --all
    """
    from ccmeter import render
    from ccmeter.commands.common import load_catalog, open_db, parse_time

    fmt = check_format(fmt)
    if since is None and not all_calls:
        raise config.CCMeterError("say which calls: --since 30d (or a date), or --all")
    now = time.time()
    start = parse_time(since, now=now) if since else None
    end = parse_time(until, end=True, now=now) if until else None
    catalog = load_catalog(config.load_config())
    db = open_db()
    try:
        summary = reprice_rows(db, catalog, since=float("-inf") if start is None else start,
                               until=float("inf") if end is None else end, project=project,
                               model=model, dry_run=dry_run)
    finally:
        db.conn.close()
    rows = [{"model": name, "calls": v["calls"], "old_cost": v["old"], "new_cost": v["new"],
             "difference": v["new"] - v["old"]}
            for name, v in sorted(summary["by_model"].items())]
    columns = [render.Column("model", "Model"), render.Column("calls", "Changed calls", "int"),
               render.Column("old_cost", "Old cost", "usd"),
               render.Column("new_cost", "New cost", "usd"),
               render.Column("difference", "Difference", "usd")]
    totals = {"calls": summary["changed"], "old_cost": summary["old_cost"],
              "new_cost": summary["new_cost"],
              "difference": summary["new_cost"] - summary["old_cost"]}
    if fmt != "table":
        meta = {"catalog_version": catalog.version, "dry_run": dry_run,
                "since": None if since is None else render.iso_datetime(start),
                "examined": summary["examined"], "changed": summary["changed"],
                "newly_priced": summary["newly_priced"], "now_unpriced": summary["now_unpriced"]}
        render.emit(rows, columns, fmt, title="Repriced calls", totals=totals, meta=meta)
        return
    if rows:
        render.emit(rows, columns, fmt, title=f"Repriced with catalog {catalog.version}",
                    totals=totals)
    verb = "would change" if dry_run else "changed"
    examined = render.plural(summary["examined"], "call")
    typer.echo(f"{examined} examined, {summary['changed']:,} {verb} "
               f"({summary['newly_priced']:,} newly priced, {summary['now_unpriced']:,} now "
               f"unpriced); old figures kept in the cost_history table"
               + (" (dry run: nothing written)" if dry_run else "") + ".")
