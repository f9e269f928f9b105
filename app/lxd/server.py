"""Server facts, read once and cached: version, backend (lxd/incus), API extensions, architectures, cluster."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from app.lxd.models import ServerInfo

if TYPE_CHECKING:
    from app.lxd.client import Client


class Server:
    """`client.server`: what `GET /1.0` says, cached after the first read."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._info: ServerInfo | None = None
        self._extensions: frozenset[str] = frozenset()
        self._lock = asyncio.Lock()

    async def info(self, refresh: bool = False) -> ServerInfo:
        """`GET /1.0`; raises `LXDUnavailable` when the server cannot be reached."""
        if self._info is None or refresh:
            async with self._lock:
                if self._info is None or refresh:
                    env = await self._client.request("GET", "/1.0", scoped=False)
                    self._info = ServerInfo.model_validate(env.metadata or {})
                    self._extensions = frozenset(self._info.api_extensions)
        return self._info

    async def ping(self) -> None:
        """`GET /1.0` on the long-call pool (a probe must not queue behind a burst of short calls); the answer is
        not cached. Raises the `LXDError` of a failure."""
        await self._client.request("GET", "/1.0", scoped=False, long=True)

    @property
    def cached(self) -> ServerInfo | None:
        return self._info

    async def backend(self) -> str:
        """"lxd" or "incus"."""
        return (await self.info()).environment.server or "lxd"

    async def version(self) -> str:
        return (await self.info()).environment.server_version

    async def architectures(self) -> list[str]:
        return (await self.info()).environment.architectures

    async def clustered(self) -> bool:
        return (await self.info()).environment.server_clustered

    async def certificate(self) -> str:
        """The server's PEM certificate (empty for an untrusted client)."""
        return (await self.info()).environment.certificate

    async def trusted(self) -> bool:
        return (await self.info()).auth == "trusted"

    async def has_extension(self, name: str) -> bool:
        await self.info()
        return name in self._extensions

    async def header_prefix(self) -> str:
        """"X-LXD-" or "X-Incus-": file and image headers follow the backend."""
        return "X-Incus-" if await self.backend() == "incus" else "X-LXD-"

    async def image_protocol(self) -> str:
        """The protocol name for pulling from another server of the same backend."""
        return "incus" if await self.backend() == "incus" else "lxd"

    async def pull_protocol(self, protocol: str | None) -> str:
        """The protocol to send when this daemon pulls an image from another server.

        `lxd` and `incus` name one REST API under two names, and each daemon accepts only its own: Incus refuses
        `lxd` ("Invalid protocol: lxd"), LXD 5.0 refuses `incus` ("Unsupported protocol: incus"). Either (or none)
        becomes the name this daemon speaks; `simplestreams` is sent as it is."""
        if not protocol or protocol in ("lxd", "incus"):
            return await self.image_protocol()
        return protocol

    async def pull_source(self, source: dict[str, Any]) -> dict[str, Any]:
        """An instance or image `source` with its protocol in this daemon's name (see `pull_protocol`)."""
        if not source.get("server"):
            return source
        return {**source, "protocol": await self.pull_protocol(source.get("protocol"))}
