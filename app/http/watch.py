"""`?watch=true` on a mirrored collection: its changes as Server-Sent Events, resumable.

    event: resync      the full list, `{"items": [...]}`: first, and whenever a resume is older than the changes
                       kept (as Kubernetes answers 410 Gone for a resourceVersion too old), or the watcher fell
                       behind, or the model of the remote was reloaded
    event: added | modified | deleted    one object in `data` (a deleted one as it was last seen)
    id: <version>      send it back as `Last-Event-ID` to resume without missing or repeating a change
    : heartbeat        a comment every 15 s

The stream needs the remote's model in sync: until it is (10 s at most), 503.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import Header, Query
from fastapi.responses import StreamingResponse
from starlette.requests import HTTPConnection

from app.http.cache import View
from app.http.errors import ProblemError
from app.lxd.client import Client
from app.mirror import Change, Mirror, Record, Shaped

HEARTBEAT = 15.0

WatchQuery = Annotated[bool, Query(description="stream the collection's changes as Server-Sent Events "
                                   "(`text/event-stream`) instead of answering a page: see the 200 answer's "
                                   "`text/event-stream` content")]
LastEventId = Annotated[str | None, Header(alias="Last-Event-ID", description="with `watch=true`: the `id` of the "
                                           "last event received, to resume after it")]


def watch_content(schema: str) -> dict[str, Any]:
    """The `text/event-stream` content of a collection's 200 answer (beside its JSON page), for the OpenAPI."""
    return {"content": {"text/event-stream": {"schema": {
        "type": "object", "title": f"{schema}WatchEvent",
        "description": f"with `watch=true`: one event per blank-line-separated block. `event: resync` carries "
                       f"`{{\"items\": [{schema}, ...]}}` (the full list: first, and when a resume is too old); "
                       f"`added`, `modified`, `deleted` carry one `{schema}`; `id` is the version to send back as "
                       "`Last-Event-ID`.",
        "properties": {"event": {"type": "string", "enum": ["resync", "added", "modified", "deleted"]},
                       "id": {"type": "string", "pattern": "^[0-9]+$"},
                       "data": {"type": "string", "contentMediaType": "application/json"}}}}}}


def _sse(event: str, version: int, data: Any) -> bytes:
    return f"event: {event}\nid: {version}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def watch_stream(conn: HTTPConnection, mirror: Mirror, remote: str, project: str, kind: str, *,
                       client: Client, view: View, last_event_id: str | None,
                       keep: Callable[[Shaped], bool] = lambda _: True) -> StreamingResponse:
    """The SSE stream of `kind` in `project` of `remote`: objects `keep` accepts, each as `view` shows it."""
    since: int | None = None
    if last_event_id is not None:
        try:
            since = int(last_event_id)
        except ValueError:
            raise ProblemError(400, "Last-Event-ID must be an event id (an integer)",
                               slug="bad-last-event-id") from None
    if not mirror.enabled:
        raise ProblemError(503, "watching needs the read model (LXDGW_READ_MODEL is off)", slug="no-read-model")
    try:
        coll = await mirror.ready(remote, project, kind)
    except TimeoutError as exc:
        raise ProblemError(503, str(exc), slug="model-not-in-sync") from None

    def shown(data: Shaped) -> Shaped:
        return view(Record(data, 0.0, 0, 0))[0]

    def resync() -> tuple[bytes, int]:
        items = [view(rec)[0] for rec in coll.sorted_records() if keep(rec.data)]
        return _sse("resync", coll.version, {"items": items}), coll.version

    async def stream() -> AsyncIterator[bytes]:
        # The watcher is made here, as the stream starts (a client gone before that leaves nothing behind).
        watcher, backlog = coll.watch(since)
        try:
            sent = 0  # the version the last full list was taken at: changes up to it are in it
            if backlog is None or since is None:
                body, sent = resync()
                yield body
            else:
                for change in backlog:
                    if change.data is not None and keep(change.data):
                        yield _sse(change.type, change.version, shown(change.data))
            while True:
                try:
                    change: Change = await asyncio.wait_for(watcher.queue.get(), HEARTBEAT)
                except TimeoutError:
                    yield b": heartbeat\n\n"
                    continue
                if change.type == "end":  # the collection is no longer kept: the client resumes elsewhere
                    return
                if change.type == "resync":
                    watcher.overflowed = False
                    body, sent = resync()
                    yield body
                elif change.version > sent and change.data is not None and keep(change.data):
                    yield _sse(change.type, change.version, shown(change.data))
        finally:
            watcher.close()

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
