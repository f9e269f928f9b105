"""`lxd-gateway` (and `python -m app`, the same): `serve`, `tokens create|list|revoke`, `db copy`, `--version`,
`--help`. Only `serve` starts the gateway; every other command does its one thing and exits.

Exit codes: 0 done; 1 the command failed (a token that exists or does not, the database unreachable, a copy
refused: the reason is printed); 2 a usage error or invalid settings; 3 the gateway could not start serving.

Built on click (already there through uvicorn); rich draws the tokens table on a terminal and is imported by that
command alone, never by the server.
"""

from __future__ import annotations

import datetime as dt
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import click

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


def version() -> str:
    try:
        return metadata.version("lxd-gateway")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0.0.0+unknown"


@click.group(context_settings=CONTEXT)
@click.version_option(version(), "-V", "--version", prog_name="lxd-gateway", message="%(prog)s %(version)s")
def cli() -> None:
    """lxd-gateway: a token-scoped REST gateway in front of LXD and Incus.

    Settings come from LXDGW_* environment variables (and a .env file); see the README's settings table.
    The client commands (launch, exec, jobs watch...) come with the client: `pip install ./client`, then
    `lxd-gateway-client --help`.
    """


@cli.command(context_settings=CONTEXT)
def serve() -> None:
    """Serve the API on LXDGW_BIND until SIGTERM or Ctrl-C.

    WEB_CONCURRENCY=N starts N worker processes (PostgreSQL job database only)."""
    from app.serving import serve_main

    sys.exit(serve_main())


# -- tokens ------------------------------------------------------------------------------------------------------


def _settings() -> Any:
    from app.settings import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None


def _tokens(settings: Any) -> Any:
    from app.cli import token_store
    from app.store.errors import StoreUnavailable

    try:
        return token_store(settings)
    except StoreUnavailable as exc:
        raise click.ClickException(f"cannot reach the database: {exc.reason}") from None


def _rules(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> list[str] | None:
    from app.tokens.policy import is_rule

    for value in values:
        if not is_rule(value):
            raise click.BadParameter(f"unknown policy rule {value!r}")
    return list(values) or None


def _when(_ctx: click.Context, _param: click.Parameter, value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time") from None


@cli.group(context_settings=CONTEXT)
def tokens() -> None:
    """Manage API tokens where the settings keep them (the tokens file, or the PostgreSQL database of
    LXDGW_DATABASE_URL), also while the gateway runs."""


SCOPES = ("read", "write", "admin")


@tokens.command("create", context_settings=CONTEXT)
@click.argument("name")
@click.option("--scope", "scopes", multiple=True, required=True, type=click.Choice(SCOPES),
              help="read, write or admin (repeatable)")
@click.option("--remote", "remotes", multiple=True, help="limit to this remote (repeatable)")
@click.option("--project", "projects", multiple=True, help="limit to this project (repeatable)")
@click.option("--expires-at", callback=_when, help="ISO 8601 time after which the token is refused")
@click.option("--allow", multiple=True, callback=_rules, metavar="RULE",
              help="a policy rule this token may use (repeatable; see the README's Security)")
def tokens_create(name: str, scopes: tuple[str, ...], remotes: tuple[str, ...], projects: tuple[str, ...],
                  expires_at: dt.datetime | None, allow: list[str] | None) -> None:
    """Create a token and print its secret, once, on standard output."""
    from app.store.errors import StoreUnavailable
    from app.store.tokens import Scope, TokenExists

    store = _tokens(_settings())
    try:
        record, secret = store.create(name, [Scope(s) for s in scopes], remotes=list(remotes) or None,
                                      projects=list(projects) or None, expires_at=expires_at, allow=allow)
    except TokenExists:
        raise click.ClickException(f"a token named {name!r} exists") from None
    except StoreUnavailable as exc:
        raise click.ClickException(f"cannot reach the database: {exc.reason}") from None
    click.echo(secret)
    click.echo(f"token {record.name!r} created with scopes {', '.join(record.scopes)}; the secret above is not "
               "shown again", err=True)


@tokens.command("list", context_settings=CONTEXT)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default=None,
              help="a table (the default on a terminal) or one JSON object a line (the default otherwise)")
def tokens_list(output: str | None) -> None:
    """List the tokens (never their secrets)."""
    import json

    records = _tokens(_settings()).list()
    rows = [r.model_dump(mode="json", exclude={"secret_sha256"}) for r in records]
    if (output or ("table" if sys.stdout.isatty() else "json")) == "json":
        for row in rows:
            click.echo(json.dumps(row))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "scopes", "remotes", "projects", "expires", "rules")
    for row in rows:
        table.add_row(row["name"], ", ".join(row.get("scopes") or []), ", ".join(row.get("remotes") or []) or "all",
                      ", ".join(row.get("projects") or []) or "all", str(row.get("expires_at") or "never"),
                      ", ".join(row.get("allow") or []))
    Console().print(table)


