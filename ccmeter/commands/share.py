"""``ccmeter push`` and ``ccmeter team report``: the team share (docs/team-share.md)."""

from __future__ import annotations

import contextlib
import os
from typing import Annotated, Any

import typer

from ccmeter import config, periods, render, share, share_identity, team
from ccmeter.commands.common import FormatOption, open_db

team_app = typer.Typer(
    name="team",
    help="The whole team's spend from the share teammates `ccmeter push` to (a folder, or "
    "s3://, gs://, az://), and team and group budgets each laptop enforces."
    "\n\nExamples:\n\n  ccmeter team set --share s3://acme-ai-spend/ccmeter --team platform "
    "--group backend\n\n  ccmeter team report --by group --by user --since 30d",
    no_args_is_help=True,
)

UserOption = Annotated[
    str | None,
    typer.Option("--user", help="Name to push as (default: $CCMETER_USER, else \\[share] user "
                 "in the config, else the name this machine publishes as, else login@host)."),
]
SinceOption = Annotated[
    str | None,
    typer.Option("--since", help="First day, as for `ccmeter report`: 2026-11-01, 7d, 2w, "
                 "3mo, today, week, month; or a month, 2026-11."),
]


def register(app: typer.Typer) -> None:
    app.command()(push)
    app.add_typer(team_app)


def _either(yes: bool, no: bool, flag: str) -> bool | None:
    """``--FLAG`` -> True, ``--no-FLAG`` -> False, neither -> None (the config decides)."""
    if yes and no:
        raise config.CCMeterError(f"give --{flag} or --no-{flag}, not both")
    return True if yes else (False if no else None)


def push(
    to: Annotated[str | None, typer.Option("--to", metavar="DIR|URL", help="The share: a "
                  "mounted team folder, or s3://BUCKET/PREFIX, gs://…, az://… (needs "
                  "ccmeter[cloud]); default: \\[share] path in the config.")] = None,
    user: UserOption = None,
    rename_to: Annotated[str | None, typer.Option(
        "--rename-to", metavar="NAME", help="Publish this machine's summaries under NAME from "
        "now on, moving its files from the name it published under (a push never does this "
        "on its own).")] = None,
    # four plain flags, not --x/--no-x pairs: a pair takes a help column of its own and
    # squeezed every description to ~23 characters at 80 columns
    anonymize: Annotated[bool, typer.Option("--anonymize",
                         help="Publish a salted hash instead of the user name (needs "
                         "\\[share] salt in the config).")] = False,
    no_anonymize: Annotated[bool, typer.Option("--no-anonymize", help="Publish the user "
                            "name even if the config says \\[share] anonymize = true.")] = False,
    hash_projects: Annotated[bool, typer.Option("--hash-projects",
                             help="Publish salted hashes of project names (names mapped "
                             "under \\[share.project_names] are kept as mapped).")] = False,
    no_hash_projects: Annotated[bool, typer.Option("--no-hash-projects", help="Publish "
                                "project names even if the config says \\[share] "
                                "hash_projects = true.")] = False,
    since: Annotated[str | None, typer.Option("--since", help="Only rewrite the months from "
                     "this date's month on (default: every month in the database).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the rows that would be "
                       "pushed, as JSON Lines, and write nothing.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Say what was written "
                       "(quiet on success otherwise, for cron).")] = False,
) -> None:
    """Push this user's daily spend summaries to the team share.

    One file per month for this machine, rewritten whole: pushing twice changes nothing.
    Only counts, tokens and costs per day x project x model leave the laptop.
    Quiet on success: safe to run from cron, launchd or a systemd timer.

    Examples:
      ccmeter push --to /mnt/team/ccmeter
      ccmeter push --anonymize --hash-projects -v
      ccmeter push --rename-to alice
    """
    paths = config.paths()
    if rename_to is not None and user is not None and rename_to != user:
        raise config.CCMeterError("give --user or --rename-to, not both")
    settings = share_identity.resolve_settings(
        config.load_config(paths), os.environ, share=to, user=rename_to or user,
        anonymize=_either(anonymize, no_anonymize, "anonymize"),
        hash_projects=_either(hash_projects, no_hash_projects, "hash-projects"),
    )
    since_day = periods.parse_day(since) if since else None
    if not paths.db_file.exists():
        if verbose or dry_run:
            typer.echo(f"nothing to push: no database yet at {paths.db_file}", err=True)
        return
    db = open_db()
    try:
        result, plan = share.push(db, paths, settings, since=since_day, dry_run=dry_run,
                                  rename=rename_to is not None)
    finally:
        db.conn.close()
    if dry_run:
        for path, rows in plan.items():
            typer.echo(f"# {path}", err=True)
            typer.echo(share.encode_rows(rows).decode("utf-8"), nl=False)
        for old_user, old_paths in result.removed.items():
            for old in old_paths:
                typer.echo(f"# would remove {old} ({old_user}'s copy from this machine: "
                           f"renamed to {result.user})", err=True)
        return
    if verbose:
        typer.echo(f"pushed {render.plural(result.rows, 'row')} as {result.user} (machine "
                   f"{result.machine}): {render.plural(len(result.written), 'file')} written, "
                   f"{len(result.unchanged)} unchanged")
        for path in result.written:
            typer.echo(f"  wrote {path}")
        for old_user, old_paths in result.removed.items():
            typer.echo(f"removed {old_user}'s copy from this machine: renamed to {result.user}")
            for old in old_paths:
                typer.echo(f"  removed {old}")


