"""`/v1/containers/{name}/files?path=`: streamed download (a directory answers its listing), streamed upload of
the raw body, delete. No whole file is ever held in memory: bytes flow from LXD to the caller (and back) in
chunks.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.types import Receive, Scope, Send

from app.containers.router import WRITE, require_container
from app.http.deps import Backend, BackendDep, ContainerName
from app.http.errors import ProblemError, problem_responses
from app.http.pagination import PageDep, PageParams, paginate
from app.lxd.errors import BadRequest, LXDError, NotFound
from app.tokens.guard import enforce_container

router = APIRouter(prefix="/v1/containers/{name}/files", tags=["files"])

FilePath = Annotated[str, Query(pattern=r"^/[^\x00]*$", max_length=4096,
                                description="absolute path in the container", examples=["/etc/hostname"])]
CHUNK = 1 << 16


async def _under_way(b: Backend, name: str, exc: LXDError) -> ProblemError:
    """What a file request LXD failed means when the container stopped or went away meanwhile (LXD then answers
    with errors of its own, e.g. a reset connection or "Instance storage pool not found"): 404 when it is gone,
    409 when it no longer runs; LXD's error as it is when the container still runs."""
    try:
        state = await b.client.instances.state(name)
    except NotFound:
        return ProblemError(404, f"container {name!r} not found (it went away during the request)",
                            slug="container-not-found", lxd_error=exc.error)
    if state.status != "Running":
        return ProblemError(409, f"container {name!r} is {state.status or 'not running'} (it changed during "
                            "the request)", slug="container-not-running", lxd_error=exc.error)
    raise exc


class DirEntry(BaseModel):
    name: str = Field(examples=["hostname"])
    path: str = Field(examples=["/etc/hostname"])


class DirListing(BaseModel):
    """A directory's entries, sorted by name."""

    items: list[DirEntry]
    next_cursor: str | None = None


class Written(BaseModel):
    """What was written."""

    path: str = Field(examples=["/root/app.tar.gz"])
    size: int = Field(description="bytes written", examples=[1048576])
    sha256: str = Field(description="SHA-256 of the bytes written (hex)")


class FileDownload(Response):
    """Opens the file when sent: headers from LXD's, then the body chunk by chunk; a directory answers its
    listing as JSON instead."""

    def __init__(self, b: Backend, container: str, path: str, page: PageParams,
                 filters: dict[str, Any]) -> None:
        super().__init__()
        self.backend, self.client = b, b.client
        self.container, self.path, self.page, self.filters = container, path, page, filters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            opened = self.client.files.open(self.container, self.path)
            f = await opened.__aenter__()
        except NotFound:
            raise ProblemError(404, f"no file {self.path!r} in container {self.container!r}",
                               slug="file-not-found") from None
        except LXDError as exc:
            raise await _under_way(self.backend, self.container, exc) from None
        try:
            if f.entries is not None:
                base = self.path.rstrip("/")
                entries = [{"name": e, "path": f"{base}/{e}"} for e in f.entries]
                body = paginate(entries, self.page, key=lambda e: str(e["name"]), filters=self.filters)
                await JSONResponse(body)(scope, receive, send)
                return
            headers = [(b"content-type", b"application/octet-stream"),
                       (b"x-file-type", f.info.type.encode()), (b"x-file-mode", f.info.mode.encode()),
                       (b"x-file-uid", str(f.info.uid).encode()), (b"x-file-gid", str(f.info.gid).encode())]
            if f.info.size is not None:
                headers.append((b"content-length", str(f.info.size).encode()))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            async for chunk in f.iter_bytes(CHUNK):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await opened.__aexit__(None, None, None)


@router.get("", operation_id="files-get", summary="Download a file (or list a directory); needs `write`",
            dependencies=WRITE,
            responses={200: {"description": "the file's bytes (`X-File-Mode`, `X-File-Uid`, `X-File-Gid`, "
                                            "`X-File-Type` headers), or a directory's `{items, next_cursor}`",
                             "content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                 "format": "binary"}},
                                         "application/json": {"schema": DirListing.model_json_schema()}}},
                       **problem_responses(400, 401, 403, 404, 409, 422, 503)})
async def get_file(name: ContainerName, path: FilePath, request: Request, b: BackendDep, page: PageDep) -> Response:
    """Streamed; a directory answers its entries, sorted by name and paginated. It needs `write`, as every file
    (`/etc/shadow`, keys) is readable through it, and a `write` token could read them by exec anyway."""
    await require_container(b, name)
    await enforce_container(request, b, name)
    return FileDownload(b, name, path, page, {"name": name, "path": path, "remote": b.remote,
                                                      "project": b.project})


@router.put("", operation_id="files-put", summary="Upload a file (the raw body)", response_model=Written,
            dependencies=WRITE, responses=problem_responses(400, 401, 403, 404, 409, 413, 422, 503),
            openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {
                "schema": {"type": "string", "format": "binary"}}}}})
async def put_file(
    name: ContainerName, path: FilePath, request: Request, b: BackendDep,
    mode: Annotated[str | None, Header(alias="X-File-Mode", pattern=r"^0?[0-7]{3,4}$",
                                       description="octal mode, e.g. 0644", examples=["0644"])] = None,
    uid: Annotated[int | None, Header(alias="X-File-Uid", ge=0, description="owner uid")] = None,
    gid: Annotated[int | None, Header(alias="X-File-Gid", ge=0, description="owner gid")] = None,
) -> Written:
    """The body is streamed to LXD as it arrives (overwrites an existing file)."""
    await require_container(b, name)
    await enforce_container(request, b, name)
    digest = hashlib.sha256()
    size = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal size
        async for chunk in request.stream():
            if chunk:
                size += len(chunk)
                digest.update(chunk)
                yield chunk

    try:
        await b.client.files.put(name, path, body(), mode=mode, uid=uid, gid=gid)
    except NotFound:
        raise ProblemError(404, f"cannot write {path!r}: its directory does not exist in {name!r}",
                           slug="file-not-found") from None
    except LXDError as exc:
        raise await _under_way(b, name, exc) from None
    return Written(path=path, size=size, sha256=digest.hexdigest())


@router.delete("", operation_id="files-delete", summary="Delete a file", status_code=204, dependencies=WRITE,
               responses=problem_responses(400, 401, 403, 404, 409, 422, 503))
async def delete_file(name: ContainerName, path: FilePath, request: Request, b: BackendDep) -> Response:
    """Delete a file or an empty directory (never the root directory)."""
    if posixpath.normpath("/" + path.lstrip("/")) == "/":
        raise ProblemError(422, "query.path: the container's root directory cannot be deleted", slug="validation",
                           errors=[{"field": "query.path", "message": "the root directory cannot be deleted"}])
    await require_container(b, name)
    await enforce_container(request, b, name)
    try:
        try:
            await b.client.files.delete(name, path)
        except LXDError as exc:
            if isinstance(exc, NotFound | BadRequest):
                raise
            raise await _under_way(b, name, exc) from None
    except NotFound:
        raise ProblemError(404, f"no file {path!r} in container {name!r}", slug="file-not-found") from None
    except LXDError as exc:  # refused by the container's file system (in use, a mount point, not empty...)
        raise ProblemError(409, f"cannot delete {path!r}: {exc.error}", slug="file-in-use",
                           lxd_error=exc.error) from None
    return Response(status_code=204)
