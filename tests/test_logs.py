"""The session-wide secret watch really catches a leaked token (and the log redaction keeps it out)."""

from __future__ import annotations

import logging

from app.logs import redact
from tests.conftest import _WATCH


def test_watch_catches_a_token_in_a_log_line() -> None:
    before = len(_WATCH.leaks)
    record = logging.LogRecord("probe", logging.INFO, __file__, 1, "token lxdgw_%s", ("A" * 43,), None)
    _WATCH.handle(record)
    assert len(_WATCH.leaks) == before + 1
    del _WATCH.leaks[before:]  # this one was planted on purpose


def test_redaction_hides_tokens_and_bearer_values() -> None:
    event = {"event": "GET /v1/jobs/1/ws?ticket=lxdgwt_xyz&x=1 with Bearer abc.def and lxdgw_" + "B" * 43,
             "trust_token": "eyJ...",
             "password": "x", "name": "fine"}
    out = redact(None, "info", dict(event))
    assert "abc.def" not in out["event"] and "lxdgw_B" not in out["event"] and "lxdgwt_xyz" not in out["event"]
    assert "&x=1" in out["event"]
    assert out["trust_token"] == "[redacted]" and out["password"] == "[redacted]" and out["name"] == "fine"