BY_HELP = (f"Group by one or two of: {', '.join(team.DIMENSIONS)} "
           "(repeat the option: --by project --by model). Default: user.")


@team_app.command("report")
def team_report(
    from_: Annotated[str | None, typer.Option("--from", metavar="DIR|URL", help="The share "
                     "to read: a folder or s3://…, gs://…, az://… (default: \\[share] path "
                     "in the config).")] = None,
    by: Annotated[list[str] | None, typer.Option("--by", "-b", help=BY_HELP)] = None,
    since: SinceOption = None,
    until: Annotated[str | None, typer.Option("--until", help="Last day, included: "
                     "2026-11-30, 2026-11 (its last day), yesterday, 7d ...")] = None,
    fmt: FormatOption = "table",
) -> None:
    """Report the team's spend from every user's pushed summaries.

    A malformed or cut-short file is skipped with a warning (on stderr) naming it.

    Examples:
      ccmeter team report --from /mnt/team/ccmeter --by user --since 30d
      ccmeter team report --by project --by model --format csv
    """
    if fmt not in render.FORMATS:
        raise config.CCMeterError(f"unknown format {fmt!r}; one of {', '.join(render.FORMATS)}")
    dims = team.check_by(by or [])
    folder = share_identity.share_folder(config.load_config(), from_)
    if folder is None:
        raise config.CCMeterError("no share folder: pass --from PATH or set [share] path in "
                                  "config.toml")
    first = periods.parse_day(since) if since else None
    last = periods.parse_day(until, end=True) if until else None
    if first and last and first > last:
        raise config.CCMeterError(f"--since {since} is after --until {until}")
    data = team.read_share(folder, since=first, until=last)
    from ccmeter.untrusted import printable

    for warning in data.warnings:  # file names are teammates' (and a file's own words)
        typer.secho(f"ccmeter: warning: {printable(warning)}", err=True,
                    fg=typer.colors.YELLOW)
    if fmt == "table" and not data.rows:  # a next step, not a table of zeros
        if not data.files and first is None and last is None:
            typer.echo(f"No spend summaries in {folder} yet. Each teammate publishes theirs "
                       f"with: ccmeter push --to {folder}")
        else:
            typer.echo(f"No spend in {folder} for this period; a wider --since may find some.")
        return
    groups = team.aggregate(data.rows, dims)
    columns = report_columns(dims, fmt)
    for group in groups:
        group["cost"] = group["cost_picousd"]
        group["cache_write_tokens"] = (group["cache_write_5m_tokens"]
                                       + group["cache_write_1h_tokens"])
    total = team.totals(groups, data.rows)
    total["cost"] = total["cost_picousd"]
    total["cache_write_tokens"] = total["cache_write_5m_tokens"] + total["cache_write_1h_tokens"]
    meta: dict[str, object] = {
        "share": str(folder),
        "since": first.isoformat() if first else None,
        "until": last.isoformat() if last else None,
    }
    if fmt == "table":
        meta["cap_hits"] = total["cap_hits"]
        if data.skipped:
            meta["skipped_files"] = len(data.skipped)
        from ccmeter.reports import missing_label

        for group in groups:  # say so rather than show an empty cell
            for dim in dims:
                if group[dim] is None:
                    group[dim] = missing_label(dim)
    else:
        meta["files"] = data.files
        meta["skipped"] = [{"file": str(p), "reason": r} for p, r in data.skipped]
    render.emit(groups, columns, fmt, title=f"Team spend by {' x '.join(dims)}",
                totals=total, meta=meta)


