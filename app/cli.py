"""`python -m app tokens create|list|revoke`: manage API tokens where the settings keep them (the tokens file, or
the PostgreSQL database of `LXDGW_DATABASE_URL`), also while the gateway runs. `python -m app db copy`: copy
the embedded job database into PostgreSQL."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from app.settings import Settings, load_settings
from app.store.database import shared_state
from app.store.errors import StoreUnavailable
from app.store.tokens import Scope, TokenExists, TokenNotFound, Tokens, TokenStore
from app.tokens.policy import describe_rules, is_rule


def _rule(value: str) -> str:
    if not is_rule(value):
        raise argparse.ArgumentTypeError(f"unknown policy rule {value!r}")
    return value


def tokens_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m app tokens")
    sub = parser.add_subparsers(dest="cmd", required=True)
    create = sub.add_parser("create", help="create a token and print its secret once")
    create.add_argument("name")
    create.add_argument("--scope", action="append", choices=[s.value for s in Scope], required=True)
    create.add_argument("--remote", action="append", help="limit to this remote (repeatable)")
    create.add_argument("--project", action="append", help="limit to this project (repeatable)")
    create.add_argument("--expires-at", type=dt.datetime.fromisoformat, help="ISO 8601 time")
    create.add_argument("--allow", action="append", type=_rule, metavar="RULE",
                        help="a policy rule this token may use (repeatable): " + describe_rules())
    sub.add_parser("list", help="list tokens (never their secrets)")
    revoke = sub.add_parser("revoke", help="revoke a token (effective at once)")
    revoke.add_argument("name")
    args = parser.parse_args(argv)
    settings = load_settings()
    try:
        store = _token_store(settings)
    except StoreUnavailable as exc:
        print(f"cannot reach the database: {exc.reason}", file=sys.stderr)
        return 1
    try:
        if args.cmd == "create":
            record, secret = store.create(args.name, [Scope(s) for s in args.scope], remotes=args.remote,
                                          projects=args.project, expires_at=args.expires_at, allow=args.allow)
            print(secret)
            print(f"token {record.name!r} created with scopes {', '.join(record.scopes)}; the secret above is "
                  "not shown again", file=sys.stderr)
        elif args.cmd == "list":
            for r in store.list():
                print(json.dumps(r.model_dump(mode="json", exclude={"secret_sha256"})))
        else:
            store.revoke(args.name)
            print(f"token {args.name!r} revoked", file=sys.stderr)
    except TokenExists:
        print(f"a token named {args.name!r} exists", file=sys.stderr)
        return 1
    except TokenNotFound:
        print(f"no token named {args.name!r}", file=sys.stderr)
        return 1
    except StoreUnavailable as exc:
        print(f"cannot reach the database: {exc.reason}", file=sys.stderr)
        return 1
    return 0


def _token_store(settings: Settings) -> Tokens:
    """The tokens file (SQLite), or the tokens of the PostgreSQL database (its schema brought up to date first)."""
    shared = shared_state(settings)
    if shared is None:
        return TokenStore(settings.tokens_path)
    import asyncio

    from app.store.postgres import PostgresJobStore

    async def migrate() -> None:
        store = PostgresJobStore(settings.job_database[1])
        await store.open()
        await store.close()

    asyncio.run(migrate())
    return shared.tokens


def db_main(argv: list[str]) -> int:
    """`python -m app db copy`: copy the embedded job database into PostgreSQL (jobs, idempotency keys, audit), with
    the tokens file and the remotes added at run time."""
    parser = argparse.ArgumentParser(prog="python -m app db")
    sub = parser.add_subparsers(dest="cmd", required=True)
    copy = sub.add_parser("copy", help="copy an SQLite job database into an empty PostgreSQL one (stop the gateway "
                          "using the SQLite file first)")
    copy.add_argument("--from", dest="source", metavar="sqlite:///PATH",
                      help="the SQLite job database (default: <LXDGW_DATA_DIR>/jobs.sqlite3)")
    copy.add_argument("--to", dest="target", metavar="postgresql://...",
                      help="the PostgreSQL database (default: LXDGW_DATABASE_URL when it names one)")
    copy.add_argument("--tokens-file", type=Path, metavar="PATH",
                      help="the tokens file to copy (default: tokens.json next to the SQLite file)")
    copy.add_argument("--data-dir", type=Path, metavar="PATH", help="the data directory whose remotes added at run "
                      "time are copied (default: the SQLite file's directory); their private keys are encrypted "
                      "with LXDGW_SECRET_KEY")
    args = parser.parse_args(argv)
    source, target = args.source, args.target
    if source is None or target is None:
        settings = load_settings()
        kind, where = settings.job_database
        if source is None:
            source = f"sqlite:///{settings.data_dir / 'jobs.sqlite3'}"
        if target is None:
            if kind != "postgresql":
                parser.error("--to is needed (LXDGW_DATABASE_URL names no PostgreSQL database)")
            target = where
    if not source.startswith("sqlite:///") or len(source) == len("sqlite:///"):
        parser.error("--from must be sqlite:///PATH")
    if not target.startswith(("postgresql://", "postgres://")):
        parser.error("--to must be postgresql://...")
    return _copy(Path(source[len("sqlite:///"):]), target, tokens_file=args.tokens_file, data_dir=args.data_dir)


def _secret() -> bytes | None:
    try:
        return load_settings().remote_key_secret()
    except (SystemExit, OSError):
        return None


def _copy(source: Path, target: str, *, tokens_file: Path | None = None, data_dir: Path | None = None) -> int:
    import asyncio

    from app.jobs.store import StoreLocked
    from app.store.copy import TargetNotEmpty, copy_sqlite_to_postgres
    from app.store.database import redact_url
    from app.store.pg_state import SecretKeyMissing

    shown = redact_url(target)
    try:
        copied = asyncio.run(copy_sqlite_to_postgres(source, target, tokens_file=tokens_file, data_dir=data_dir,
                                                     secret=_secret()))
    except StoreLocked:
        print(f"a gateway process uses {source}: stop it before copying its job database", file=sys.stderr)
        return 1
    except TargetNotEmpty as exc:
        print(f"{shown}: {exc}; nothing was copied", file=sys.stderr)
        return 1
    except StoreUnavailable as exc:
        print(f"cannot reach {shown}: {exc.reason}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except SecretKeyMissing as exc:
        print(f"{exc}; nothing was copied", file=sys.stderr)
        return 1
    print(f"copied {copied.jobs} jobs ({copied.outputs} with output), {copied.idempotency_keys} idempotency keys "
          f"and {copied.audit_records} audit records; {copied.tokens} tokens and {copied.remotes} remotes added "
          f"at run time; from {source} to {shown}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    commands = {"tokens": tokens_main, "db": db_main}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print("usage: python -m app.cli {tokens,db} ...", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(commands[sys.argv[1]](sys.argv[2:]))
