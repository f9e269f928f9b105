"""`/v1/images` and `/v1/image-sources`: the local image store (list, read, export, aliases), finding OS images
on the configured image servers, copying, uploading and deleting images (jobs).

Uploads are never parsed as forms: the raw body is spooled to a file in the data directory while it is hashed,
then the job streams it to LXD. A split image, sent as `multipart/form-data` with a `metadata` part then a
`rootfs` part, is split into its two files as it streams in, by a parser that bounds each part's headers and the
number of parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, model_validator

from app.http.auth import TICKETS_ACCEPTED_WHEN_WATCHING
from app.http.cache import CACHE_HEADERS, answer, read_one, read_page, wants_live
from app.http.deps import AliasName, Backend, BackendDep, OwnImages, alias_name_error
from app.http.errors import ProblemError, problem_responses
from app.http.etag import Reader, Writer
from app.http.pagination import Page, PageDep, page_of
from app.http.watch import LastEventId, WatchQuery, watch_content, watch_stream
from app.images.mirror import ALIASES, IMAGES
from app.images.schemas import AliasOut, ImageOut
from app.jobs.models import Job
from app.jobs.starter import JobStarterDep, job_responses
from app.lxd.errors import LXDError, NotFound
from app.lxd.images import MultipartError, split_multipart
from app.mirror import HIT, Lookup, Record, Shaped
from app.settings import searched_sources
from app.store.tokens import Scope
from app.tokens.guard import enforce_image_server

router = APIRouter(tags=["images"])

FP_PATTERN = r"^[0-9a-fA-F]{1,64}$"
Fingerprint = Annotated[str, PathParam(pattern=FP_PATTERN, description="the image fingerprint, or a unique prefix "
                                       "of it", examples=["8e1c4b8e3d2a"])]
SPOOL_DIR = "uploads"
CHUNK = 1 << 20


class ImageSourceOut(BaseModel):
    name: str = Field(description="pass it in `sources` of image find, or as `source.image_source` of a copy",
                      examples=["cloud-images-releases"])
    url: str = Field(description="the image server", examples=["https://cloud-images.ubuntu.com/releases"])
    protocol: str = Field(description="`simplestreams`, `lxd` or `incus`", examples=["simplestreams"])
    position: int = Field(description="its place in the search order (0 first)", examples=[0])


class AliasCreate(BaseModel):
    name: AliasName = Field(min_length=1, max_length=255, pattern=r"^[^\s][^\x00-\x1f]*$",
                      description="the alias (may contain `/`)", examples=["apps/base"])
    target: str = Field(pattern=FP_PATTERN, description="the image's fingerprint, or a unique prefix of it",
                        examples=["8e1c4b8e3d2a"])
    description: str = Field("", description="free text", examples=["our base image"])


class FindRequest(BaseModel):
    """Give `series` (an OS series, e.g. `jammy`) or `alias` (an alias on the image servers)."""

    series: str | None = Field(None, pattern=r"^[a-z0-9.]+$", description="OS series; the local alias is "
                               "`juju/<series>/<arch>` (the `image_alias_template` setting)", examples=["jammy"])
    alias: str | None = Field(None, min_length=1, description="an alias on the image servers (instead of `series`)",
                              examples=[None])
    arch: str | None = Field(None, pattern=r"^[a-z0-9_]+$", description="architecture (default: the server's)",
                             examples=["amd64"])
    sources: list[str] | None = Field(None, description="names of configured image sources to search, in order "
                                      "(default: all, in the configured order)",
                                      examples=[["cloud-images-releases"]])
    copy_local: bool = Field(False, description="pull the image into the local store under the local alias",
                             examples=[True])
    local_alias: AliasName | None = Field(None, description="with `alias`: the local alias to use (default: the alias)",
                                    examples=[None])

    @model_validator(mode="after")
    def _one_of(self) -> FindRequest:
        if (self.series is None) == (self.alias is None):
            raise ValueError("give exactly one of series or alias")
        return self


class CopySource(BaseModel):
    """Where to copy from: a configured image source by name, or any `server` (admin only)."""

    image_source: str | None = Field(None, description="the name of a configured image source",
                                     examples=["cloud-images-releases"])
    server: str | None = Field(None, pattern=r"^https://", description="an image server URL; one that is not a "
                               "configured image source needs the admin scope (and the `image.any-source` policy)",
                               examples=[None])
    protocol: Literal["lxd", "incus", "simplestreams"] | None = Field(
        None, description="default: the image source's, else `lxd`", examples=["simplestreams"])
    alias: str | None = Field(None, description="the image's alias there", examples=["jammy/amd64"])
    fingerprint: str | None = Field(None, pattern=FP_PATTERN, description="or its fingerprint", examples=[None])
    certificate: str | None = Field(None, description="PEM certificate pinning an `lxd` server", examples=[None])

    @model_validator(mode="after")
    def _check(self) -> CopySource:
        if (self.image_source is None) == (self.server is None):
            raise ValueError("give exactly one of image_source or server")
        if not self.alias and not self.fingerprint:
            raise ValueError("give an alias or a fingerprint")
        return self


class CopyRequest(BaseModel):
    source: CopySource = Field(description="where the image is")
    aliases: list[AliasName] = Field(default_factory=list, description="local aliases to give it",
                               examples=[["juju/jammy/amd64"]])
    auto_update: bool = Field(False, description="keep it refreshed from the source", examples=[False])
    public: bool = Field(False, description="serve it to untrusted clients", examples=[False])


def _settings(request: Request) -> Any:
    return request.app.state.settings


async def _backend_name(b: Backend) -> str:
    """"lxd" or "incus" (as the remote last answered; "lxd" when it cannot say: the job reports why then)."""
    info = b.client.server.cached
    if info is not None:
        return info.environment.server or "lxd"
    try:
        return await b.client.server.backend()
    except LXDError:
        return "lxd"


def _source_specs(request: Request, names: list[str] | None, backend: str = "lxd") -> list[dict[str, Any]]:
    """The sources named (404 for an unknown one), else those that serve `backend` ("lxd" or "incus")."""
    configured = {s.name: s for s in _settings(request).image_sources}
    if names:
        unknown = [n for n in names if n not in configured]
        if unknown:
            raise ProblemError(404, f"no image source named {', '.join(map(repr, unknown))}",
                               slug="unknown-image-source", known=sorted(configured))
    chosen = searched_sources(list(configured.values()), names, backend)
    return [{"name": s.name, "url": s.url, "protocol": s.protocol,
             "certificate": s.certificate.read_text() if s.certificate else None} for s in chosen]


# -- sources and the store -----------------------------------------------------------------------------------------

@router.get("/v1/image-sources", summary="The configured image servers, in search order",
            response_model=Page[ImageSourceOut], operation_id="images-sources",
            responses=problem_responses(400, 401, 403, 422))
async def image_sources(request: Request, page: PageDep, _: Reader) -> Page[ImageSourceOut]:
    items = [ImageSourceOut(name=s.name, url=s.url, protocol=s.protocol, position=i)
             for i, s in enumerate(_settings(request).image_sources)]
    return page_of(items, page, key=lambda s: f"{s.position:06d}")


def _plain(rec: Record) -> tuple[Shaped, bytes, str]:
    return rec.view("", None)


@router.get("/v1/images", summary="List local images", response_model=Page[ImageOut], operation_id="images-list",
            responses={200: {"headers": CACHE_HEADERS, **watch_content("Image")},
                       304: {"description": "not modified since the `If-None-Match` ETag"},
                       **problem_responses(400, 401, 403, 404, 422, 503)},
            openapi_extra=TICKETS_ACCEPTED_WHEN_WATCHING)
async def list_images(request: Request, backend: BackendDep, page: PageDep, _: Reader, watch: WatchQuery = False,
                      last_event_id: LastEventId = None) -> Response:
    """Images sorted by fingerprint, from the read model while it is in sync (`X-Gateway-Cache`, `Age`).
    `watch=true` streams changes as Server-Sent Events instead."""
    b = backend
    if watch:
        return await watch_stream(request, b.mirror, b.remote, b.project, IMAGES, client=b.client, view=_plain,
                                  last_event_id=last_event_id)
    return await read_page(request, b.mirror, b.remote, b.project, IMAGES, client=b.client, view=_plain,
                           page=page, filters=b.filters(), key=lambda d: str(d.get("fingerprint")))


@router.get("/v1/images/aliases", summary="List image aliases", response_model=Page[AliasOut],
            operation_id="images-aliases-list",
            responses={200: {"headers": CACHE_HEADERS}, 304: {"description": "not modified since the "
                                                                          "`If-None-Match` ETag"},
                       **problem_responses(400, 401, 403, 404, 422, 503)})
async def list_aliases(request: Request, backend: BackendDep, page: PageDep, _: Reader) -> Response:
    """Aliases sorted by name, from the read model while it is in sync."""
    b = backend
    return await read_page(request, b.mirror, b.remote, b.project, ALIASES, client=b.client, view=_plain,
                           page=page, filters=b.filters())


@router.post("/v1/images/aliases", summary="Create an image alias", status_code=201, response_model=AliasOut,
             operation_id="images-aliases-create", responses=problem_responses(401, 403, 404, 409, 422, 503))
async def create_alias(body: AliasCreate, backend: BackendDep, response: Response,
                       _: Writer, _own: OwnImages) -> AliasOut:
    image = await backend.client.images.get(body.target.lower())
    with contextlib.suppress(NotFound):
        existing = await backend.client.images.alias(body.name)
        raise ProblemError(409, f"alias {body.name!r} exists (it points at {existing.target})", slug="exists")
    try:
        await backend.client.images.create_alias(body.name, image.fingerprint, description=body.description)
    finally:
        _touch(backend)
    response.headers["Location"] = f"/v1/images/aliases/{quote(body.name, safe='/')}"  # any character, URL-encoded
    return AliasOut.of(await backend.client.images.alias(body.name))


@router.delete("/v1/images/aliases/{name:path}", summary="Delete an image alias (names may contain `/`)",
               status_code=204, operation_id="images-aliases-delete",
               responses=problem_responses(401, 403, 404, 422, 503))
async def delete_alias(name: Annotated[str, PathParam(description="the alias; the rest of the path",
                                                      examples=["juju/jammy/amd64"])],
                       backend: BackendDep, _: Writer, _own: OwnImages) -> Response:
    if error := alias_name_error(name):
        raise ProblemError(422, error, slug="invalid-alias-name")
    try:
        await backend.client.images.delete_alias(name)
    finally:
        _touch(backend)
    return Response(status_code=204)


def _touch(b: Backend) -> None:
    """An alias changed through the gateway: the next read of images or aliases waits for them to be read again."""
    b.mirror.touch(b.remote, b.project, IMAGES)
    b.mirror.touch(b.remote, b.project, ALIASES)


@router.get("/v1/images/{fingerprint}", summary="A local image (a unique fingerprint prefix is accepted)",
            response_model=ImageOut, operation_id="images-get", responses=problem_responses(401, 403, 404, 422, 503))
async def get_image(fingerprint: Fingerprint, request: Request, backend: BackendDep, _: Reader) -> Response:
    """The image, from the read model while it is in sync; the `ETag` is the gateway's (`If-None-Match`: 304)."""
    b, fp = backend, fingerprint.lower()
    if len(fp) < 64 and not wants_live(request):
        listing = await b.mirror.listing(b.remote, b.project, IMAGES, client=b.client)
        matches = [r for r in listing.records if str(r.data.get("fingerprint", "")).startswith(fp)]
        if listing.source == HIT and len(matches) == 1:
            return answer(request, Lookup(matches[0], HIT), _plain)
        if listing.source == HIT and not matches:
            raise ProblemError(404, f"image {fingerprint!r} not found", slug="not-found")
        # several images share the prefix (or the model is not in sync): LXD answers
        fp = (await b.client.images.get(fp)).fingerprint
    lk = await read_one(request, b.mirror, b.remote, b.project, IMAGES, fp, client=b.client,
                        missing=ProblemError(404, f"image {fingerprint!r} not found", slug="not-found"))
    return answer(request, lk, _plain)