def report_columns(dims: list[str], fmt: str) -> list[render.Column]:
    """Every field for machines; a table narrow enough for 120 columns for people."""
    columns = [render.Column(dim, dim.capitalize(), whole=True) for dim in dims]
    if "user" not in dims and (fmt != "table" or len(dims) == 1):
        columns.append(render.Column("users", "Users", "int"))
    columns.append(render.Column("calls", "Calls", "int"))
    if fmt == "table":
        columns += [
            render.Column("input_tokens", "Input", "int"),
            render.Column("cache_write_tokens", "Cache write", "int"),
            render.Column("cache_read_tokens", "Cache read", "int"),
            render.Column("output_tokens", "Output", "int"),
            render.Column("cost", "Cost", "usd"),
            render.Column("unpriced_calls", "Unpriced", "int"),
            render.Column("blocked_calls", "Blocked", "int"),
        ]
        return columns
    columns += [render.Column(name, name.removesuffix("_tokens").replace("_", " ").capitalize(),
                              "int") for name in share.TOKEN_FIELDS]
    columns += [
        render.Column("cost", "Cost", "usd"),
        render.Column("unpriced_calls", "Unpriced calls", "int"),
        render.Column("blocked_calls", "Blocked calls", "int"),
        render.Column("cap_hits", "Cap hits", "int"),
    ]
    return columns


@team_app.command("set")
def team_set(
    share_: Annotated[str | None, typer.Option(
        "--share", metavar="DIR|URL",
        help="The team share: a folder or s3://BUCKET/PREFIX, gs://…, az://….")] = None,
    team_name: Annotated[str | None, typer.Option(
        "--team", metavar="NAME",
        help="The team this laptop's spend counts towards (its team budgets apply here).")
    ] = None,
    group: Annotated[str | None, typer.Option(
        "--group", metavar="NAME", help="Its group within the team (a department; its group "
        "budgets apply here). '' for none.")] = None,
    push_interval: Annotated[str | None, typer.Option(
        "--push-interval", metavar="D",
        help="How often a running proxy pushes this laptop's spend (default 5m).")] = None,
    refresh_interval: Annotated[str | None, typer.Option(
        "--refresh-interval", metavar="D", help="How often it reads the others' spend and "
        "the budgets (default 1m).")] = None,
) -> None:
    """Join a team: where its share is, and the team and group this laptop counts towards.

    Kept under [share] in config.toml. Running proxies then push this laptop's spend to the
    share and enforce the team's budgets (ccmeter caps set --team-monthly N) on their own.

    Example:
      ccmeter team set --share s3://acme/ccmeter --team platform --group backend
    """
    from ccmeter import teamsync

    given = {"path": share_, "team": team_name, "group": group,
             "push_interval": push_interval, "refresh_interval": refresh_interval}
    if all(v is None for v in given.values()):
        raise config.CCMeterError("nothing to set; e.g. ccmeter team set --share DIR|URL "
                                  "--team NAME --group NAME")
    paths = config.paths()
    cfg = config.load_config(paths)
    section = cfg.setdefault("share", {})
    if not isinstance(section, dict):
        raise config.CCMeterError(f"[share] in {paths.config_file} is not a table")
    for key, value in given.items():
        if value is None:
            continue
        if value == "":
            section.pop(key, None)
        else:
            section[key] = value
    sync = teamsync.SyncSettings(cfg, os.environ)  # never save what a proxy would reject
    if isinstance(sync.settings.share, str):
        from ccmeter import sharestore

        sharestore.open_share(sync.settings.share)  # a missing extra: say so now
    config.save_config(cfg, paths)
    s = sync.settings
    typer.echo(f"share {s.share or '(none)'}, team {s.team or '(none)'}, group "
               f"{s.group or '(none)'}; running proxies push every {sync.push_s:g} s and "
               f"read the team's spend every {sync.refresh_s:g} s")


