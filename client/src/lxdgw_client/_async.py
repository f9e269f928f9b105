"""`AsyncClient`: the gateway from asyncio code. `Client` (`_sync.py`) is the same, method for method, blocking."""

from __future__ import annotations

import asyncio
import builtins
import math
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

import httpx

from lxdgw_client import _calls as calls
from lxdgw_client._calls import Call, ImageArg, Scope, job_id_of, seg
from lxdgw_client._config import Settings, is_directory_listing
from lxdgw_client._sse import STREAM_READ_TIMEOUT, STREAM_RETRIES, SSEParser, backoff
from lxdgw_client.errors import GatewayUnreachable, JobWaitTimeout, error_from_response, raise_for_job
from lxdgw_client.models import Container, Image, Job, JobMessage, Page, Written

R = TypeVar("R")
CHUNK = 1 << 16


class AsyncClient:
    """The gateway at `base_url` (else `LXDGW_URL`, else http://127.0.0.1:8080) with `token` (else `LXDGW_TOKEN`).

    `remote` and `project` are the defaults of every resource request (else the gateway's). Use it as an async
    context manager, or call `aclose()`. Every error is a `GatewayError`."""

    def __init__(self, base_url: str | None = None, token: str | None = None, *, remote: str | None = None,
                 project: str | None = None, timeout: float = 30.0, verify: bool | str = True,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = Settings.resolve(base_url, token)
        self.scope = Scope(remote, project)
        self.timeout = timeout
        self._http = httpx.AsyncClient(base_url=self.settings.base_url, headers=self.settings.headers(),
                                       timeout=timeout, verify=verify, transport=transport)
        self.containers = AsyncContainers(self)
        self.jobs = AsyncJobs(self)
        self.images = AsyncImages(self)

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None,
                      headers: Mapping[str, str] | None = None, content: bytes | AsyncIterable[bytes] | None = None,
                      timeout: float | None = None) -> httpx.Response:
        """Any route of the gateway; the answer, read. An answer of 400 or more raises `GatewayError`."""
        try:
            response = await self._http.request(method, path, params=dict(params or {}), json=json,
                                                headers=dict(headers or {}), content=content,
                                                timeout=timeout if timeout is not None else self.timeout)
        except httpx.TransportError as exc:
            raise GatewayUnreachable(None, f"cannot reach the gateway at {self.base_url}: {exc!r}") from exc
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    async def _run(self, call: Call[R], *, timeout: float | None = None) -> R:
        response = await self.request(call.method, call.path, params=call.params, json=call.json,
                                      headers=call.headers, timeout=timeout)
        return call.parse(response)

    async def whoami(self) -> dict[str, Any]:
        """The calling token: its name, scopes and limits."""
        body: dict[str, Any] = (await self.request("GET", "/v1/whoami")).json()
        return body


