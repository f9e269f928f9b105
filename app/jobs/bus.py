"""The in-process job bus: every change of every job, to whoever watches.

A subscriber first gets a `snapshot` (the job as it is), then each change in order, each with the job's next
sequence number, and finally `end`. Publishing never waits: every subscriber has a bounded queue, and one that falls
behind by more than its queue is marked slow and dropped (the websocket closes it with 1013) instead of slowing the
job or growing memory. `end` is always delivered to a subscriber that is not slow (it has a reserved slot).

A channel also keeps the latest messages of its job (at most `history` of them, and at most `history_bytes` of
output), so that an SSE client that reconnects with `Last-Event-ID` gets exactly what it missed; one that missed
more than is kept gets a fresh snapshot.

Each subscriber reads as a `Viewer`: it gets no message of a job outside its limits, and, unless the job is its own
(or it is an admin), no `output` message and no output in the job a message carries.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from app.jobs.access import EVERYONE, Viewer
from app.jobs.models import EventType, Job, omit_output, split_output


@dataclass(frozen=True)
class JobEvent:
    type: EventType
    seq: int
    job_id: str
    kind: str
    job: dict[str, Any]
    data: dict[str, Any] | None = None
    remote: str | None = None
    project: str | None = None
    token_id: str | None = None

    @classmethod
    def of(cls, type: EventType, seq: int, job: Job, data: dict[str, Any] | None = None) -> JobEvent:
        return cls(type, seq, job.id, job.kind, job_json(job), data, job.remote, job.project, job.token_id)

    def for_viewer(self, viewer: Viewer) -> JobEvent | None:
        """This message as `viewer` may read it, or None when it may not read it at all."""
        if not viewer.sees(self.remote, self.project):
            return None
        if viewer.owns(self.token_id):
            return self
        if self.type == "output":
            return None
        result = self.job.get("result")
        if split_output(result)[1] is not None:
            result = omit_output(result)
        if viewer.hide is not None:
            result = viewer.hide(result)
        if result is self.job.get("result"):
            return self
        return replace(self, job={**self.job, "result": result})

    @property
    def weight(self) -> int:
        """Roughly what the message holds in memory: its output, plus a little for the rest."""
        if self.type != "output" or self.data is None:
            return 256
        return 256 + len(self.data.get("text") or self.data.get("b64") or "")

    def message(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "seq": self.seq, "job": self.job}
        if self.data is not None:
            body["data"] = self.data
        return body


def job_json(job: Job) -> dict[str, Any]:
    return job.model_dump(mode="json")


class Subscription:
    """One reader of the bus. Iterate it; it stops after `end` (single-job) or when closed."""

    def __init__(self, bus: JobBus, job_id: str | None, kind: str | None, capacity: int,
                 viewer: Viewer = EVERYONE) -> None:
        self._bus = bus
        self.viewer = viewer
        self.job_id = job_id
        self.kind = kind
        self.capacity = capacity
        self._queue: deque[JobEvent] = deque()
        self._ready = asyncio.Event()
        self.closed = False
        self.slow = False
        self.closed_event = asyncio.Event()

    def _offer(self, event: JobEvent) -> None:
        if self.closed:
            return
        shown = event.for_viewer(self.viewer)
        if shown is None:
            return
        event = shown
        if len(self._queue) >= self.capacity and not (event.type == "end" and len(self._queue) <= self.capacity):
            self.slow = True
            self.close()
            return
        self._queue.append(event)
        self._ready.set()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._ready.set()
            self.closed_event.set()
            self._bus._remove(self)

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def get(self) -> JobEvent | None:
        """The next message, or None once closed (check `slow` to know why)."""
        while True:
            if self.slow:
                return None
            if self._queue:
                event = self._queue.popleft()
                if event.type == "end" and self.job_id is not None:
                    self.close()
                return event
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()

    def __aiter__(self) -> AsyncIterator[JobEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[JobEvent]:
        while (event := await self.get()) is not None:
            yield event


class _Channel:
    def __init__(self, job: Job, seq: int, history: int, history_bytes: int) -> None:
        self._job: Job | None = job
        self._latest: dict[str, Any] = {}
        self._token_id = job.token_id
        self.seq = seq
        self.history: deque[JobEvent] = deque(maxlen=history)
        self.history_bytes = history_bytes
        self.kept_bytes = 0
        self.subscribers: set[Subscription] = set()

    @property
    def job(self) -> Job:
        """The job as its latest message showed it (made from that message when first asked for: publishing, which
        happens far more often than reading, copies nothing)."""
        if self._job is None:
            self._job = Job.model_validate({**self._latest, "token_id": self._token_id})
        return self._job

    def moved_on(self, event: JobEvent) -> None:
        self._latest, self._token_id, self._job = event.job, event.token_id, None

    def keep(self, event: JobEvent) -> None:
        """Keep `event` for resumes, dropping the oldest beyond the count or the bytes (the newest always stays)."""
        if len(self.history) == self.history.maxlen:
            self.kept_bytes -= self.history[0].weight
        self.history.append(event)
        self.kept_bytes += event.weight
        while self.kept_bytes > self.history_bytes and len(self.history) > 1:
            self.kept_bytes -= self.history.popleft().weight


class JobBus:
    """Fan-out of job changes; all methods are synchronous and must run on the event loop."""

    def __init__(self, *, capacity: int = 1024, history: int = 1024, history_bytes: int = 8 << 20) -> None:
        self.capacity = capacity
        self.history = history
        self.history_bytes = history_bytes
        self._channels: dict[str, _Channel] = {}
        self._global: set[Subscription] = set()

    # -- publishing (the runner) --------------------------------------------------------------------------------

    def open(self, job: Job, seq: int = 0) -> None:
        """Start carrying a job (when it is submitted or recovered)."""
        if job.id not in self._channels:
            self._channels[job.id] = _Channel(job.model_copy(deep=True), seq, self.history, self.history_bytes)

    def seq(self, job_id: str) -> int:
        ch = self._channels.get(job_id)
        return ch.seq if ch else 0

    def publish(self, job: Job, type: EventType, data: dict[str, Any] | None = None) -> JobEvent:
        """Send one change; `end` also closes the job's channel."""
        ch = self._channels.get(job.id)
        if ch is None:
            ch = self._channels[job.id] = _Channel(job, 0, self.history, self.history_bytes)
        ch.seq += 1
        event = JobEvent.of(type, ch.seq, job, data)
        ch.moved_on(event)
        ch.keep(event)
        for sub in list(ch.subscribers):
            sub._offer(event)
        for sub in list(self._global):
            if sub.kind is None or sub.kind == job.kind:
                sub._offer(event)
        if type == "end":
            # Single-job subscribers close themselves once they have read `end`.
            del self._channels[job.id]
        return event

    # -- subscribing (websockets, SSE, waiters) -------------------------------------------------------------------

    def subscribe(self, job_id: str, *, after: int | None = None, capacity: int | None = None,
                  viewer: Viewer = EVERYONE) -> tuple[Subscription, list[JobEvent]] | None:
        """Watch one live job. Returns the subscription and the messages to send first (a snapshot, or with
        `after` the messages after that sequence number when they are still kept), or None when the bus does not
        carry the job (it has ended or does not exist: read the store) or `viewer` may not see it."""
        ch = self._channels.get(job_id)
        if ch is None or not viewer.sees_job(ch.job):
            return None
        sub = Subscription(self, job_id, None, capacity or self.capacity, viewer)
        ch.subscribers.add(sub)
        first: list[JobEvent]
        if after is not None and after >= ch.seq:
            first = []
        elif after is not None and ch.history and ch.history[0].seq <= after + 1:
            first = [e for e in ch.history if e.seq > after]
        else:
            first = [JobEvent.of("snapshot", ch.seq, ch.job)]
        return sub, [shown for e in first if (shown := e.for_viewer(viewer)) is not None]

    def subscribe_all(self, *, kind: str | None = None, capacity: int | None = None,
                      viewer: Viewer = EVERYONE) -> Subscription:
        """Watch every job `viewer` may see (optionally of one kind); no snapshot: list the jobs for that."""
        sub = Subscription(self, None, kind, capacity or self.capacity, viewer)
        self._global.add(sub)
        return sub

    def snapshots(self, kind: str | None = None, viewer: Viewer = EVERYONE) -> list[JobEvent]:
        """A snapshot message for every live job (of one kind) that `viewer` may see."""
        events = [JobEvent.of("snapshot", ch.seq, ch.job) for ch in self._channels.values()
                  if kind is None or ch.job.kind == kind]
        return [shown for e in events if (shown := e.for_viewer(viewer)) is not None]

    def live(self, job_id: str) -> Job | None:
        ch = self._channels.get(job_id)
        return ch.job if ch else None

    def _remove(self, sub: Subscription) -> None:
        self._global.discard(sub)
        if sub.job_id is not None and (ch := self._channels.get(sub.job_id)) is not None:
            ch.subscribers.discard(sub)

    def drop(self, job_id: str) -> None:
        """Stop carrying a job without its `end` (this process no longer runs it): its subscribers are closed, and
        read the job from the store."""
        ch = self._channels.pop(job_id, None)
        if ch is not None:
            for sub in list(ch.subscribers):
                sub.close()

    def close_all(self) -> None:
        """Close every subscriber (shutdown)."""
        for ch in list(self._channels.values()):
            for sub in list(ch.subscribers):
                sub.close()
        for sub in list(self._global):
            sub.close()

    @property
    def subscriber_count(self) -> int:
        return len(self._global) + sum(len(ch.subscribers) for ch in self._channels.values())