@team_app.command("budgets")
def team_budgets(
    fmt: FormatOption = "table",
) -> None:
    """The team's budgets in force, the team's spend against them, and who changed them when.

    Reads the share (the budgets and every teammate's pushed spend) and adds this laptop's
    own spend from its database.

    Examples:
      ccmeter team budgets
      ccmeter team budgets --format json
    """
    import time

    from ccmeter import sharestore, store, tiers
    from ccmeter.caps import policy as capspolicy
    from ccmeter.money import cap_usd, spend_usd

    paths = config.paths()
    cfg = config.load_config(paths)
    settings = share_identity.resolve_settings(cfg, os.environ)
    if settings.share is None or settings.team is None:
        raise config.CCMeterError("no team: ccmeter team set --share DIR|URL --team NAME")
    target = sharestore.open_share(settings.share)
    now = time.time()
    view = tiers.build_view(target, team=settings.team, group=settings.group,
                            machine=share_identity.machine_id(paths), now=now)
    with contextlib.suppress(OSError):  # `ccmeter caps` shows it too, until a proxy's next
        tiers.save_view(paths.data_dir, view)
    policy = capspolicy.Policy(caps=tiers.tier_caps(view, now))
    rows: list[dict[str, Any]] = []
    db = open_db() if paths.db_file.exists() else None
    try:
        for check in capspolicy.checks_for(policy, now):
            own = (store.cap_spent(db, store.SpendWindow(check.start, None, None), now)
                   if db is not None else 0)
            status = capspolicy.status_of(check, own, policy)
            rows.append({"budget": status.label, "limit": status.limit_picousd,
                         "spent": status.spent_picousd, "mine": own,
                         "fraction": round(status.fraction, 4), "resets_at": status.resets_at})
    finally:
        if db is not None:
            db.conn.close()
    changes = tiers.read_changes(target, settings.team)
    if fmt == "json":
        import json

        typer.echo(json.dumps({"team": settings.team, "group": settings.group,
                               "share": str(settings.share), "budgets": rows,
                               "changes": [{"at": c["at"], "by": c["by"],
                                            "set": {k: None if v is None else cap_usd(v)
                                                    for k, v in c["set"].items()}}
                                           for c in changes]}, indent=1))
        return
    if not rows:
        typer.echo(f"No budgets for team {settings.team} yet; set one with: ccmeter caps set "
                   "--team-monthly N")
    for row in rows:
        typer.echo(f"{row['budget']}: {cap_usd(row['limit'])}, spent "
                   f"{spend_usd(row['spent'], row['limit'])} ({row['fraction']:.0%}; this "
                   f"laptop {spend_usd(row['mine'], row['limit'])})")
    from ccmeter.untrusted import printable

    if changes:
        typer.echo("Changes (latest last):")
    for change in changes[-10:]:  # teammates' words: shown without control characters
        what = ", ".join(f"{k} {'off' if v is None else cap_usd(v)}"
                         for k, v in change["set"].items())
        typer.echo(printable(f"  {change['at']} {change['by']}: {what}"))
