"""`WS /v1/events`: LXD's events passed through as they happen.

Query: `remote`, `project` (as everywhere) and `type` (repeatable): an LXD event type (`lifecycle`, `operation`)
or a lifecycle action (`instance-started`, `instance-deleted`, ...); by default every lifecycle event. Each message is
LXD's event (`{type, timestamp, project, location, metadata}`) plus the `remote` it came from. A reader too slow to
keep up loses the oldest events (LXD's stream is never slowed down); `{type: "gap", dropped}` says how many.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated

from fastapi import APIRouter, Depends, Query, WebSocket, WebSocketDisconnect

from app.api.auth import require
from app.api.container_exec import WsBackend
from app.core.tokens import Scope
from app.lxd.errors import LXDError

router = APIRouter(tags=["events"])

LXD_TYPES = {"lifecycle", "operation"}


@router.websocket("/v1/events", name="events-ws", dependencies=[Depends(require(Scope.read))])
async def events_ws(websocket: WebSocket, b: WsBackend,
                    type: Annotated[list[str] | None, Query()] = None) -> None:
    """LXD events of the selected remote and project, filtered by `type`."""
    wanted = {t for value in (type or ["lifecycle"]) for t in value.split(",") if t}
    lxd_types = {"operation", "lifecycle"} if "operation" in wanted else {"lifecycle"}
    actions = wanted - LXD_TYPES
    await websocket.accept()
    metrics = websocket.app.state.metrics
    metrics.events_subscribers += 1
    try:
        async with b.client.events.subscribe(lxd_types, project=b.project) as sub:
            await websocket.send_text(json.dumps({"type": "subscribed", "remote": b.remote, "project": b.project,
                                                  "filter": sorted(wanted)}))
            disconnected = asyncio.ensure_future(websocket.receive())
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
                        payload = event.model_dump(mode="json")
                        payload["remote"] = b.remote
                        await websocket.send_text(json.dumps(payload))
            finally:
                disconnected.cancel()
                with contextlib.suppress(BaseException):
                    await disconnected
    except WebSocketDisconnect:
        return
    except LXDError as exc:
        with contextlib.suppress(Exception):
            await websocket.send_text(json.dumps({"type": "error", "status": 503, "detail": exc.error}))
            await websocket.close(code=1011, reason="the LXD events stream is unavailable")
    finally:
        metrics.events_subscribers -= 1
