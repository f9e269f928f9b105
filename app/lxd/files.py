"""Files in instances: streamed read and write, directory listing, delete, mode/uid/gid.

Headers follow the backend (`X-LXD-*` or `X-Incus-*`); a mode is always sent as four octal digits ("0644"),
since LXD parses it with base auto-detection and "644" would be read as decimal.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from app.lxd.envelope import decode
from app.lxd.errors import LXDError
from app.lxd.models import FileInfo, normalise_mode

if TYPE_CHECKING:
    from app.lxd.client import Client


def _info(headers: httpx.Headers, prefix: str) -> FileInfo:
    def h(name: str) -> str | None:
        return headers.get(f"{prefix}{name}") or headers.get(f"X-LXD-{name}")

    size = headers.get("content-length")
    return FileInfo(type=h("type") or "file", mode=normalise_mode(h("mode") or "0644"), uid=int(h("uid") or 0),
                    gid=int(h("gid") or 0), size=int(size) if size and (h("type") or "file") == "file" else None)


class FileReader:
    """An open file (or directory, or symlink) being read: `info`, then `iter_bytes()`, `read()`, or `entries`."""

    def __init__(self, response: httpx.Response, info: FileInfo) -> None:
        self._r = response
        self.info = info
        self.entries: list[str] | None = None

    def iter_bytes(self, chunk_size: int = 1 << 16) -> AsyncIterator[bytes]:
        return self._r.aiter_bytes(chunk_size)

    async def read(self, limit: int | None = None) -> bytes:
        buf = bytearray()
        async for chunk in self._r.aiter_bytes():
            buf += chunk
            if limit is not None and len(buf) > limit:
                raise LXDError(f"file larger than {limit} bytes", path=str(self._r.request.url.path))
        return bytes(buf)


class Files:
    """`client.files`."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def _path(self, instance: str) -> str:
        return f"/1.0/instances/{quote(instance, safe='')}/files"

    def _params(self, path: str, project: str | None) -> dict[str, Any]:
        return self._client._params({"path": path}, project, True)

    @asynccontextmanager
    async def open(self, instance: str, path: str, *, project: str | None = None) -> AsyncIterator[FileReader]:
        """Stream a file: `async with files.open(i, p) as f: async for chunk in f.iter_bytes(): ...`.

        For a directory `f.entries` lists its names; for a symlink the body is its target.
        """
        prefix = await self._client.server.header_prefix()
        url = self._path(instance)
        async with self._client.transport.stream("GET", url, params=self._params(path, project)) as r:
            if r.status_code >= 400 or r.headers.get("content-type", "").startswith("application/json"):
                await r.aread()
                env = decode(r, "GET", url)
                reader = FileReader(r, _info(r.headers, prefix))
                reader.info.type = "directory"
                reader.entries = [str(e) for e in env.metadata or []]
                yield reader
                return
            yield FileReader(r, _info(r.headers, prefix))

    async def read(self, instance: str, path: str, *, limit: int | None = None, project: str | None = None) -> bytes:
        """The whole file (refused above `limit` bytes)."""
        async with self.open(instance, path, project=project) as f:
            if f.entries is not None:
                raise LXDError(f"{path} is a directory", path=path)
            return await f.read(limit)

    async def stat(self, instance: str, path: str, *, project: str | None = None) -> FileInfo:
        async with self.open(instance, path, project=project) as f:
            return f.info

    async def listdir(self, instance: str, path: str, *, project: str | None = None) -> list[str]:
        async with self.open(instance, path, project=project) as f:
            if f.entries is None:
                raise LXDError(f"{path} is not a directory", path=path)
            return f.entries

    async def put(self, instance: str, path: str, data: bytes | AsyncIterable[bytes], *,
                  mode: int | str | None = None, uid: int | None = None, gid: int | None = None,
                  append: bool = False, project: str | None = None) -> None:
        """Write a file from bytes or an async stream of chunks (not buffered in memory)."""
        await self._post(instance, path, data, "file", mode=mode, uid=uid, gid=gid, append=append, project=project)

    async def mkdir(self, instance: str, path: str, *, mode: int | str | None = 0o755, uid: int | None = None,
                    gid: int | None = None, project: str | None = None) -> None:
        await self._post(instance, path, b"", "directory", mode=mode, uid=uid, gid=gid, project=project)

    async def symlink(self, instance: str, path: str, target: str, *, project: str | None = None) -> None:
        await self._post(instance, path, target.encode(), "symlink", project=project)

    async def _post(self, instance: str, path: str, data: bytes | AsyncIterable[bytes], kind: str, *,
                    mode: int | str | None = None, uid: int | None = None, gid: int | None = None,
                    append: bool = False, project: str | None = None) -> None:
        prefix = await self._client.server.header_prefix()
        headers = {"Content-Type": "application/octet-stream", f"{prefix}type": kind,
                   f"{prefix}write": "append" if append else "overwrite"}
        if mode is not None:
            headers[f"{prefix}mode"] = normalise_mode(mode)
        if uid is not None:
            headers[f"{prefix}uid"] = str(uid)
        if gid is not None:
            headers[f"{prefix}gid"] = str(gid)
        url = self._path(instance)
        async with self._client.transport.stream("POST", url, params=self._params(path, project), content=data,
                                                 headers=headers) as r:
            await r.aread()
            decode(r, "POST", url)

    async def delete(self, instance: str, path: str, *, project: str | None = None) -> None:
        await self._client.request("DELETE", self._path(instance), params={"path": path}, project=project)
