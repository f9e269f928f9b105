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

On a shared store (several gateway processes) a channel may be *followed*: the job runs in another process, and its
messages come from the database (`SharedStreams`, below) with the seq its owner gave them. Subscribers see no
difference. A followed channel lives while it has subscribers; when this process takes the job over, the channel
becomes its own again (`open`), and when this process gives a job up (`drop(follow=True)`), its subscribers go on
following it from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from app.jobs.access import EVERYONE, Viewer
from app.jobs.models import EventType, Job, omit_output, split_output
from app.jobs.store import StoredJob
from app.store.errors import StoreUnavailable

log = logging.getLogger("app.jobs")


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
    def __init__(self, job: Job, seq: int, history: int, history_bytes: int, *, followed: bool = False) -> None:
        self.followed = followed
        """The job runs in another process: messages come from the database (`JobBus.deliver`)."""
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
        self.on_publish: Callable[[JobEvent], None] | None = None
        """Called with every message published of a job this process runs (to write it for the other processes)."""
        self.on_follow: Callable[[str], None] | None = None
        """Called with the id of a job this process starts following (to read what it missed at once)."""

    # -- publishing (the runner) --------------------------------------------------------------------------------

    def open(self, job: Job, seq: int = 0) -> None:
        """Start carrying a job (when it is submitted or recovered); one followed until now becomes this process's
        (its subscribers stay), its sequence going on from the greater of `seq` and the last one delivered."""
        ch = self._channels.get(job.id)
        if ch is None:
            self._channels[job.id] = _Channel(job.model_copy(deep=True), seq, self.history, self.history_bytes)
        elif ch.followed:
            ch.followed = False
            ch.seq = max(ch.seq, seq)

    def seq(self, job_id: str) -> int:
        ch = self._channels.get(job_id)
        return ch.seq if ch else 0

    def publish(self, job: Job, type: EventType, data: dict[str, Any] | None = None) -> JobEvent:
        """Send one change; `end` also closes the job's channel."""
        ch = self._channels.get(job.id)
        if ch is None:
            ch = self._channels[job.id] = _Channel(job, 0, self.history, self.history_bytes)
        elif ch.followed:  # another process runs it (this one gave it up): its messages come from there
            return JobEvent.of(type, ch.seq, job, data)
        ch.seq += 1
        event = JobEvent.of(type, ch.seq, job, data)
        if self.on_publish is not None:
            self.on_publish(event)
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

    # -- following a job another process runs (a shared store) ----------------------------------------------------

    def follow(self, job: Job, seq: int, history: Sequence[JobEvent] = ()) -> None:
        """Carry a job another process runs, as the messages `deliver` gives (those after `seq`); `history` are
        its latest messages (for resumes). Nothing changes when the bus carries the job already."""
        if job.id in self._channels:
            return
        ch = self._channels[job.id] = _Channel(job.model_copy(deep=True), seq, self.history, self.history_bytes,
                                               followed=True)
        for event in history:
            ch.keep(event)
        if history:
            ch.moved_on(history[-1])
        if self.on_follow is not None:
            self.on_follow(job.id)

    def deliver(self, type: EventType, seq: int, job_id: str, job: dict[str, Any],
                data: dict[str, Any] | None = None) -> JobEvent | None:
        """Pass on a message of a followed job, as its owner numbered it (one not after the last passed on is left
        out); `end` closes the channel."""
        ch = self._channels.get(job_id)
        if ch is None or not ch.followed or seq <= ch.seq:
            return None
        ch.seq = seq
        event = JobEvent(type, seq, job_id, str(job.get("kind") or ch.job.kind), job, data, job.get("remote"),
                         job.get("project"), ch._token_id)
        ch.moved_on(event)
        ch.keep(event)
        for sub in list(ch.subscribers):
            sub._offer(event)
        if type == "end":
            del self._channels[job_id]
        return event

    def carries(self, job_id: str) -> bool:
        return job_id in self._channels

    def followed_seq(self, job_id: str) -> int | None:
        """The seq of the last message passed on of a followed job (None: not followed)."""
        ch = self._channels.get(job_id)
        return ch.seq if ch is not None and ch.followed else None

    def let_go(self, job_id: str) -> None:
        """Stop following a job nobody here reads."""
        ch = self._channels.get(job_id)
        if ch is not None and ch.followed and not ch.subscribers:
            del self._channels[job_id]

    def followed(self) -> dict[str, int]:
        """The jobs followed, each with the seq of its last message passed on."""
        return {job_id: ch.seq for job_id, ch in self._channels.items() if ch.followed}

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
                  if not ch.followed and (kind is None or ch.job.kind == kind)]
        return [shown for e in events if (shown := e.for_viewer(viewer)) is not None]

    def live(self, job_id: str) -> Job | None:
        """The job as this process runs it (None when it does not run it)."""
        ch = self._channels.get(job_id)
        return ch.job if ch and not ch.followed else None

    def _remove(self, sub: Subscription) -> None:
        self._global.discard(sub)
        if sub.job_id is not None and (ch := self._channels.get(sub.job_id)) is not None:
            ch.subscribers.discard(sub)
            if ch.followed and not ch.subscribers:  # nobody here reads it any more
                del self._channels[sub.job_id]

    def drop(self, job_id: str, *, follow: bool = False) -> None:
        """Stop carrying a job without its `end` (this process no longer runs it). With `follow` (a shared store),
        its subscribers go on with the messages of its next owner (`deliver`); else they are closed, and read the
        job from the store."""
        ch = self._channels.get(job_id)
        if ch is None:
            return
        if follow and ch.subscribers:
            if not ch.followed:
                ch.followed = True
                if self.on_follow is not None:
                    self.on_follow(job_id)
            return
        del self._channels[job_id]
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


