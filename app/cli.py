"""What the `tokens` and `db` commands (app/command.py) do: the token store the settings name (the tokens file, or
the PostgreSQL database of `LXDGW_DATABASE_URL`), and copying the embedded job database into PostgreSQL."""

from __future__ import annotations

import sys
from pathlib import Path

from app.settings import Settings, load_settings
from app.store.database import shared_state
from app.store.errors import StoreUnavailable
from app.store.tokens import Tokens, TokenStore


def token_store(settings: Settings) -> Tokens:
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


def _secret() -> bytes | None:
    try:
        return load_settings().remote_key_secret()
    except (SystemExit, OSError):
        return None


def copy_database(source: Path, target: str, *, tokens_file: Path | None = None, data_dir: Path | None = None) -> int:
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


