"""`python -m app tokens create|list|revoke`: manage API tokens in the tokens file."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from app.settings import load_settings
from app.store.tokens import Scope, TokenExists, TokenNotFound, TokenStore
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
    store = TokenStore(load_settings().tokens_path)
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
    return 0