# -- streams across gateway processes (a shared store) ---------------------------------------------------------------

Message = tuple[str, int, str, str]
"""A message as the database keeps it: the job's id, its seq, its type, its body (`{"job", "data"}` as JSON)."""

PROGRESS_WRITE_INTERVAL = 1.0
"""Progress messages of one job are written for the other processes at most this often (the latest one wins);
`status`, `output` and `end` are always written, the progress held back before them first."""
POLL_INTERVAL = 1.0
"""How often a process reads the messages of the jobs it follows even without a notification (one lost while its
listening connection was down), and checks whether they ended without an `end` message it could read."""
MAX_PENDING = 10_000
"""Messages waiting to be written (the database slow or away) at most; beyond, the oldest are left out."""
BATCH = 1000
"""Messages written, or read, in one statement at most."""


class MessageLog(Protocol):
    """Where the messages of job streams are shared between processes (`app.store.postgres.PostgresJobStore`)."""

    async def append_messages(self, owner_id: str, messages: list[Message]) -> set[str]: ...
    """Write messages of jobs `owner_id` owns and notify the other processes; the ids of jobs it no longer owns."""
    async def read_messages(self, after: dict[str, int], *, limit: int = BATCH) -> list[Message]: ...
    async def recent_messages(self, job_id: str, limit: int) -> list[Message]: ...
    async def job_states(self, job_ids: list[str]) -> dict[str, bool]: ...
    async def trim_messages(self, job_id: str, keep: int, keep_bytes: int | None = None) -> int: ...
    async def prune_messages(self, ended_before: datetime) -> int: ...
    async def last_message_seqs(self, job_ids: list[str]) -> dict[str, int]: ...
    async def listen_messages(self, callback: Callable[[str], None]) -> None: ...
    async def load(self, job_id: str) -> StoredJob | None: ...