@router.get("/v1/images/{fingerprint}/export", summary="Download an image (streamed)",
            operation_id="images-export", response_class=StreamingResponse,
            description="A unified image answers its tarball; a split image answers LXD's `multipart/form-data` "
                        "body (a `metadata` part, then a `rootfs` part). A private image needs `write` (it may be "
                        "a published container, files and all); a public one `read`.",
            responses={200: {"description": "the image file(s)",
                             "content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                 "format": "binary"}},
                                         "multipart/form-data": {"schema": {"type": "string", "format": "binary"}}}},
                       **problem_responses(401, 403, 404, 422, 503)})
async def export_image(fingerprint: Fingerprint, backend: BackendDep, reader: Reader) -> StreamingResponse:
    image = await backend.client.images.get(fingerprint.lower())
    if not image.public and not reader.has(Scope.write):
        raise ProblemError(403, "exporting a private image needs the 'write' scope: a published container's image "
                                "holds its files")
    stack = contextlib.AsyncExitStack()
    export = await stack.enter_async_context(backend.client.images.export(image.fingerprint))

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in export.iter_bytes(CHUNK):
                yield chunk
        finally:
            await stack.aclose()

    headers = {"Content-Disposition": f'attachment; filename="{export.filename or image.fingerprint + ".tar.gz"}"'}
    if export.size is not None:
        headers["Content-Length"] = str(export.size)
    return StreamingResponse(body(), media_type=export.content_type, headers=headers)