class AsyncContainers:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def list(self, *, prefix: str | None = None, status: Sequence[str] | None = None,
                   alive: bool | None = None, limit: int | None = None, cursor: str | None = None,
                   remote: str | None = None, project: str | None = None) -> Page[Container]:
        """One page of containers, sorted by name."""
        return await self._c._run(calls.containers_list(self._c.scope, prefix=prefix, status=status, alive=alive,
                                                        limit=limit, cursor=cursor, remote=remote, project=project))

    async def list_all(self, *, prefix: str | None = None, status: Sequence[str] | None = None,
                       alive: bool | None = None, remote: str | None = None,
                       project: str | None = None) -> builtins.list[Container]:
        """Every container, page after page."""
        out: builtins.list[Container] = []
        cursor: str | None = None
        while True:
            page = await self.list(prefix=prefix, status=status, alive=alive, limit=1000, cursor=cursor,
                                   remote=remote, project=project)
            out += page.items
            if not (cursor := page.next_cursor):
                return out

    async def get(self, name: str, *, remote: str | None = None, project: str | None = None) -> Container:
        return await self._c._run(calls.containers_get(self._c.scope, name, remote=remote, project=project))

    async def create(self, name: str, image: ImageArg, *, profiles: Sequence[str] | None = None,
                     config: Mapping[str, str] | None = None, devices: Mapping[str, Mapping[str, str]] | None = None,
                     start: bool = True, extra: Mapping[str, Any] | None = None, target: str | None = None,
                     wait: int = 0, idempotency_key: str | None = None, remote: str | None = None,
                     project: str | None = None) -> Job:
        """Job `container.create`; `image` is an alias or an image reference (`{"fingerprint": ...}`); `extra` adds
        any other field of the ContainerSpec (`metadata`, `user_data`, `constraints`...)."""
        return await self._c._run(calls.containers_create(
            self._c.scope, name, image, profiles=profiles, config=config, devices=devices, start=start, extra=extra,
            target=target, wait=wait, idempotency_key=idempotency_key, remote=remote, project=project),
            timeout=self._c.timeout + wait)

    async def delete(self, name: str, *, wait: int = 0, idempotency_key: str | None = None,
                     remote: str | None = None, project: str | None = None) -> Job:
        return await self._c._run(calls.containers_delete(self._c.scope, name, wait=wait,
                                                          idempotency_key=idempotency_key, remote=remote,
                                                          project=project), timeout=self._c.timeout + wait)

    async def _action(self, name: str, action: str, force: bool | None, timeout: int | None, wait: int,
                      idempotency_key: str | None, remote: str | None, project: str | None) -> Job:
        return await self._c._run(calls.containers_action(self._c.scope, name, action, force=force, timeout=timeout,
                                                          wait=wait, idempotency_key=idempotency_key, remote=remote,
                                                          project=project), timeout=self._c.timeout + wait)

    async def start(self, name: str, *, wait: int = 0, idempotency_key: str | None = None,
                    remote: str | None = None, project: str | None = None) -> Job:
        return await self._action(name, "start", None, None, wait, idempotency_key, remote, project)

    async def stop(self, name: str, *, force: bool | None = None, timeout: int | None = None, wait: int = 0,
                   idempotency_key: str | None = None, remote: str | None = None, project: str | None = None) -> Job:
        return await self._action(name, "stop", force, timeout, wait, idempotency_key, remote, project)

    async def restart(self, name: str, *, force: bool | None = None, timeout: int | None = None, wait: int = 0,
                      idempotency_key: str | None = None, remote: str | None = None,
                      project: str | None = None) -> Job:
        return await self._action(name, "restart", force, timeout, wait, idempotency_key, remote, project)

    async def exec(self, name: str, command: Sequence[str], *, environment: Mapping[str, str] | None = None,
                   cwd: str | None = None, user: int | None = None, group: int | None = None,
                   stdin: str | None = None, timeout: float | None = None, max_output_bytes: int | None = None,
                   wait: int = 0, idempotency_key: str | None = None, remote: str | None = None,
                   project: str | None = None) -> Job:
        """Job `container.exec`. A non-zero exit is a succeeded job: read `job.exec_result().exit_code`. Its output
        also comes as `output` messages of `jobs.stream(job)` while it runs."""
        return await self._c._run(calls.containers_exec(
            self._c.scope, name, command, environment=environment, cwd=cwd, user=user, group=group, stdin=stdin,
            timeout=timeout, max_output_bytes=max_output_bytes, wait=wait, idempotency_key=idempotency_key,
            remote=remote, project=project), timeout=self._c.timeout + wait)

    async def push(self, name: str, path: str, source: bytes | str | os.PathLike[str] | AsyncIterable[bytes], *,
                   mode: str | int | None = None, uid: int | None = None, gid: int | None = None,
                   remote: str | None = None, project: str | None = None) -> Written:
        """Upload to `path` in the container, streamed: `source` is the bytes, a local file's path, or an async
        iterable of chunks. `mode` is octal (`"0644"` or `0o644`)."""
        content: bytes | AsyncIterable[bytes]
        if isinstance(source, bytes):
            content = source
        elif isinstance(source, (str, os.PathLike)):
            content = _read_chunks(Path(source))
        else:
            content = source
        response = await self._c.request("PUT", f"/v1/containers/{seg(name)}/files",
                                         params=calls.files_params(self._c.scope, path, remote, project),
                                         headers=calls.file_headers(mode, uid, gid), content=content)
        return calls.written_of(response)

    async def pull(self, name: str, path: str, into: str | os.PathLike[str] | IO[bytes], *,
                   remote: str | None = None, project: str | None = None) -> int:
        """Download `path` from the container into a local file (a path or a binary file object), streamed;
        the number of bytes. A directory raises IsADirectoryError."""
        params = calls.files_params(self._c.scope, path, remote, project)
        try:
            async with self._c._http.stream("GET", f"/v1/containers/{seg(name)}/files", params=params) as r:
                if r.status_code >= 400:
                    await r.aread()
                    raise error_from_response(r)
                if is_directory_listing(r):
                    raise IsADirectoryError(f"{path} is a directory in {name}")
                if isinstance(into, (str, os.PathLike)):
                    with open(into, "wb") as f:  # noqa: ASYNC230 - small writes to a local file
                        return await _copy_to(r, f)
                return await _copy_to(r, into)
        except httpx.TransportError as exc:
            raise GatewayUnreachable(None, f"cannot reach the gateway at {self._c.base_url}: {exc!r}") from exc

    async def delete_file(self, name: str, path: str, *, remote: str | None = None,
                          project: str | None = None) -> None:
        await self._c._run(calls.files_delete(self._c.scope, name, path, remote=remote, project=project))


async def _read_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            yield chunk


async def _copy_to(response: httpx.Response, f: IO[bytes]) -> int:
    size = 0
    async for chunk in response.aiter_bytes(CHUNK):
        f.write(chunk)
        size += len(chunk)
    f.flush()
    return size


