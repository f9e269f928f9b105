"""Images: list, get (by a unique fingerprint prefix), aliases, streamed upload and export, copy, publish, delete.

Uploads are streamed from disk or from an async iterator, never held in memory: a unified image is one
`application/octet-stream` body, a split image a `multipart/form-data` body whose `metadata` part comes first and
whose `rootfs` (or `rootfs.img` for a VM) part follows. Upload headers follow the backend (`X-LXD-*` or
`X-Incus-*`).

A copy from another server (`lxd`/`incus` or `simplestreams` protocol) runs as an operation that reports
progress and can be cancelled while it downloads. LXD 5.0 does not add the requested aliases when the image
already exists locally; `copy` adds (or moves) them itself once the operation has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from pydantic import Field
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser

from app.lxd.envelope import decode
from app.lxd.errors import Conflict, LXDError, NotFound
from app.lxd.models import Progress, Tagged
from app.lxd.operations import Operation
from app.lxd.resource import Resource, SubAPI, found, given, if_match, list_params, object_path

CHUNK = 1 << 16

ImageSource = str | os.PathLike[str] | AsyncIterable[bytes]
"""Where upload bytes come from: a file path (streamed from disk) or an async iterator of chunks."""

UploadProgress = Callable[[int, int | None], Any]
"""Called as bytes leave: `(sent, total)`; `total` is None for an iterator of unknown length."""

ProgressCallback = Callable[[Progress], Any]
"""Called with each progress update of a server-side operation (download, pack, unpack)."""


class ImageAliasRef(Resource):
    name: str
    description: str = ""


class ImageAlias(Resource, Tagged):
    """`GET /1.0/images/aliases/<name>`."""

    name: str
    target: str = ""
    description: str = ""
    type: str = ""


class ImageSourceInfo(Resource):
    alias: str = ""
    certificate: str = ""
    protocol: str = ""
    server: str = ""
    image_type: str = ""


class Image(Resource, Tagged):
    """`GET /1.0/images/<fingerprint>`; `etag` is the ETag to pass back on update."""

    fingerprint: str
    filename: str = ""
    size: int = 0
    architecture: str = ""
    type: str = "container"
    public: bool = False
    auto_update: bool = False
    cached: bool = False
    properties: dict[str, str] = Field(default_factory=dict)
    aliases: list[ImageAliasRef] = Field(default_factory=list)
    profiles: list[str] = Field(default_factory=list)
    created_at: datetime | None = None
    uploaded_at: datetime | None = None
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    update_source: ImageSourceInfo | None = None
    project: str = ""

    @property
    def alias_names(self) -> list[str]:
        return [a.name for a in self.aliases]


def alias_path(name: str) -> str:
    """The URL of an alias; names may hold `/` and spaces, so every reserved character is encoded."""
    return f"/1.0/images/aliases/{quote(name, safe='')}"


def image_path(fingerprint: str) -> str:
    return object_path("images", fingerprint)


async def _file_chunks(path: Path, sent: list[int], total: int | None,
                       on_progress: UploadProgress | None) -> AsyncIterator[bytes]:
    """A file's bytes in chunks, read in a worker thread so the event loop never blocks on disk."""
    f = await asyncio.to_thread(open, path, "rb")
    try:
        while True:
            chunk = await asyncio.to_thread(f.read, 1 << 20)
            if not chunk:
                return
            for i in range(0, len(chunk), CHUNK * 4):
                piece = chunk[i:i + CHUNK * 4]
                sent[0] += len(piece)
                yield piece
                if on_progress is not None:
                    on_progress(sent[0], total)
    finally:
        await asyncio.to_thread(f.close)


async def _iter_chunks(data: AsyncIterable[bytes], sent: list[int], total: int | None,
                       on_progress: UploadProgress | None) -> AsyncIterator[bytes]:
    async for chunk in data:
        if not chunk:
            continue
        sent[0] += len(chunk)
        yield bytes(chunk)
        if on_progress is not None:
            on_progress(sent[0], total)


