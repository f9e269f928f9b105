"""`WS /v1/events`: LXD's events passed through as they happen.

Query: `remote`, `project` (as everywhere) and `type` (repeatable): an LXD event type (`lifecycle`, `operation`)
or a lifecycle action (`instance-started`, `instance-deleted`, ...); by default every lifecycle event. Each message is
LXD's event (`{type, timestamp, project, location, metadata}`) plus the `remote` it came from. A reader too slow to
keep up loses the oldest events (LXD's stream is never slowed down); `{type: "gap", dropped}` says how many.

An unknown project is refused (404) before any LXD stream is opened. What events carry is redacted: the websocket
secrets of operations (`fds`, and any key naming a secret or password) for every caller; an exec operation's
command line and environment for every token but the one that started it (through the gateway) and admins; the
command line of an `instance-exec` lifecycle event (which does not say who ran it) for every token but admins.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, WebSocket, WebSocketDisconnect

from app.containers.router import ensure_project
from app.containers.router_exec import WsBackend
from app.http.auth import Principal, require
from app.http.errors import ProblemError
from app.http.handlers import deny_websocket
from app.http.owners import OperationOwners
from app.http.redact import REDACTED
from app.lxd.errors import LXDError
from app.store.tokens import Scope

router = APIRouter(tags=["events"])

LXD_TYPES = {"lifecycle", "operation"}
SECRET_KEY = re.compile(r"secret|password|token", re.I)
# An operation's websocket secrets: `fds` of an exec, `control`/`fs`/`criu` of a migration (copy, move). Whoever
# holds one can join the operation's websocket on LXD, a migration's carries the container's file system.
WEBSOCKET_SECRETS = ("fds", "control", "fs", "criu")


def _scrub(value: Any) -> Any:
    """`value` without secrets: every operation websocket secret, every value of a key naming a secret."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key in WEBSOCKET_SECRETS and isinstance(item, str) and item:
                out[key] = REDACTED
            elif key == "fds" and isinstance(item, dict):
                out[key] = dict.fromkeys(item, REDACTED)
            elif SECRET_KEY.search(str(key)) and item is not None and not isinstance(item, bool):
                out[key] = REDACTED
            else:
                out[key] = _scrub(item)
        return out
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    return value


def visible_event(event: dict[str, Any], principal: Principal, remote: str,
                  owners: OperationOwners) -> dict[str, Any]:
    """What `principal` may see of an LXD event (a new dict; see the module's redaction rules)."""
    shown = dict(event)
    metadata = _scrub(event.get("metadata") or {})
    shown["metadata"] = metadata
    if principal.has(Scope.admin):
        return shown
    if event.get("type") == "operation":
        inner = metadata.get("metadata")
        started_by = owners.owner(remote, str(metadata.get("id") or ""))
        if isinstance(inner, dict) and started_by != principal.token_id:
            for key in ("command", "environment"):
                if key in inner:
                    inner[key] = REDACTED
    elif event.get("type") == "lifecycle" and metadata.get("action") == "instance-exec":
        context = metadata.get("context")
        if isinstance(context, dict) and "command" in context:
            context["command"] = REDACTED
    return shown


@router.websocket("/v1/events", name="events-ws", dependencies=[Depends(require(Scope.read))])
async def events_ws(websocket: WebSocket, b: WsBackend,
                    type: Annotated[list[str] | None, Query()] = None) -> None:
    """LXD events of the selected remote and project, filtered by `type`."""
    wanted = {t for value in (type or ["lifecycle"]) for t in value.split(",") if t}
    lxd_types = {"operation", "lifecycle"} if "operation" in wanted else {"lifecycle"}
    actions = wanted - LXD_TYPES
    try:
        await ensure_project(b)  # an unknown project is a 404 here, never an LXD stream retried for nobody
    except ProblemError as p:
        await deny_websocket(websocket, p.status, p.detail or "")
        return
    except LXDError as exc:
        await deny_websocket(websocket, 503, f"the events stream of remote {b.remote!r} is unavailable: {exc.error}")
        return
    owners: OperationOwners = websocket.app.state.owners
    await websocket.accept()
    metrics = websocket.app.state.metrics
    metrics.events_subscribers += 1
    try:
        async with b.client.events.subscribe(lxd_types, project=b.project) as sub:
            await websocket.send_text(json.dumps({"type": "subscribed", "remote": b.remote, "project": b.project,
                                                  "filter": sorted(wanted)}))
            disconnected = asyncio.ensure_future(websocket.receive())
            getter: asyncio.Future[Any] | None = None
            dropped = 0
            try:
                while True:
                    getter = asyncio.ensure_future(sub.get())
                    await asyncio.wait([getter, disconnected], return_when=asyncio.FIRST_COMPLETED)
                    if disconnected.done():
                        getter.cancel()
                        msg = disconnected.result()
                        if msg["type"] == "websocket.disconnect":
                            return
                        disconnected = asyncio.ensure_future(websocket.receive())
                        continue
                    event = getter.result()
                    if sub.dropped != dropped:
                        await websocket.send_text(json.dumps({"type": "gap", "dropped": sub.dropped - dropped}))
                        dropped = sub.dropped
                    action = str(event.metadata.get("action") or "")
                    if event.type in wanted or (event.type == "lifecycle" and action in actions):
                        payload = visible_event(event.model_dump(mode="json"), b.principal, b.remote, owners)
                        payload["remote"] = b.remote
                        await websocket.send_text(json.dumps(payload))
            finally:  # also when the stream is ended from outside (its token was revoked)
                for pending in (getter, disconnected):
                    if pending is not None:
                        pending.cancel()
                        with contextlib.suppress(BaseException):
                            await pending
    except WebSocketDisconnect:
        return
    except LXDError as exc:
        with contextlib.suppress(Exception):
            await websocket.send_text(json.dumps({"type": "error", "status": 503, "detail": exc.error}))
            await websocket.close(code=1011, reason=f"the events stream of remote {b.remote!r} is unavailable")
    finally:
        metrics.events_subscribers -= 1
