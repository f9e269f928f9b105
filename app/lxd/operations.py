"""Background operations: wait (event driven, with `/wait` polls as fall-back), cancel, follow progress.

An `Operation` is subscribed to the shared events stream before the request that creates it is sent, reconciles
once with a GET (unless the stream was up and settled before the request, and still is: then every event of the
operation reaches it), then follows `operation` events. While the stream is down it polls `/wait` in short slices
(proxies kill long polls). LXD forgets a finished operation after 5 s: the last state seen is remembered, so a 404
after completion is not an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from app.lxd.envelope import decode
from app.lxd.errors import (
    BadRequest,
    LXDError,
    LXDTimeout,
    LXDUnavailable,
    NotCancellable,
    NotFound,
    OperationVanished,
    operation_error,
)
from app.lxd.models import OperationState, Progress, StatusCode

if TYPE_CHECKING:
    from app.lxd.client import Client
    from app.lxd.events import EventBus

POLL_SLICE = 2.0  # seconds per `/wait` long poll when the events stream is down
SAFETY_GET = 3.0  # seconds without an event before one reconciling GET (a missed event costs at most this)
LATE_EVENT = 1.0  # seconds to wait for the final event of an operation LXD no longer knows


class Operation:
    """One LXD operation, followed until it ends. `state` is the newest snapshot seen."""

    def __init__(self, client: Client, state: OperationState, *, bus: EventBus | None = None,
                 seen_from: int | None = None) -> None:
        """`seen_from`: the bus's settled connection (`EventBus.settled_connection()`) taken before the request that
        created the operation was sent; while the bus is still on it, no reconciling GET is needed."""
        self._client = client
        self._state = state
        self._bus = bus
        self._changed = asyncio.Event()
        whole = bus is not None and bus.still_on(seen_from)
        self._reconcile = bool(state.id) and not state.final and not whole
        self._listeners: set[asyncio.Queue[OperationState]] = set()
        if bus is not None and state.id and not state.final:
            bus.watch(state.id, self._on_event)
            seen = bus.recent(state.id)
            if seen is not None:
                self._apply(seen)

    @classmethod
    def completed(cls, client: Client, metadata: Any) -> Operation:
        """A synchronous answer presented as an operation that has already succeeded."""
        md = metadata if isinstance(metadata, dict) else {"value": metadata}
        return cls(client, OperationState(id="", status="Success", status_code=StatusCode.SUCCESS, metadata=md))

    # ------------------------------------------------------------------------------------------ state

    @property
    def id(self) -> str:
        return self._state.id

    @property
    def state(self) -> OperationState:
        return self._state

    @property
    def done(self) -> bool:
        return self._state.final

    @property
    def metadata(self) -> dict[str, Any]:
        """The operation's own metadata (exec `return`, image `fingerprint`, progress...)."""
        return self._state.metadata or {}

    @property
    def resources(self) -> dict[str, list[str]]:
        return self._state.resources or {}

    def _apply(self, state: OperationState) -> None:
        if self._state.final and not state.final:
            return
        self._state = state
        for q in list(self._listeners):
            q.put_nowait(state)
        self._changed.set()
        if state.final and self._bus is not None:
            self._bus.unwatch(state.id, self._on_event)

    def _on_event(self, state: OperationState | None) -> None:
        if state is None:
            self._reconcile = True
            self._changed.set()
        else:
            self._apply(state)

    async def refresh(self) -> OperationState:
        """Read the operation once; a 404 after completion keeps the last state seen."""
        if not self.id or self.done:
            return self._state
        try:
            env = decode(await self._client.transport.request("GET", f"/1.0/operations/{self.id}"))
        except NotFound as exc:
            if self._bus is not None and (seen := self._bus.recent(self.id)) is not None:
                self._apply(seen)
            if not self.done and self._bus is not None and self._bus.connected.is_set():
                # gone means finished: its final event is most likely still on its way
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(LATE_EVENT):
                        while not self.done:
                            self._changed.clear()
                            await self._changed.wait()
            if self.done:
                return self._state
            raise OperationVanished("the operation is gone and its outcome was not seen", status=404,
                                    method="GET", path=f"/1.0/operations/{self.id}", operation_id=self.id) from exc
        self._apply(OperationState.model_validate(env.metadata))
        return self._state

    async def _poll(self, slice_s: float) -> None:
        """One `/wait` long poll. An error body (timeout or failure: LXD 5.0 says both under HTTP 200) → GET."""
        secs = max(1, int(slice_s))
        path = f"/1.0/operations/{self.id}/wait"
        try:
            resp = await self._client.transport.request("GET", path, params={"timeout": secs}, long=True)
            env = decode(resp)
        except NotFound:
            await self.refresh()
            return
        except LXDError as exc:
            if isinstance(exc, LXDUnavailable):
                raise
            await self.refresh()
            return
        if isinstance(env.metadata, dict) and env.metadata.get("id"):
            self._apply(OperationState.model_validate(env.metadata))

    # ------------------------------------------------------------------------------------------ waiting

    def _raise_if_failed(self) -> OperationState:
        st = self._state
        if st.status_code == StatusCode.SUCCESS or not st.final:
            return st
        raise operation_error(st)

    async def wait(self, timeout: float | None = None) -> OperationState:
        """Wait until the operation ends; raise `OperationFailed`/`OperationCancelled`, or `LXDTimeout`.

        Cancelling the task that awaits this cancels the operation on the server when LXD allows it.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not self.done:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise LXDTimeout(f"operation still running after {timeout:g}s", operation_id=self.id,
                                     path=f"/1.0/operations/{self.id}")
                if self._reconcile:
                    self._reconcile = False
                    await self.refresh()
                    continue
                bus = self._bus
                if bus is not None and bus.connected.is_set():
                    self._changed.clear()
                    step = SAFETY_GET if remaining is None else min(remaining, SAFETY_GET)
                    try:
                        async with asyncio.timeout(step):
                            await self._changed.wait()
                    except TimeoutError:
                        self._reconcile = True
                else:
                    if bus is not None:
                        await bus.ensure_connected(0)  # restart the reader if it died
                    await self._poll(POLL_SLICE if remaining is None else min(remaining, POLL_SLICE))
        except asyncio.CancelledError:
            if not self.done and self._state.may_cancel:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._cancel_request())
            raise
        return self._raise_if_failed()

    # ------------------------------------------------------------------------------------------ cancel

    async def _cancel_request(self) -> None:
        decode(await self._client.transport.request("DELETE", f"/1.0/operations/{self.id}"))

    async def cancel(self) -> None:
        """Ask LXD to cancel; `NotCancellable` when it cannot (LXD 5.0: exec, create, start, stop)."""
        if self.done:
            return
        if not self._state.may_cancel:
            raise NotCancellable(f"LXD cannot cancel this operation ({self._state.description or 'no description'})",
                                 status=400, method="DELETE", path=f"/1.0/operations/{self.id}",
                                 operation_id=self.id)
        await self._cancel_request()

    async def cancel_when_possible(self, timeout: float = 60.0, poll: float = 0.1) -> bool:
        """Cancel as soon as LXD allows it: an image download, for one, becomes cancellable only once the
        transfer has started. True when the cancel was sent; False when the operation ended first;
        `NotCancellable` when it is still not cancellable after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.done:
            if self._state.may_cancel:
                try:
                    await self._cancel_request()
                    return True
                except BadRequest:  # not running (yet, or any more): look again
                    pass
            if loop.time() >= deadline:
                raise NotCancellable(f"LXD did not let this operation be cancelled within {timeout:g}s",
                                     status=400, method="DELETE", path=f"/1.0/operations/{self.id}",
                                     operation_id=self.id)
            await asyncio.sleep(poll)
            await self.refresh()
        return False

    # ------------------------------------------------------------------------------------------ progress

    async def progress(self) -> AsyncIterator[Progress]:
        """Each new progress update until the operation ends (from events: GET may not carry progress)."""
        q: asyncio.Queue[OperationState] = asyncio.Queue()
        self._listeners.add(q)
        waiter = asyncio.get_running_loop().create_task(self._wait_quietly())
        last: Progress | None = None
        try:
            p = Progress.from_metadata(self._state.metadata)
            if p is not None:
                last = p
                yield p
            while not self.done or not q.empty():
                getter = asyncio.ensure_future(q.get())
                await asyncio.wait({getter, waiter}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    if q.empty():
                        break
                    continue
                p = Progress.from_metadata(getter.result().metadata)
                if p is not None and p != last:
                    last = p
                    yield p
        finally:
            self._listeners.discard(q)
            waiter.cancel()
            with contextlib.suppress(BaseException):
                await waiter

    async def _wait_quietly(self) -> None:
        with contextlib.suppress(Exception):
            await self.wait()

    def __repr__(self) -> str:
        return f"<Operation {self.id or '(sync)'} {self._state.status or '?'}>"


class Operations:
    """`client.operations`: list, read, follow and cancel operations by id."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def list(self, *, project: str | None = None, all_projects: bool = False) -> list[OperationState]:
        params: dict[str, str] = {"recursion": "1"}
        if all_projects:
            params["all-projects"] = "true"
        elif scope := project or self._client.project:
            params["project"] = scope
        env = await self._client.request("GET", "/1.0/operations", params=params, scoped=False)
        out: list[OperationState] = []
        for items in (env.metadata or {}).values():
            out += [OperationState.model_validate(i) for i in items or []]
        return out

    async def get(self, op_id: str) -> OperationState:
        env = await self._client.request("GET", f"/1.0/operations/{op_id}", scoped=False)
        return OperationState.model_validate(env.metadata)

    async def follow(self, op_id: str, *, project: str | None = None) -> Operation:
        """An `Operation` for an existing id, followed through the events stream of `project`."""
        bus = self._client.events.bus(project)
        await bus.ensure_connected()
        return Operation(self._client, await self.get(op_id), bus=bus)

    async def wait(self, op_id: str, timeout: float | None = None, *, project: str | None = None) -> OperationState:
        return await (await self.follow(op_id, project=project)).wait(timeout)

    async def cancel(self, op_id: str) -> None:
        """DELETE the operation; `NotCancellable` when LXD refuses."""
        await self._client.request("DELETE", f"/1.0/operations/{op_id}", scoped=False)
