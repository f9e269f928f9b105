"""The audit trail: every mutating request and every interactive session, who made it and how it ended, in the
store and in the log.

Pure ASGI middleware: it records after the response has started (status known, job id taken from a
`Location: /v1/jobs/{id}` header), for HTTP and never for reads. Interactive websockets (exec, console) are
recorded when the session ends, with method `WEBSOCKET`: status 101 for a session that ran, else the status it
was refused with (401 or 403 before the handshake, 4000 + status in the close code after it). The remote and
project recorded are those the request resolved to (the default remote's name when none was given). Requests
refused for too many failed authentications from one address (429) are not recorded: failed authentications are
recorded up to that limit. `GET /v1/audit` (admin) lists the trail.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http.auth import require
from app.http.errors import ProblemError, problem_responses
from app.http.pagination import CursorQuery
from app.jobs.models import rfc3339, utcnow
from app.store.datadir import StorageFull
from app.store.errors import StoreUnavailable
from app.store.tokens import Scope as TokenScope

log = logging.getLogger("app.audit")
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
UNAUDITED = ("/v1/tickets",)
SESSIONS = re.compile(r"^/v1/containers/[^/]+/(exec/ws|console)$")
"""Websockets that act on a container (an interactive command, the console); the others only read."""


class AuditMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and SESSIONS.match(scope["path"]):
            await self._session(scope, receive, send)
            return
        if scope["type"] != "http" or scope["method"] not in MUTATING or scope["path"] in UNAUDITED:
            await self.app(scope, receive, send)
            return
        status = 500
        location: str | None = None

        async def capture(message: Message) -> None:
            nonlocal status, location
            if message["type"] == "http.response.start":
                status = message["status"]
                for k, v in message.get("headers", []):
                    if k.lower() == b"location":
                        location = v.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            await self._record(scope, scope["method"], status, location)

    async def _session(self, scope: Scope, receive: Receive, send: Send) -> None:
        accepted = False
        close: int | None = None

        async def capture(message: Message) -> None:
            nonlocal accepted, close
            if message["type"] == "websocket.accept":
                accepted = True
            elif message["type"] == "websocket.close" and close is None:
                close = int(message.get("code", 1000))
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            state = scope.get("state") or {}
            if close is not None and close >= 4000:
                status = close - 4000
            elif not accepted:  # refused in the handshake: no valid credential, or one without the scope
                status = 403 if state.get("principal") is not None else 401
            else:
                status = 101
            await self._record(scope, "WEBSOCKET", status, None)

    async def _record(self, scope: Scope, method: str, status: int, location: str | None) -> None:
        state = scope.get("state") or {}
        if state.get("unaudited"):
            return
        principal = state.get("principal")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        job_id = location.rsplit("/", 1)[1] if location and location.startswith("/v1/jobs/") else None
        entry: dict[str, Any] = {
            "time": rfc3339(utcnow()),
            "token": getattr(principal, "name", None),
            "remote": state.get("remote") or (query.get("remote") or [None])[0],
            "project": state.get("project") or (query.get("project") or [None])[0],
            "method": method,
            "path": scope["path"],
            "resource": scope["path"],
            "job_id": job_id,
            "status": status,
            "outcome": "accepted" if status == 202 else ("ok" if status < 400 else "refused" if status < 500
                                                          else "error"),
            "request_id": state.get("request_id"),
        }
        log.info("audit", extra={"audit": entry})
        jobs = getattr(scope.get("app"), "state", None)
        service = getattr(jobs, "jobs", None) if jobs is not None else None
        if service is not None:
            try:
                await service.store.audit_append(entry)
            except (StorageFull, StoreUnavailable) as exc:  # the request is answered: losing a row must not fail it
                log.warning("audit record could not be stored: %s", exc)
            except Exception:
                log.exception("audit record could not be stored")


class AuditEntry(BaseModel):
    time: str = Field(examples=["2026-11-28T10:00:00Z"])
    token: str | None = Field(None, description="the token's name", examples=["ci-pipeline"])
    remote: str | None = Field(None, description="the remote it acted on (null: none)", examples=["local"])
    project: str | None = Field(None, description="the project it acted on (null: none)", examples=["default"])
    method: str = Field(description="the HTTP method, or `WEBSOCKET` for an interactive session",
                        examples=["POST"])
    path: str = Field(examples=["/v1/containers"])
    resource: str | None = Field(None, examples=["/v1/containers"])
    job_id: str | None = Field(None, description="the job the request started", examples=[None])
    status: int = Field(description="the answer's status; 101 for an interactive session that ran",
                        examples=[202])
    outcome: str = Field(description="accepted (a job), ok, refused (4xx) or error (5xx)", examples=["accepted"])
    request_id: str | None = None


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_cursor: str | None = None


router = APIRouter(prefix="/v1", tags=["audit"])


@router.get("/audit", summary="Who did what: every mutating request, newest first", response_model=AuditPage,
            operation_id="audit-list", responses=problem_responses(400, 401, 403))
async def list_audit(
    request: Request,
    _: Annotated[Any, Depends(require(TokenScope.admin))],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: CursorQuery = None,
) -> AuditPage:
    before = None
    if cursor is not None:
        if not cursor.isdigit():
            raise ProblemError(400, "malformed cursor: pass back the next_cursor of a previous page",
                               slug="bad-cursor")
        before = int(cursor)
    rows = await request.app.state.jobs.store.audit_list(limit=limit + 1, before=before)
    more = len(rows) > limit
    rows = rows[:limit]
    return AuditPage(items=[AuditEntry(**{k: v for k, v in r.items() if k != "position"}) for r in rows],
                     next_cursor=str(rows[-1]["position"]) if more and rows else None)
