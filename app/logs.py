"""Structured JSON logs (structlog), stdlib and uvicorn records included, with the request id and job id bound
from context on every line. Secrets are redacted by key name before anything is rendered.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

SECRET_KEYS = re.compile(r"(token|secret|password|ticket|authorization|private|key_pem|trust)", re.I)
BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.I)
TOKEN_VALUE = re.compile(r"lxdgwt?_[A-Za-z0-9_-]{20,}")
QUERY_SECRET = re.compile(r"([?&](?:ticket|secret|token)=)[^&\s\"']+", re.I)


def redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in list(event.items()):
        if key != "event" and SECRET_KEYS.search(key) and value not in (None, ""):
            event[key] = "[redacted]"
        elif isinstance(value, str):
            value = QUERY_SECRET.sub(r"\1[redacted]", BEARER.sub(r"\1[redacted]", value))
            event[key] = TOKEN_VALUE.sub("[redacted]", value)
    return event


def configure_logging(level: str = "INFO", *, json: bool = True) -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        redact,
    ]
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per LXD call is noise, not a log
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True


def get_logger(name: str) -> Any:
    return structlog.stdlib.get_logger(name)
