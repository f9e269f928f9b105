"""What every reader of `/v1/events` is never shown: operation websocket secrets and values of secret-named keys."""

from __future__ import annotations

from app.events.router import _scrub
from app.http.redact import REDACTED


def test_migration_and_exec_websocket_secrets_are_redacted() -> None:
    migration = {"id": "op1", "class": "websocket", "metadata": {"control": "c" * 64, "fs": "f" * 64,
                                                                  "criu": "r" * 64, "state": ""}}
    scrubbed = _scrub(migration)
    assert scrubbed["metadata"] == {"control": REDACTED, "fs": REDACTED, "criu": REDACTED, "state": ""}
    exec_op = {"metadata": {"fds": {"0": "a" * 64, "control": "b" * 64}, "command": ["id"]}}
    assert _scrub(exec_op)["metadata"] == {"fds": {"0": REDACTED, "control": REDACTED}, "command": ["id"]}


def test_values_of_secret_named_keys_are_redacted_at_any_depth() -> None:
    event = {"metadata": {"context": {"secret": "s", "db_password": "p", "api_token": "t", "name": "c1"},
                          "list": [{"secret": "x"}]}}
    scrubbed = _scrub(event)["metadata"]
    assert scrubbed["context"] == {"secret": REDACTED, "db_password": REDACTED, "api_token": REDACTED, "name": "c1"}
    assert scrubbed["list"] == [{"secret": REDACTED}]