class SharedStreams:
    """The streams of a job on every process of a shared store.

    The owner of a job writes each message its bus publishes (`bus.on_publish`) to the database, in order, in
    batches, and notifies the others (`<job_id>:<seq>`); progress is merged: at most one progress message per job
    per `progress_interval` is written (the latest; the one held back goes before the next `status`, `output` or
    `end`, which are never merged). A process whose subscriber asks for a job it does not run follows it
    (`follow`): it reads the messages from the database, on each notification and every `poll_interval`, and
    delivers them on its bus with their owner's seq. A followed job that ended without an `end` this process could
    read (its owner died between storing the end and writing the message) gets its `end` from the job's row."""

    def __init__(self, bus: JobBus, store: MessageLog, owner_id: str, *,
                 progress_interval: float = PROGRESS_WRITE_INTERVAL, poll_interval: float = POLL_INTERVAL,
                 keep: int | None = None) -> None:
        self.bus = bus
        self.store = store
        self.owner_id = owner_id
        self.progress_interval = progress_interval
        self.poll_interval = poll_interval
        self.keep = keep or bus.history
        self.keep_bytes = bus.history_bytes
        """Messages kept per job in the database, as on the bus: the latest `keep` that hold `keep_bytes` at most
        (trimmed once twice as many, or twice as much, were written)."""
        self._pending: list[JobEvent] = []
        self._held: dict[str, tuple[JobEvent, asyncio.TimerHandle]] = {}
        self._progress_at: dict[str, float] = {}
        self._written: dict[str, tuple[int, int]] = {}
        """Per job: messages, and their bytes, written since it was last trimmed."""
        self._writer_wake = asyncio.Event()
        self._dirty: set[str] = set()
        self._reader_wake = asyncio.Event()
        self._ended_seen: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self.left_out = 0
        """Messages never written because too many waited (the database slow or away)."""

    async def start(self) -> None:
        self.bus.on_publish = self._published
        self.bus.on_follow = self._mark
        await self.store.listen_messages(self._notified)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._write_loop(), name="job-messages-writer"),
                       loop.create_task(self._read_loop(), name="job-messages-reader")]

    async def stop(self, timeout: float = 2.0) -> None:
        """Write what waits (for at most `timeout` seconds), then stop."""
        for job_id in list(self._held):
            self._release(job_id)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                while self._pending:
                    await self._write_some()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.bus.on_publish = self.bus.on_follow = None

    # -- writing (the owner) ----------------------------------------------------------------------------------

    def _published(self, event: JobEvent) -> None:
        job_id = event.job_id
        if event.type == "progress":
            held = self._held.get(job_id)
            if held is not None:
                self._held[job_id] = (event, held[1])
                return
            last = self._progress_at.get(job_id)
            wait = 0.0 if last is None else last + self.progress_interval - time.monotonic()
            if wait <= 0:
                self._queue(event)
            else:
                timer = asyncio.get_running_loop().call_later(wait, self._release, job_id)
                self._held[job_id] = (event, timer)
            return
        self._release(job_id)
        self._queue(event)
        if event.type == "end":
            self._progress_at.pop(job_id, None)

    def _release(self, job_id: str) -> None:
        """Queue the progress held back of a job (its time came, or a message that is never merged follows)."""
        held = self._held.pop(job_id, None)
        if held is not None:
            held[1].cancel()
            self._queue(held[0])

    def _queue(self, event: JobEvent) -> None:
        if event.type == "progress":
            self._progress_at[event.job_id] = time.monotonic()
        self._pending.append(event)
        if len(self._pending) > MAX_PENDING:
            at = next((i for i, e in enumerate(self._pending) if e.type != "end"), None)
            if at is not None:
                del self._pending[at]
                self.left_out += 1
                if self.left_out % 1000 == 1:
                    log.warning("job stream messages left out (the job database writes too slowly): %d so far",
                                self.left_out)
        self._writer_wake.set()

    def forget(self, job_id: str) -> None:
        """This process no longer owns the job: nothing more of it is written."""
        held = self._held.pop(job_id, None)
        if held is not None:
            held[1].cancel()
        self._pending = [e for e in self._pending if e.job_id != job_id]
        self._progress_at.pop(job_id, None)
        self._written.pop(job_id, None)

    async def _write_loop(self) -> None:
        delay, refused = 0.25, 0
        while True:
            await self._writer_wake.wait()
            self._writer_wake.clear()
            while self._pending:
                try:
                    await self._write_some()
                    delay, refused = 0.25, 0
                except asyncio.CancelledError:
                    raise
                except StoreUnavailable as exc:  # kept, in order, until the database is back
                    log.warning("writing job stream messages failed (%s); retrying in %.1fs", exc.reason, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                except Exception:
                    refused += 1
                    if refused >= 3:  # the database refuses these messages: the others go on without them
                        count = min(len(self._pending), BATCH)
                        log.exception("job stream messages refused by the job database: %d left out", count)
                        del self._pending[:count]
                        self.left_out += count
                        refused = 0
                    await asyncio.sleep(delay)

    async def _write_some(self) -> None:
        batch, self._pending = self._pending[:BATCH], self._pending[BATCH:]
        rows: list[Message] = [
            (e.job_id, e.seq, e.type, json.dumps({"job": e.job, "data": e.data}, separators=(",", ":")))
            for e in batch]
        try:
            refused = await self.store.append_messages(self.owner_id, rows)
        except BaseException:
            self._pending[:0] = batch  # in order, before what came meanwhile
            raise
        for job_id in refused:
            self.forget(job_id)
        trim = []
        for e, row in zip(batch, rows, strict=True):
            if e.job_id in refused:
                continue
            if e.type == "end":
                self._written.pop(e.job_id, None)
                continue
            count, size = self._written.get(e.job_id, (0, 0))
            count, size = count + 1, size + len(row[3])
            if count > 2 * self.keep or size > 2 * self.keep_bytes:
                trim.append(e.job_id)
                count, size = self.keep, self.keep_bytes  # at most what the trim leaves
            self._written[e.job_id] = (count, size)
        for job_id in trim:
            await self.store.trim_messages(job_id, self.keep, self.keep_bytes)

    # -- following (the other processes) ------------------------------------------------------------------------

    async def follow(self, job_id: str) -> bool:
        """Make the bus carry a job another process runs (its latest messages read for resumes); False when the
        job has ended or does not exist (read it from the store)."""
        if self.bus.carries(job_id):
            return True
        stored = await self.store.load(job_id)
        if stored is None or stored.job.ended:
            return False
        rows = await self.store.recent_messages(job_id, self.keep)
        job = stored.job
        history = []
        for _, seq, type, body in rows:
            doc = json.loads(body)
            history.append(JobEvent(type, seq, job_id, job.kind, doc["job"], doc.get("data"),  # type: ignore[arg-type]
                                    doc["job"].get("remote"), doc["job"].get("project"), job.token_id))
        if history and history[-1].type == "end":
            return False
        self.bus.follow(job, history[-1].seq if history else 0, history)
        return True

    def _notified(self, payload: str) -> None:
        job_id, _, seq = payload.rpartition(":")
        known = self.bus.followed_seq(job_id)
        with contextlib.suppress(ValueError):
            if known is not None and int(seq) > known:
                self._mark(job_id)

    def _mark(self, job_id: str) -> None:
        self._dirty.add(job_id)
        self._reader_wake.set()

    async def _read_loop(self) -> None:
        polled, failing = time.monotonic(), False
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reader_wake.wait(), max(0.0, polled + self.poll_interval -
                                                                     time.monotonic()))
            self._reader_wake.clear()
            followed = self.bus.followed()
            poll = time.monotonic() - polled >= self.poll_interval
            if poll:
                polled = time.monotonic()
                targets = followed
            else:
                targets = {job_id: followed[job_id] for job_id in self._dirty if job_id in followed}
            self._dirty.clear()
            if not targets:
                continue
            try:
                await self._catch_up(targets)
                if poll:
                    await self._check_ended(list(targets))
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next poll tries again
                if not failing:
                    log.warning("reading job stream messages failed (%s); trying again every %.1fs",
                                " ".join(str(exc).split()) or type(exc).__name__, self.poll_interval)
                failing = True

    async def _catch_up(self, targets: dict[str, int]) -> None:
        while targets:
            rows = await self.store.read_messages(targets, limit=BATCH)
            for job_id, seq, type, body in rows:
                doc = json.loads(body)
                self.bus.deliver(type, seq, job_id, doc["job"], doc.get("data"))  # type: ignore[arg-type]
            if len(rows) < BATCH:
                return
            followed = self.bus.followed()
            targets = {job_id: followed[job_id] for job_id in targets if job_id in followed}

    async def _check_ended(self, job_ids: list[str]) -> None:
        """End what ended without an `end` message seen here for a whole poll, and let go of jobs that are gone."""
        states = await self.store.job_states(job_ids)
        for job_id in job_ids:
            known = self.bus.followed_seq(job_id)
            if known is None:
                self._ended_seen.discard(job_id)
                continue
            if job_id not in states:
                self.bus.drop(job_id)
            elif not states[job_id]:
                self._ended_seen.discard(job_id)
            elif job_id not in self._ended_seen:
                self._ended_seen.add(job_id)
            else:
                self._ended_seen.discard(job_id)
                stored = await self.store.load(job_id)
                if stored is not None:
                    self.bus.deliver("end", max(stored.seq, known + 1), job_id, job_json(stored.job))
