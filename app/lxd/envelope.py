"""LXD response envelopes, decoded by their `type` (sync, async, error), never by the HTTP status alone.

LXD's long-poll handlers (`/wait`) write HTTP 200 before the outcome is known and put a failure in an `error`
body under that 200; `decode` therefore raises on every `error` body, whatever the status line says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from app.lxd.errors import LXDError, error_for


@dataclass
class Envelope:
    """A decoded `sync` or `async` answer."""

    type: str
    status_code: int
    metadata: Any
    operation: str = ""
    etag: str | None = None
    http_status: int = 200
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def is_async(self) -> bool:
        return self.type == "async"

    @property
    def operation_id(self) -> str:
        return self.operation.rstrip("/").rsplit("/", 1)[-1] if self.operation else ""


def decode(response: httpx.Response, method: str = "", path: str = "") -> Envelope:
    """The envelope of a fully read response; raises the `LXDError` subclass for an `error` body."""
    method = method or response.request.method
    path = path or response.request.url.path
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "type" not in body:
        if response.status_code >= 400:
            raise error_for(response.status_code, response.text.strip() or response.reason_phrase,
                            method=method, path=path)
        raise LXDError(f"unexpected non-envelope answer (HTTP {response.status_code})",
                       status=response.status_code, method=method, path=path)
    kind = body.get("type")
    if kind == "error":
        code = int(body.get("error_code") or 0) or (response.status_code if response.status_code >= 400 else 500)
        raise error_for(code, str(body.get("error") or "unknown error"), method=method, path=path)
    if kind not in ("sync", "async"):
        raise LXDError(f"unknown envelope type {kind!r}", status=response.status_code, method=method, path=path)
    etag = response.headers.get("etag")
    return Envelope(type=kind, status_code=int(body.get("status_code") or 0), metadata=body.get("metadata"),
                    operation=str(body.get("operation") or ""), etag=etag.strip('"') if etag else None,
                    http_status=response.status_code, headers=dict(response.headers))
