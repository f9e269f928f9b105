"""Server configuration: `GET /1.0` with its ETag, `PUT /1.0` (replace) and `PATCH /1.0` (merge) with If-Match.

In a cluster some keys (such as `core.https_address`) are member-local: pass `target=`.
"""

from __future__ import annotations

from typing import Any

from app.lxd.operations import Operation
from app.lxd.resource import Resource, SubAPI, if_match, with_target


class ServerConfig(Resource):
    """The server's config and the ETag to pass back on update."""

    config: dict[str, Any]
    etag: str | None = None


class Config(SubAPI):
    """`client.config`."""

    async def get(self, *, target: str | None = None) -> ServerConfig:
        env = await self._client.request("GET", "/1.0", params={"target": target} if target else None,
                                         scoped=False)
        return ServerConfig(config=dict((env.metadata or {}).get("config") or {}), etag=env.etag)

    async def replace(self, config: dict[str, Any], *, etag: str | None = None,
                      target: str | None = None) -> Operation:
        """PUT: the whole config becomes `config` (keys left out are unset)."""
        return await self._write("PUT", config, etag, target)

    async def patch(self, config: dict[str, Any], *, etag: str | None = None,
                    target: str | None = None) -> Operation:
        """PATCH: merge `config` in; a key set to "" is unset."""
        return await self._write("PATCH", config, etag, target)

    async def _write(self, method: str, config: dict[str, Any], etag: str | None, target: str | None) -> Operation:
        """Send `config` (with If-Match of `etag`), then re-read the server's facts, which the config may change."""
        op = await self._client.mutate(method, "/1.0", json={"config": config}, headers=if_match(etag),
                                       params=with_target(target))
        await self._client.server.info(refresh=True)
        return op

    async def set(self, key: str, value: str, *, target: str | None = None) -> None:
        await self.patch({key: value}, target=target)

    async def unset(self, key: str, *, target: str | None = None) -> None:
        await self.patch({key: ""}, target=target)