def _size_of(source: ImageSource) -> int | None:
    if isinstance(source, str | os.PathLike):
        return Path(source).stat().st_size
    return None


def _chunks(source: ImageSource, sent: list[int], total: int | None,
            on_progress: UploadProgress | None) -> AsyncIterator[bytes]:
    if isinstance(source, str | os.PathLike):
        return _file_chunks(Path(source), sent, total, on_progress)
    return _iter_chunks(source, sent, total, on_progress)


async def _multipart(parts: list[tuple[str, str, ImageSource]], boundary: str, sent: list[int], total: int | None,
                     on_progress: UploadProgress | None) -> AsyncIterator[bytes]:
    """A `multipart/form-data` body, streamed part by part, in the order given."""
    for name, filename, source in parts:
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode()
        yield head
        async for chunk in _chunks(source, sent, total, on_progress):
            yield chunk
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def _filename(source: ImageSource, default: str) -> str:
    return Path(source).name if isinstance(source, str | os.PathLike) else default


class ImageExport:
    """An image being exported: `filename`, `multipart` (split image), and its bytes via `iter_bytes()`."""

    def __init__(self, response: httpx.Response) -> None:
        self._r = response
        self.content_type = response.headers.get("content-type", "application/octet-stream")
        self.multipart = self.content_type.startswith("multipart/")
        disposition = response.headers.get("content-disposition", "")
        self.filename = _disposition_filename(disposition)
        length = response.headers.get("content-length")
        self.size = int(length) if length and length.isdigit() else None

    def iter_bytes(self, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
        """The raw body (for a split image: the multipart body; see `Images.export_to` to split it)."""
        return self._r.aiter_bytes(chunk_size)

    @property
    def boundary(self) -> str:
        for part in self.content_type.split(";"):
            k, _, v = part.strip().partition("=")
            if k.lower() == "boundary":
                return v.strip('"')
        raise LXDError("multipart export without a boundary")


def _disposition_filename(value: str) -> str:
    for part in value.split(";"):
        k, _, v = part.strip().partition("=")
        if k.lower() == "filename":
            return os.path.basename(v.strip().strip('"'))
    return ""


MAX_PART_HEADER_BYTES = 16 * 1024
"""Largest head (all header lines) of one part of a multipart body."""

MAX_PARTS = 4
"""Most parts in a multipart image body (LXD's has two: `metadata`, then `rootfs` or `rootfs.img`)."""


class MultipartError(ValueError):
    """A multipart body that is malformed, or larger in its structure than its limits allow."""


async def split_multipart(chunks: AsyncIterable[bytes], boundary: str, *,
                          max_part_header_bytes: int = MAX_PART_HEADER_BYTES,
                          max_parts: int = MAX_PARTS) -> AsyncIterator[tuple[str, str, bytes]]:
    """Stream a multipart body as `(part name, filename, data chunk)` without holding a part in memory.

    Parsed by python-multipart in one pass (linear in the body): a part's head may hold at most
    `max_part_header_bytes`, the body at most `max_parts` parts; past that, or for a body that is not well-formed
    (no closing boundary included), `MultipartError` is raised as soon as it is seen.
    """
    parts = 0
    head = 0
    field = bytearray()
    value = bytearray()
    name = filename = ""
    ready: list[tuple[str, str, bytes]] = []
    ended = False

    def part_begin() -> None:
        nonlocal parts, head, name, filename
        parts += 1
        if parts > max_parts:
            raise MultipartError(f"more than {max_parts} parts")
        head, name, filename = 0, "", ""

    def header_bytes(into: bytearray, data: bytes, start: int, end: int) -> None:
        nonlocal head
        head += end - start
        if head > max_part_header_bytes:
            raise MultipartError(f"a part's headers are larger than {max_part_header_bytes} bytes")
        into += data[start:end]

    def header_end() -> None:
        nonlocal name, filename
        if bytes(field).strip().lower() == b"content-disposition":
            name, filename = _disposition_names(value.decode("utf-8", errors="replace"))
        field.clear()
        value.clear()

    def part_data(data: bytes, start: int, end: int) -> None:
        if end > start:
            ready.append((name, filename, data[start:end]))

    def end() -> None:
        nonlocal ended
        ended = True

    try:
        parser = MultipartParser(boundary.encode("latin-1"), {
            "on_part_begin": part_begin,
            "on_header_field": lambda d, s, e: header_bytes(field, d, s, e),
            "on_header_value": lambda d, s, e: header_bytes(value, d, s, e),
            "on_header_end": header_end,
            "on_part_data": part_data,
            "on_end": end,
        }, max_header_size=max_part_header_bytes)
    except (FormParserError, UnicodeEncodeError) as exc:
        raise MultipartError(f"unusable boundary: {exc}") from None
    async for chunk in chunks:
        if ended:
            continue  # the epilogue after the closing boundary is ignored
        try:
            parser.write(chunk)
        except FormParserError as exc:
            raise MultipartError(f"malformed multipart body: {exc}") from None
        for item in ready:
            yield item
        ready.clear()
    if not ended:
        raise MultipartError("the multipart body ended before its closing boundary")


def _file_name(name: str) -> str:
    """A part's name as a plain file name: its last path component; `MultipartError` when nothing is left."""
    base = os.path.basename(name)
    if base in ("", ".", ".."):
        raise MultipartError(f"a part named {name!r} has no usable file name")
    return base


def _disposition_names(value: str) -> tuple[str, str]:
    """`name` and `filename` (its last path component) of a Content-Disposition header value."""
    name = filename = ""
    for item in value.split(";"):
        k, _, v = item.strip().partition("=")
        if k == "name":
            name = v.strip('"')
        elif k == "filename":
            filename = os.path.basename(v.strip('"'))
    return name, filename


class Images(SubAPI):
    """`client.images`. Methods that run an LXD operation wait for it unless `wait=False`."""

    # ------------------------------------------------------------------------------------------ read

    async def list(self, *, filter: str | None = None, all_projects: bool = False,
                   project: str | None = None) -> list[Image]:
        params = list_params(filter=filter, all_projects=all_projects)
        env = await self._client.request("GET", "/1.0/images", params=params, project=project)
        return [Image.model_validate(i) for i in env.metadata or []]

    async def get(self, fingerprint: str, *, project: str | None = None) -> Image:
        """The image whose fingerprint is (or starts with) `fingerprint`; `NotFound` when none or not unique."""
        env = await self._client.request("GET", image_path(fingerprint), project=project)
        return Image.from_envelope(env)

    async def get_by_alias(self, alias: str, *, project: str | None = None) -> Image:
        return await self.get((await self.alias(alias, project=project)).target, project=project)

    async def exists(self, fingerprint: str, *, project: str | None = None) -> bool:
        return await found(self.get(fingerprint, project=project))

    async def update(self, fingerprint: str, body: dict[str, Any], *, etag: str | None = None,
                     project: str | None = None) -> Operation:
        """PUT (replace `auto_update`, `properties`, `public`, `expires_at`, `profiles`); `etag` → If-Match."""
        return await self._client.mutate("PUT", image_path(fingerprint), json=body, headers=if_match(etag),
                                         project=project)

    async def patch(self, fingerprint: str, body: dict[str, Any], *, etag: str | None = None,
                    project: str | None = None) -> Operation:
        return await self._client.mutate("PATCH", image_path(fingerprint), json=body, headers=if_match(etag),
                                         project=project)

    async def delete(self, fingerprint: str, *, project: str | None = None, wait: bool = True,
                     timeout: float | None = None) -> Operation:
        return await self._client.mutate("DELETE", image_path(fingerprint), project=project, wait=wait,
                                         timeout=timeout)

    # ------------------------------------------------------------------------------------------ aliases

    async def aliases(self, *, project: str | None = None) -> list[ImageAlias]:
        env = await self._client.request("GET", "/1.0/images/aliases", params={"recursion": 1}, project=project)
        return [ImageAlias.model_validate(a) for a in env.metadata or []]

    async def alias(self, name: str, *, project: str | None = None) -> ImageAlias:
        env = await self._client.request("GET", alias_path(name), project=project)
        return ImageAlias.from_envelope(env)

    async def create_alias(self, name: str, fingerprint: str, *, description: str = "",
                           project: str | None = None) -> None:
        """Point a new alias at an image; `Conflict` when the alias exists."""
        await self._client.mutate("POST", "/1.0/images/aliases",
                                  json={"name": name, "target": fingerprint, "description": description},
                                  project=project)

    async def update_alias(self, name: str, fingerprint: str, *, description: str = "", etag: str | None = None,
                           project: str | None = None) -> None:
        """Point an existing alias at another image (PUT)."""
        await self._client.mutate("PUT", alias_path(name), json={"target": fingerprint, "description": description},
                                  headers=if_match(etag), project=project)

    async def rename_alias(self, name: str, new_name: str, *, project: str | None = None) -> None:
        """Rename an alias in one step (LXD 5.0 takes about 10 s to answer this call)."""
        await self._client.mutate("POST", alias_path(name), json={"name": new_name}, project=project)

    async def delete_alias(self, name: str, *, project: str | None = None) -> None:
        await self._client.mutate("DELETE", alias_path(name), project=project)

    async def ensure_aliases(self, fingerprint: str, aliases: list[str], *, project: str | None = None) -> None:
        """Make each alias point at `fingerprint`: create it, or move it when it points elsewhere."""
        for name in aliases:
            try:
                current = await self.alias(name, project=project)
            except NotFound:
                try:
                    await self.create_alias(name, fingerprint, project=project)
                    continue
                except Conflict:  # created meanwhile by someone else
                    current = await self.alias(name, project=project)
            if current.target != fingerprint:
                await self.update_alias(name, fingerprint, description=current.description, project=project)

    # ------------------------------------------------------------------------------------------ upload

    async def _headers(self, *, public: bool, filename: str | None, fingerprint: str | None,
                       properties: dict[str, str] | None, profiles: list[str] | None) -> dict[str, str]:
        prefix = await self._client.server.header_prefix()
        headers = {f"{prefix}public": "1" if public else "0"}
        if filename:
            headers[f"{prefix}filename"] = filename
        if fingerprint:
            headers[f"{prefix}fingerprint"] = fingerprint
        if properties:
            headers[f"{prefix}properties"] = urlencode(properties)
        if profiles:
            headers[f"{prefix}profiles"] = urlencode([("profile", p) for p in profiles])
        return headers

    async def upload(self, image: ImageSource, *, rootfs: ImageSource | None = None, vm: bool = False,
                     aliases: list[str] | None = None, public: bool = False, fingerprint: str | None = None,
                     properties: dict[str, str] | None = None, profiles: list[str] | None = None,
                     filename: str | None = None, on_progress: UploadProgress | None = None,
                     project: str | None = None, wait: bool = True, timeout: float | None = None) -> Image | Operation:
        """Upload a unified image (`image` only) or a split one (`image` = metadata, `rootfs` = root filesystem).

        Both are streamed (from a path or an async iterator). `fingerprint`, when given, is checked by LXD.
        `on_progress(sent, total)` follows the upload. Returns the `Image` (the `Operation` with `wait=False`).
        """
        sent = [0]
        if rootfs is None:
            total = _size_of(image)
            content: AsyncIterator[bytes] = _chunks(image, sent, total, on_progress)
            ctype = "application/octet-stream"
            name = filename or _filename(image, "image.tar.gz")
        else:
            sizes = [_size_of(image), _size_of(rootfs)]
            total = None if None in sizes else sum(s or 0 for s in sizes)
            boundary = f"lxdimage{secrets.token_hex(12)}"
            parts = [("metadata", _filename(image, "metadata.tar.gz"), image),
                     ("rootfs.img" if vm else "rootfs", _filename(rootfs, "rootfs.img" if vm else "rootfs"), rootfs)]
            content = _multipart(parts, boundary, sent, total, on_progress)
            ctype = f"multipart/form-data; boundary={boundary}"
            name = filename or ""
        headers = await self._headers(public=public, filename=name, fingerprint=fingerprint, properties=properties,
                                      profiles=profiles)
        headers["Content-Type"] = ctype
        op = await self._client.mutate("POST", "/1.0/images", content=content, headers=headers, project=project,
                                       wait=False, long=True)
        if not wait:
            return op
        await op.wait(timeout)
        fp = str(op.metadata.get("fingerprint") or "")
        if aliases:
            await self.ensure_aliases(fp, aliases, project=project)
        return await self.get(fp, project=project)

    # ------------------------------------------------------------------------------------------ copy

    async def copy(self, *, server: str, alias: str | None = None, fingerprint: str | None = None,
                   protocol: str | None = None, certificate: str | None = None, secret: str | None = None,
                   image_type: str | None = None, aliases: list[str] | None = None, public: bool = False,
                   auto_update: bool = False, on_progress: ProgressCallback | None = None,
                   project: str | None = None, target: str | None = None, wait: bool = True,
                   timeout: float | None = None) -> Image | Operation:
        """Copy an image (by `alias` or `fingerprint`) from a remote server into this one.

        `protocol` is `lxd` or `incus` (one API: sent as this daemon's name) or `simplestreams`; `certificate`
        (PEM) pins an `lxd` remote, else the remote must be public. `aliases` are given to the local copy, also
        when the image was already here (LXD 5.0 alone does not add them then). With `wait=False` the
        `Operation` is returned at once: follow `op.progress()`, `op.cancel()` it while it downloads (LXD 5.0
        marks the operation cancellable once the download has started), then call `ensure_aliases`.
        Cancelling the task awaiting `copy` cancels the download on the server.
        """
        if not alias and not fingerprint:
            raise ValueError("copy needs an alias or a fingerprint")
        source: dict[str, Any] = {"type": "image", "mode": "pull", "server": server,
                                  "protocol": await self._client.server.pull_protocol(protocol)}
        source |= given(alias=alias, fingerprint=fingerprint, certificate=certificate, secret=secret,
                        image_type=image_type)
        body: dict[str, Any] = {"source": source, "public": public, "auto_update": auto_update}
        body |= given(aliases=[{"name": a} for a in aliases or ()])
        params = {"target": target} if target else None
        op = await self._client.mutate("POST", "/1.0/images", json=body, params=params, project=project, wait=False)
        if not wait:
            return op
        await _wait_with_progress(op, on_progress, timeout)
        fp = str(op.metadata.get("fingerprint") or fingerprint or "")
        if aliases:
            await self.ensure_aliases(fp, aliases, project=project)
        return await self.get(fp, project=project)

    # ------------------------------------------------------------------------------------------ publish

    async def publish(self, instance: str, *, snapshot: str | None = None, aliases: list[str] | None = None,
                      public: bool = False, properties: dict[str, str] | None = None,
                      compression_algorithm: str | None = None, expires_at: str | None = None,
                      on_progress: ProgressCallback | None = None, project: str | None = None,
                      wait: bool = True, timeout: float | None = None) -> Image | Operation:
        """Make an image of a stopped instance, or of one of its snapshots."""
        source: dict[str, Any] = {"type": "snapshot" if snapshot else "instance",
                                  "name": f"{instance}/{snapshot}" if snapshot else instance}
        body: dict[str, Any] = {"source": source, "public": public}
        body |= given(properties=properties, compression_algorithm=compression_algorithm, expires_at=expires_at,
                      aliases=[{"name": a} for a in aliases or ()])
        op = await self._client.mutate("POST", "/1.0/images", json=body, project=project, wait=False)
        if not wait:
            return op
        await _wait_with_progress(op, on_progress, timeout)
        fp = str(op.metadata.get("fingerprint") or "")
        if aliases:
            await self.ensure_aliases(fp, aliases, project=project)
        return await self.get(fp, project=project)

    # ------------------------------------------------------------------------------------------ export

    @asynccontextmanager
    async def export(self, fingerprint: str, *, project: str | None = None) -> AsyncIterator[ImageExport]:
        """Stream an image: `async with images.export(fp) as e: async for chunk in e.iter_bytes(): ...`."""
        url = f"{image_path(fingerprint)}/export"
        params = self._client._params(None, project, True)
        async with self._client.transport.stream("GET", url, params=params) as r:
            if r.status_code >= 400 or r.headers.get("content-type", "").startswith("application/json"):
                await r.aread()
                decode(r, "GET", url)
                raise LXDError("unexpected JSON answer to an image export", status=r.status_code, method="GET",
                               path=url)
            yield ImageExport(r)

    async def export_to(self, fingerprint: str, dest: str | os.PathLike[str], *, project: str | None = None,
                        max_part_header_bytes: int = MAX_PART_HEADER_BYTES, max_parts: int = MAX_PARTS) -> list[Path]:
        """Write an image into directory `dest`: one file (unified) or `metadata` + `rootfs` files (split).

        Streamed to disk; returns the files written, named as LXD names them (the last component of the name,
        never outside `dest`). A split export is held to `split_multipart`'s limits; one that breaks them, or is
        malformed, raises `LXDError`.
        """
        dest_dir = Path(dest)
        await asyncio.to_thread(dest_dir.mkdir, parents=True, exist_ok=True)
        written: list[Path] = []
        async with self.export(fingerprint, project=project) as e:
            if not e.multipart:
                path = dest_dir / (e.filename or f"{fingerprint}.tar.gz")
                await _write_stream(path, e.iter_bytes())
                return [path]
            current: Path | None = None
            f = None
            try:
                async for name, filename, data in split_multipart(e.iter_bytes(), e.boundary,
                                                                  max_part_header_bytes=max_part_header_bytes,
                                                                  max_parts=max_parts):
                    path = dest_dir / _file_name(filename or name)
                    if path != current:
                        if f is not None:
                            await asyncio.to_thread(f.close)
                        f = await asyncio.to_thread(open, path, "wb")
                        current = path
                        written.append(path)
                    await asyncio.to_thread(f.write, data)  # type: ignore[union-attr]
            except MultipartError as exc:
                raise LXDError(f"LXD's export of image {fingerprint} is unusable: {exc}", method="GET",
                               path=f"{image_path(fingerprint)}/export") from None
            finally:
                if f is not None:
                    await asyncio.to_thread(f.close)
        return written

    # ------------------------------------------------------------------------------------------ misc

    async def refresh(self, fingerprint: str, *, project: str | None = None, wait: bool = True) -> Operation:
        """Refresh an image from its source (when it was copied with `auto_update`)."""
        return await self._client.mutate("POST", f"{image_path(fingerprint)}/refresh", project=project, wait=wait)


async def _write_stream(path: Path, chunks: AsyncIterator[bytes]) -> None:
    f = await asyncio.to_thread(open, path, "wb")
    try:
        async for chunk in chunks:
            await asyncio.to_thread(f.write, chunk)
    finally:
        await asyncio.to_thread(f.close)


async def _wait_with_progress(op: Operation, on_progress: ProgressCallback | None, timeout: float | None) -> None:
    """Wait for `op`, handing each progress update to `on_progress` meanwhile."""
    if on_progress is None:
        await op.wait(timeout)
        return

    async def follow() -> None:
        async for p in op.progress():
            on_progress(p)

    task = asyncio.get_running_loop().create_task(follow())
    try:
        await op.wait(timeout)
    except BaseException:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(task, 1.0)