@tokens.command("revoke", context_settings=CONTEXT)
@click.argument("name")
def tokens_revoke(name: str) -> None:
    """Revoke a token: refused at once, its open streams and sessions closed."""
    from app.store.errors import StoreUnavailable
    from app.store.tokens import TokenNotFound

    store = _tokens(_settings())
    try:
        store.revoke(name)
    except TokenNotFound:
        raise click.ClickException(f"no token named {name!r}") from None
    except StoreUnavailable as exc:
        raise click.ClickException(f"cannot reach the database: {exc.reason}") from None
    click.echo(f"token {name!r} revoked", err=True)


# -- db ----------------------------------------------------------------------------------------------------------


@cli.group(context_settings=CONTEXT)
def db() -> None:
    """The job database."""


@db.command("copy", context_settings=CONTEXT)
@click.option("--from", "source", metavar="sqlite:///PATH",
              help="the SQLite job database (default: <LXDGW_DATA_DIR>/jobs.sqlite3)")
@click.option("--to", "target", metavar="postgresql://...",
              help="the PostgreSQL database (default: LXDGW_DATABASE_URL when it names one)")
@click.option("--tokens-file", type=click.Path(path_type=Path), metavar="PATH",
              help="the tokens file to copy (default: tokens.json next to the SQLite file)")
@click.option("--data-dir", type=click.Path(path_type=Path), metavar="PATH",
              help="the data directory whose remotes added at run time are copied (default: the SQLite file's "
                   "directory); their private keys are encrypted with LXDGW_SECRET_KEY")
def db_copy(source: str | None, target: str | None, tokens_file: Path | None, data_dir: Path | None) -> None:
    """Copy an SQLite job database into an empty PostgreSQL one: jobs, idempotency keys, audit, tokens and the
    remotes added at run time. Stop the gateway that uses the SQLite file first."""
    from app.cli import copy_database

    if source is None or target is None:
        settings = _settings()
        kind, where = settings.job_database
        if source is None:
            source = f"sqlite:///{settings.data_dir / 'jobs.sqlite3'}"
        if target is None:
            if kind != "postgresql":
                raise click.UsageError("--to is needed (LXDGW_DATABASE_URL names no PostgreSQL database)")
            target = where
    if not source.startswith("sqlite:///") or len(source) == len("sqlite:///"):
        raise click.UsageError("--from must be sqlite:///PATH")
    if not target.startswith(("postgresql://", "postgres://")):
        raise click.UsageError("--to must be postgresql://...")
    sys.exit(copy_database(Path(source[len("sqlite:///"):]), target, tokens_file=tokens_file, data_dir=data_dir))


def main(argv: list[str] | None = None, prog_name: str = "lxd-gateway") -> int:
    """The command line; returns its exit code. (`serve` leaves out what the server never uses, app/footprint.py,
    before it imports the server; the other commands may use it.)"""
    try:
        cli.main(args=argv, prog_name=prog_name, standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def entry() -> None:
    """The `lxd-gateway` script."""
    raise SystemExit(main())
