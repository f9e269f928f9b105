"""`/v1/jobs`: list, read (with long-poll), cancel, and stream jobs (websocket and Server-Sent Events).

A caller reaches only the jobs within its remote and project limits (any other is a 404, as if it did not exist),
and sees a job's params and output only when the job is its own or it is an admin (see `app.jobs.access`).
Listings never carry params or output. On a shared database (PostgreSQL) every gateway process serves the stream
of every job, also of one another process runs (`JobRunner.subscribe`), with the same seq everywhere.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, WebSocket
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.websockets import WebSocketDisconnect, WebSocketState

from app.http.auth import TICKETS_ACCEPTED, Principal, require
from app.http.errors import ProblemError, problem_responses
from app.http.handlers import deny_websocket
from app.http.pagination import CursorQuery
from app.jobs.access import Viewer
from app.jobs.bus import JobEvent, Subscription
from app.jobs.models import Job, JobPage, JobStatus
from app.jobs.runner import JobAlreadyEnded, JobNotFound
from app.jobs.service import JobsService
from app.jobs.starter import JobsDep, WaitQuery, job_response, viewer_of
from app.jobs.store import JobFilter
from app.store.tokens import Scope

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
Reader = Depends(require(Scope.read))
Writer = Depends(require(Scope.write))

JobId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="the job id")]
CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_TRY_AGAIN_LATER = 1000, 1001, 1013


# -- cursors -------------------------------------------------------------------------------------------------------

def _encode_cursor(position: int, flt: JobFilter) -> str:
    doc = {"p": position, "f": [list(flt.status) if flt.status else None, flt.kind, flt.resource, flt.remote,
                                flt.project]}
    return base64.urlsafe_b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, JobFilter]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        doc = json.loads(raw)
        position = doc["p"]
        status, kind, resource, remote, project = doc["f"]
        if not isinstance(position, int) or position < 0:
            raise ValueError("position")
        for v in (kind, resource, remote, project):
            if v is not None and not isinstance(v, str):
                raise ValueError("filter")
        if status is not None and not (isinstance(status, list) and all(isinstance(s, str) for s in status)):
            raise ValueError("status")
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ProblemError(400, "malformed cursor: pass back the next_cursor of a previous page",
                           slug="bad-cursor") from None
    return position, JobFilter(tuple(status) if status else None, kind, resource, remote, project)


# -- routes --------------------------------------------------------------------------------------------------------

@router.get("", summary="List jobs, newest first", response_model=JobPage, operation_id="jobs-list",
            description="Only jobs within the token's remote and project limits. Items never carry params or "
                        "output: a result's `stdout`/`stderr` are left out and `output_omitted` is true (read the "
                        "job itself for them).",
            responses=problem_responses(400, 401, 403, 422))
async def list_jobs(
    jobs: JobsDep,
    principal: Annotated[Principal, Reader],
    status: Annotated[list[JobStatus] | None, Query(description="repeatable")] = None,
    kind: Annotated[str | None, Query(examples=["container.create"])] = None,
    resource: Annotated[str | None, Query(examples=["/v1/containers/c1"])] = None,
    remote: str | None = None,
    project: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: CursorQuery = None,
) -> Any:
    flt = JobFilter(tuple(s.value for s in status) if status else None, kind, resource, remote, project)
    before = None
    if cursor is not None:
        before, cursor_flt = _decode_cursor(cursor)
        asked = (flt.status, flt.kind, flt.resource, flt.remote, flt.project)
        if any(v is not None for v in asked) and flt != cursor_flt:
            raise ProblemError(400, "the cursor was made for other filters", slug="bad-cursor")
        flt = cursor_flt
    viewer = viewer_of(principal)
    rows = await jobs.store.list(flt, limit=limit + 1, before=before, remotes=viewer.remotes,
                                 projects=viewer.projects)
    more = len(rows) > limit
    rows = rows[:limit]
    items = []
    for row in rows:
        live = jobs.bus.live(row.job.id)
        job = live if live is not None else row.job
        items.append(viewer.render(job, listing=True, had_output=row.has_output and live is None))
    next_cursor = _encode_cursor(rows[-1].position, flt) if more and rows else None
    return JSONResponse({"items": items, "next_cursor": next_cursor})


async def _find(jobs: JobsService, job_id: str, viewer: Viewer) -> Job:
    """The job, when it exists for `viewer`; a 404 problem otherwise (also for a job outside its limits)."""
    job = await jobs.runner.get(job_id)
    if job is None or not viewer.sees_job(job):
        raise ProblemError(404, f"job {job_id!r} not found")
    return job


@router.get("/{job_id}", summary="A job; with `wait`, long-poll until it ends", response_model=Job,
            operation_id="jobs-get", responses=problem_responses(401, 403, 404, 422),
            description="The token that started the job, and admin tokens, see its `params` and its output "
                        "(`stdout`/`stderr` in `result`); other tokens see the job without them "
                        "(`output_omitted: true`).")
async def get_job(job_id: JobId, jobs: JobsDep, principal: Annotated[Principal, Reader], wait: WaitQuery = 0) -> Any:
    viewer = viewer_of(principal)
    job = await _find(jobs, job_id, viewer)
    if wait and not job.ended:
        job = await jobs.runner.wait(job_id, wait) or job
    params = await jobs.runner.params(job_id) if viewer.owns(job.token_id) else None
    return JSONResponse(viewer.render(job, params=params))


@router.delete("/{job_id}", summary="Cancel a job", response_model=Job, status_code=202,
               operation_id="jobs-cancel",
               description="Cancels per kind: exec kills the process, image copy cancels LXD's operation, create "
                           "stops after the current step and rolls back, a queued job never starts. 202 with the "
                           "job while it stops; 200 once it has ended (within `wait`); 409 if it had already ended.",
               responses={200: {"model": Job, "description": "the job has ended"},
                          **problem_responses(401, 403, 404, 409, 422)})
async def cancel_job(job_id: JobId, jobs: JobsDep, principal: Annotated[Principal, Writer],
                     wait: WaitQuery = 0) -> Any:
    viewer = viewer_of(principal)
    await _find(jobs, job_id, viewer)
    try:
        job = await jobs.runner.cancel(job_id)
    except JobNotFound:
        raise ProblemError(404, f"job {job_id!r} not found") from None
    except JobAlreadyEnded as exc:
        raise ProblemError(409, f"job {job_id!r} already ended {exc.job.status.value}", slug="job-ended",
                           job_status=exc.job.status.value) from None
    if wait and not job.ended:
        job = await jobs.runner.wait(job_id, wait) or job
    return job_response(job, viewer)


# -- streams -------------------------------------------------------------------------------------------------------

async def _deny(websocket: WebSocket, status: int, detail: str) -> None:
    await deny_websocket(websocket, status, detail)


async def _pump(websocket: WebSocket, sub: Subscription, first: list[JobEvent], *, until_end: bool) -> None:
    """Send messages until `end` (one job) or until the reader leaves; close 1013 when the reader is too slow."""

    async def send_all() -> None:
        for event in first:
            await websocket.send_text(json.dumps(event.message()))
            if until_end and event.type == "end":
                return
        while (event := await sub.get()) is not None:
            await websocket.send_text(json.dumps(event.message()))
            if until_end and event.type == "end":
                return

    async def read_until_gone() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return

    sender = asyncio.create_task(send_all())
    reader = asyncio.create_task(read_until_gone())
    closed = asyncio.create_task(sub.closed_event.wait())
    try:
        done, _ = await asyncio.wait({sender, reader, closed}, return_when=asyncio.FIRST_COMPLETED)
        if sender in done and sender.exception() is None and not sub.slow:
            if until_end:
                await _close(websocket, CLOSE_NORMAL)
            else:  # the bus closed every subscriber: the gateway is stopping
                await _close(websocket, CLOSE_GOING_AWAY, "the gateway is stopping")
        elif sub.slow:
            sender.cancel()
            await _close(websocket, CLOSE_TRY_AGAIN_LATER, "reader too slow")
        elif closed in done and not until_end:
            sender.cancel()
            await _close(websocket, CLOSE_GOING_AWAY, "the gateway is stopping")
        elif closed in done:
            # single-job subscription closed after `end` was taken: let the sender finish sending it
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sender, 5)
            if sub.slow:
                await _close(websocket, CLOSE_TRY_AGAIN_LATER, "reader too slow")
            else:
                await _close(websocket, CLOSE_NORMAL if until_end else CLOSE_GOING_AWAY)
    finally:
        sub.close()
        for task in (sender, reader, closed):
            task.cancel()
        await asyncio.gather(sender, reader, closed, return_exceptions=True)


async def _close(websocket: WebSocket, code: int, reason: str = "") -> None:
    if websocket.application_state == WebSocketState.DISCONNECTED:
        return
    with contextlib.suppress(Exception):
        await asyncio.wait_for(websocket.close(code, reason), 5)


async def _ended(jobs: JobsService, job_id: str, viewer: Viewer) -> list[JobEvent] | None:
    """The messages of a job the bus no longer carries (it has ended): a `snapshot` (the job as it is now, with the
    seq before its end) and `end`; None when it does not exist for `viewer`. With the snapshot one less than `end`,
    a reader that resumes after the snapshot gets `end`, and one that saw `end` gets nothing more."""
    stored = await jobs.store.load(job_id)
    if stored is None or not viewer.sees_job(stored.job):
        return None
    end = JobEvent.of("end", stored.seq, stored.job)
    events = [JobEvent.of("snapshot", max(stored.seq - 1, 0), stored.job), end]
    return [shown for e in events if (shown := e.for_viewer(viewer)) is not None]


@router.websocket("/ws", name="jobs-ws-all")
async def all_jobs_ws(websocket: WebSocket, principal: Annotated[Principal, Reader], kind: str | None = None) -> None:
    """Every job's messages (optionally of one `kind`): first a snapshot of each live job, then every change; only
    jobs within the token's limits, `output` messages only of its own jobs (every job's for an admin)."""
    jobs: JobsService = websocket.app.state.jobs
    viewer = viewer_of(principal)
    sub = jobs.bus.subscribe_all(kind=kind, viewer=viewer)
    first = jobs.bus.snapshots(kind, viewer)
    await websocket.accept()
    await _pump(websocket, sub, first, until_end=False)


@router.websocket("/{job_id}/ws", name="jobs-ws")
async def job_ws(websocket: WebSocket, job_id: str, principal: Annotated[Principal, Reader]) -> None:
    """One job: a snapshot, every change, `end` with the final job, then close 1000 (an ended job: its snapshot,
    `end`, close 1000)."""
    jobs: JobsService = websocket.app.state.jobs
    viewer = viewer_of(principal)
    subscribed = await jobs.runner.subscribe(job_id, viewer=viewer)
    if subscribed is None:
        ended = await _ended(jobs, job_id, viewer)
        if ended is None:
            await _deny(websocket, 404, f"job {job_id!r} not found")
            return
        await websocket.accept()
        with contextlib.suppress(Exception):
            for event in ended:
                await websocket.send_text(json.dumps(event.message()))
        await _close(websocket, CLOSE_NORMAL)
        return
    sub, first = subscribed
    await websocket.accept()
    await _pump(websocket, sub, first, until_end=True)


SSE_SCHEMA = {
    "type": "object", "required": ["event", "id", "data"],
    "description": "One Server-Sent Event (the stream is UTF-8 text: each event is its `event:`, `id:` and `data:` "
                   "lines then a blank line; `: heartbeat` comment lines come in between).",
    "properties": {
        "event": {"type": "string", "description": "the message type: `status`, `progress`, `output`, `end`",
                  "examples": ["progress"]},
        "id": {"type": "string", "pattern": "^[0-9]+$", "description": "the message's seq (send the last one as "
               "`Last-Event-ID` to resume)", "examples": ["7"]},
        "data": {"type": "string", "contentMediaType": "application/json",
                 "description": "the message as on the websocket, one line of JSON: `{type, seq, job, data}`",
                 "examples": ['{"type": "end", "seq": 7, "job": {"id": "j-8f2c", "status": "succeeded"}}']},
    },
}


def _sse(event: JobEvent) -> bytes:
    return f"event: {event.type}\nid: {event.seq}\ndata: {json.dumps(event.message())}\n\n".encode()


@router.get("/{job_id}/events", summary="The job's messages as Server-Sent Events", operation_id="jobs-events",
            response_class=StreamingResponse, openapi_extra=TICKETS_ACCEPTED,
            description="`event:` is the message type, `id:` its seq, `data:` the message as on the websocket. "
                        "Send `Last-Event-ID` to resume without repeats; a `: heartbeat` comment comes every 15 s. "
                        "The stream ends after `end`; an ended job answers its `snapshot`, then `end`. `output` "
                        "messages reach only the token that started the job and admin tokens.",
            responses={200: {"content": {"text/event-stream": {"schema": SSE_SCHEMA}},
                             "description": "the event stream (text, not JSON: one event per blank-line-separated "
                                            "block)"}, **problem_responses(400, 401, 403, 404, 422)})
async def job_events(job_id: JobId, request: Request, jobs: JobsDep, principal: Annotated[Principal, Reader],
                     last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None) -> StreamingResponse:
    after: int | None = None
    if last_event_id is not None:
        try:
            after = int(last_event_id)
        except ValueError:
            raise ProblemError(400, "Last-Event-ID must be a message seq (an integer)",
                               slug="bad-last-event-id") from None
    viewer = viewer_of(principal)
    subscribed = await jobs.runner.subscribe(job_id, after=after, viewer=viewer)
    ended: list[JobEvent] | None = None
    if subscribed is None:
        ended = await _ended(jobs, job_id, viewer)
        if ended is None:
            raise ProblemError(404, f"job {job_id!r} not found")
    heartbeat = jobs.sse_heartbeat

    async def stream() -> AsyncIterator[bytes]:
        if subscribed is None:
            assert ended is not None
            for event in ended:
                if after is None or event.seq > after:
                    yield _sse(event)
            return
        sub, first = subscribed
        try:
            for event in first:
                yield _sse(event)
                if event.type == "end":
                    return
            while True:
                try:
                    event = await asyncio.wait_for(sub.get(), heartbeat)
                except TimeoutError:
                    yield b": heartbeat\n\n"
                    continue
                if event is None:  # too slow, or the gateway is stopping: the client resumes with Last-Event-ID
                    return
                yield _sse(event)
                if event.type == "end":
                    return
        finally:
            sub.close()

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