# -- jobs ----------------------------------------------------------------------------------------------------------

@router.post("/v1/images/find", summary="Find an OS image (local alias first, then each source in order)",
             status_code=202, response_model=Job, operation_id="images-find",
             description="Job `image.find`. Progress `Retrieving image: N%` while a copy downloads. Result "
                         "`{fingerprint, source, alias, local}`: `source` is the image source it came from (null "
                         "for a local alias hit), `local` whether it is in the local store.",
             responses=job_responses(401, 403, 404))
async def find_image(body: FindRequest, backend: BackendDep, request: Request, jobs: JobStarterDep,
                     _: Writer, _own: OwnImages) -> Response:
    specs = _source_specs(request, body.sources, await _backend_name(backend))
    params = {**body.model_dump(), "source_specs": specs}
    return await jobs.start("image.find", params=params, resource="/v1/images", remote=backend.remote,
                            project=backend.project)


@router.post("/v1/images", summary="Copy an image from an image server", status_code=202, response_model=Job,
             operation_id="images-copy",
             description="Job `image.copy`; cancelling it cancels LXD's download. A `server` that is not a "
                         "configured image source needs the admin scope and the `image.any-source` policy.",
             responses=job_responses(401, 403, 404))
async def copy_image(body: CopyRequest, backend: BackendDep, request: Request, jobs: JobStarterDep,
                     principal: Writer, _own: OwnImages) -> Response:
    src = body.source
    certificate = src.certificate
    if src.image_source is not None:
        spec = _source_specs(request, [src.image_source])[0]
        server, protocol = spec["url"], src.protocol or spec["protocol"]
        certificate = certificate or spec["certificate"]
    else:
        assert src.server is not None
        server, protocol = src.server, src.protocol
        configured = [s.url for s in _settings(request).image_sources]
        if server.rstrip("/") not in {c.rstrip("/") for c in configured}:
            if not principal.has(Scope.admin):
                raise ProblemError(403, "copying from a server that is not a configured image source needs the "
                                   "'admin' scope", slug="forbidden")
            enforce_image_server(request, principal, server, configured)
    params = {"server": server, "protocol": protocol, "alias": src.alias, "fingerprint": src.fingerprint,
              "certificate": certificate, "aliases": body.aliases, "auto_update": body.auto_update,
              "public": body.public}
    return await jobs.start("image.copy", params=params, resource="/v1/images", remote=backend.remote,
                            project=backend.project)