class AsyncJobs:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def list(self, *, status: str | None = None, kind: str | None = None, resource: str | None = None,
                   limit: int | None = None, cursor: str | None = None, remote: str | None = None,
                   project: str | None = None) -> Page[Job]:
        """One page of jobs, newest first."""
        return await self._c._run(calls.jobs_list(status=status, kind=kind, resource=resource, limit=limit,
                                                  cursor=cursor, remote=remote, project=project))

    async def get(self, job: Job | str, *, wait: int = 0) -> Job:
        """The job; with `wait` (seconds, at most 300), once it ends or the wait runs out."""
        return await self._c._run(calls.jobs_get(job_id_of(job), wait=wait), timeout=self._c.timeout + wait)

    async def cancel(self, job: Job | str, *, wait: int = 0) -> Job:
        """Cancel it (an exec's process is killed, a create rolls back...); 409 `GatewayError` if it had ended."""
        return await self._c._run(calls.jobs_cancel(job_id_of(job), wait=wait), timeout=self._c.timeout + wait)

    async def wait(self, job: Job | str, timeout: float | None = None, *, check: bool = False) -> Job:
        """The job once it has ended (long-polling the gateway); JobWaitTimeout when `timeout` seconds pass first.
        With `check`, a job that failed or was cancelled raises JobFailed or JobCancelled."""
        current = job if isinstance(job, Job) else None
        deadline = None if timeout is None else time.monotonic() + timeout
        while current is None or not current.ended:
            remaining = 300.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0 and current is not None:
                raise JobWaitTimeout(current, timeout or 0.0)
            current = await self.get(job_id_of(job), wait=max(0, min(300, math.ceil(remaining))))
            if not current.ended and deadline is not None and time.monotonic() >= deadline:
                raise JobWaitTimeout(current, timeout or 0.0)
        return raise_for_job(current) if check else current

    async def stream(self, job: Job | str, *, after: int | None = 0) -> AsyncIterator[JobMessage]:
        """The job's messages from its Server-Sent Events until `end` (its last message): `progress`, `status`,
        `output` (the token's own jobs), `snapshot`. From the first message the gateway still keeps (`after=0`),
        from the job as it is now (`after=None`), or after a seq. A dropped stream is resumed with
        `Last-Event-ID`: no message is repeated."""
        job_id = job_id_of(job)
        last = after
        failures = 0
        timeout = httpx.Timeout(self._c.timeout, read=STREAM_READ_TIMEOUT)
        while True:
            headers = {"Accept": "text/event-stream"}
            if last is not None:
                headers["Last-Event-ID"] = str(last)
            try:
                async with self._c._http.stream("GET", f"/v1/jobs/{seg(job_id)}/events", headers=headers,
                                                timeout=timeout) as r:
                    if r.status_code >= 400:
                        await r.aread()
                        raise error_from_response(r)
                    parser = SSEParser()
                    async for line in r.aiter_lines():
                        event = parser.feed(line)
                        if event is None:
                            continue
                        message = JobMessage.model_validate_json(event.data)
                        last, failures = message.seq, 0
                        yield message
                        if message.type == "end":
                            return
                cause: Exception | None = None
            except httpx.TransportError as exc:
                cause = exc
            failures += 1
            if failures > STREAM_RETRIES:
                raise GatewayUnreachable(None, f"the stream of job {job_id} kept dropping: {cause!r}") from cause
            await asyncio.sleep(backoff(failures))


class AsyncImages:
    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def list(self, *, limit: int | None = None, cursor: str | None = None, remote: str | None = None,
                   project: str | None = None) -> Page[Image]:
        return await self._c._run(calls.images_list(self._c.scope, limit=limit, cursor=cursor, remote=remote,
                                                    project=project))

    async def get(self, fingerprint: str, *, remote: str | None = None, project: str | None = None) -> Image:
        return await self._c._run(calls.images_get(self._c.scope, fingerprint, remote=remote, project=project))

    async def find(self, *, alias: str | None = None, series: str | None = None, arch: str | None = None,
                   sources: Sequence[str] | None = None, copy_local: bool = False, local_alias: str | None = None,
                   wait: int = 0, idempotency_key: str | None = None, remote: str | None = None,
                   project: str | None = None) -> Job:
        """Job `image.find` (`alias` or `series`); result `{fingerprint, source, alias, local}`."""
        return await self._c._run(calls.images_find(
            self._c.scope, alias=alias, series=series, arch=arch, sources=sources, copy_local=copy_local,
            local_alias=local_alias, wait=wait, idempotency_key=idempotency_key, remote=remote, project=project),
            timeout=self._c.timeout + wait)

    async def copy(self, *, image_source: str | None = None, server: str | None = None, alias: str | None = None,
                   fingerprint: str | None = None, protocol: str | None = None, aliases: Sequence[str] | None = None,
                   auto_update: bool = False, public: bool = False, wait: int = 0, idempotency_key: str | None = None,
                   remote: str | None = None, project: str | None = None) -> Job:
        """Job `image.copy` from a configured image source (or any `server`: admin)."""
        return await self._c._run(calls.images_copy(
            self._c.scope, image_source=image_source, server=server, alias=alias, fingerprint=fingerprint,
            protocol=protocol, aliases=aliases, auto_update=auto_update, public=public, wait=wait,
            idempotency_key=idempotency_key, remote=remote, project=project), timeout=self._c.timeout + wait)