class _Body:
    """The request body as it streams in, hashed and counted on the way: (`sha256`, `size`) once read."""

    def __init__(self, request: Request) -> None:
        self._request = request
        self._digest = hashlib.sha256()
        self.size = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._request.stream():
            self._digest.update(chunk)
            self.size += len(chunk)
            yield chunk

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


async def _write(path: Path, chunks: AsyncIterator[bytes]) -> None:
    """`chunks` written to `path` in writes of about CHUNK bytes."""
    f = await asyncio.to_thread(open, path, "wb")
    try:
        buf = bytearray()
        async for chunk in chunks:
            buf += chunk
            if len(buf) >= CHUNK:
                await asyncio.to_thread(f.write, bytes(buf))
                buf.clear()
        if buf:
            await asyncio.to_thread(f.write, bytes(buf))
    finally:
        await asyncio.to_thread(f.close)


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    f = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            yield chunk
    finally:
        await asyncio.to_thread(f.close)


async def _split(body: AsyncIterator[bytes], boundary: str, directory: Path) -> tuple[list[Path], str]:
    """A multipart body split, as it streams in, into its `metadata` and `rootfs` files; LXD's fingerprint of
    the pair. The parser bounds each part's headers and the number of parts (400 past them)."""
    parts: dict[str, Path] = {}
    handles: dict[str, Any] = {}
    try:
        async for name, _filename, data in split_multipart(body, boundary):
            key = "rootfs" if name in ("rootfs", "rootfs.img") else name
            if key not in ("metadata", "rootfs"):
                continue
            if key not in handles:
                parts[key] = directory / key
                handles[key] = await asyncio.to_thread(open, parts[key], "wb")
            await asyncio.to_thread(handles[key].write, data)
    except MultipartError as exc:
        raise ProblemError(400, f"the split image upload is unusable: {exc}", slug="bad-upload") from None
    finally:
        for h in handles.values():
            await asyncio.to_thread(h.close)
    if set(parts) != {"metadata", "rootfs"}:
        raise ProblemError(400, "a split image upload needs a `metadata` part and a `rootfs` part",
                           slug="bad-upload")
    digest = hashlib.sha256()
    for key in ("metadata", "rootfs"):
        async for chunk in _file_chunks(parts[key]):
            digest.update(chunk)
    return [parts["metadata"], parts["rootfs"]], digest.hexdigest()


@router.post("/v1/images/upload", summary="Upload an image (streamed)", status_code=202, response_model=Job,
             operation_id="images-upload",
             description="Job `image.import`. The body is a unified image tarball (`application/octet-stream`) "
                         "or a split image (`multipart/form-data`: a `metadata` part, then a `rootfs` part). It is "
                         "spooled to disk, never held in memory. With `Idempotency-Key`, send `Content-SHA256` (the "
                         "body's sha256); a body whose sha256 differs from that header is refused (400).",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                 "multipart/form-data": {"schema": {"type": "object", "properties": {
                     "metadata": {"type": "string", "format": "binary"},
                     "rootfs": {"type": "string", "format": "binary"}}}}}}},
             responses=job_responses(400, 401, 403, 404, 413, 415))
async def upload_image(
    request: Request, backend: BackendDep, jobs: JobStarterDep, _: Writer, _own: OwnImages,
    aliases: Annotated[list[AliasName] | None, Query(description="aliases to give the image (repeatable)",
                                               examples=[["apps/base"]])] = None,
    public: Annotated[bool, Query(description="serve it to untrusted clients")] = False,
    filename: Annotated[str | None, Query(description="the file name LXD records",
                                          examples=["base.tar.gz"])] = None,
) -> Response:
    ctype = request.headers.get("content-type", "application/octet-stream")
    media = ctype.split(";")[0].strip().lower()
    if media not in ("application/octet-stream", "multipart/form-data"):
        raise ProblemError(415, "send the image as application/octet-stream (unified) or multipart/form-data "
                           "(split: metadata, rootfs)", slug="unsupported-media-type")
    params: dict[str, Any] = {"aliases": aliases or [], "public": public, "filename": filename}
    directory = _settings(request).data_dir / SPOOL_DIR / secrets.token_hex(12)

    async def spool() -> None:
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
        body = _Body(request)
        if media == "multipart/form-data":
            boundary = next((v.strip().strip('"') for k, _, v in
                             (p.strip().partition("=") for p in ctype.split(";")[1:]) if k.lower() == "boundary"), "")
            if not boundary:
                raise ProblemError(400, "multipart/form-data without a boundary", slug="bad-upload")
            files, fingerprint = await _split(body.chunks(), boundary, directory)
        else:
            await _write(directory / "body", body.chunks())
            files, fingerprint = [directory / "body"], body.sha256
        if body.size == 0:
            raise ProblemError(400, "the upload is empty", slug="bad-upload")
        claimed = request.headers.get("content-sha256")
        if claimed and claimed.strip().lower() != body.sha256:
            raise ProblemError(400, f"the body's sha256 is {body.sha256}, Content-SHA256 says {claimed}",
                               slug="content-sha256-mismatch")
        params.update(files=[str(f) for f in files], fingerprint=fingerprint,
                      sizes=[(await asyncio.to_thread(f.stat)).st_size for f in files])

    try:
        return await jobs.start("image.import", params=params, resource="/v1/images", remote=backend.remote,
                                project=backend.project, precheck=spool, upload=True)
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, directory, True)
        raise
    finally:
        if not params.get("files"):  # a replay of an earlier upload: nothing was spooled for a job
            await asyncio.to_thread(shutil.rmtree, directory, True)


@router.delete("/v1/images/{fingerprint}", summary="Delete an image", status_code=202, response_model=Job,
               operation_id="images-delete", description="Job `image.delete`; 404 at once for a missing image.",
               responses=job_responses(401, 403, 404))
async def delete_image(fingerprint: Fingerprint, backend: BackendDep,
                       jobs: JobStarterDep, _: Writer, _own: OwnImages) -> Response:
    params = {"fingerprint": fingerprint.lower()}

    async def exists() -> None:  # 404 at once; the job deletes the image by its full fingerprint
        params["fingerprint"] = (await backend.client.images.get(params["fingerprint"])).fingerprint

    return await jobs.start("image.delete", params=params, resource=f"/v1/images/{fingerprint.lower()}",
                            remote=backend.remote, project=backend.project, precheck=exists)

