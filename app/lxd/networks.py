"""Networks: list, get with ETag, create (with `target=` in a cluster), update, rename, delete, state, leases.

LXD 5.0 refuses an existing network name with HTTP 400 "The network already exists"; it surfaces as `Conflict`.
Network calls are synchronous on LXD 5.0 and asynchronous on newer LXD; both are waited for the same way.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.lxd.errors import BadRequest, Conflict
from app.lxd.models import NetworkAddress, Tagged
from app.lxd.operations import Operation
from app.lxd.resource import Resource, SubAPI, if_match, object_path, with_target


class Network(Resource, Tagged):
    """`GET /1.0/networks/<name>`."""

    name: str
    type: str = ""
    managed: bool = False
    description: str = ""
    status: str = ""
    config: dict[str, str] = Field(default_factory=dict)
    locations: list[str] = Field(default_factory=list)
    used_by: list[str] = Field(default_factory=list)
    project: str = ""


class NetworkInfo(Resource):
    """`GET /1.0/networks/<name>/state`: addresses, counters, link state."""

    addresses: list[NetworkAddress] = Field(default_factory=list)
    counters: dict[str, int] = Field(default_factory=dict)
    hwaddr: str = ""
    mtu: int = 0
    state: str = ""
    type: str = ""


class NetworkLease(Resource):
    hostname: str = ""
    hwaddr: str = ""
    address: str = ""
    type: str = ""
    location: str = ""
    project: str = ""


def _p(name: str) -> str:
    return object_path("networks", name)


class Networks(SubAPI):
    """`client.networks`."""

    async def list(self, *, all_projects: bool = False, project: str | None = None,
                   target: str | None = None) -> list[Network]:
        params: dict[str, Any] = {"recursion": 1}
        if all_projects:
            params["all-projects"] = "true"
        env = await self._client.request("GET", "/1.0/networks", params=with_target(target, params), project=project)
        return [Network.model_validate(n) for n in env.metadata or []]

    async def get(self, name: str, *, project: str | None = None, target: str | None = None) -> Network:
        env = await self._client.request("GET", _p(name), params=with_target(target), project=project)
        return Network.from_envelope(env)

    async def state(self, name: str, *, project: str | None = None, target: str | None = None) -> NetworkInfo:
        env = await self._client.request("GET", f"{_p(name)}/state", params=with_target(target), project=project)
        return NetworkInfo.model_validate(env.metadata)

    async def leases(self, name: str, *, project: str | None = None) -> list[NetworkLease]:
        env = await self._client.request("GET", f"{_p(name)}/leases", project=project)
        return [NetworkLease.model_validate(x) for x in env.metadata or []]

    async def create(self, name: str, *, type: str = "bridge", config: dict[str, str] | None = None,
                     description: str = "", project: str | None = None, target: str | None = None) -> Operation:
        """Create a network; `Conflict` when it exists. In a cluster, first once per member with `target=`."""
        body = {"name": name, "type": type, "config": config or {}, "description": description}
        try:
            return await self._client.mutate("POST", "/1.0/networks", json=body, params=with_target(target),
                                             project=project)
        except BadRequest as exc:
            if "already exists" in exc.error.lower():
                raise Conflict(exc.error, status=exc.status, method=exc.method, path=exc.path) from exc
            raise

    async def update(self, name: str, body: dict[str, Any], *, etag: str | None = None,
                     project: str | None = None, target: str | None = None) -> Operation:
        return await self._client.mutate("PUT", _p(name), json=body, headers=if_match(etag),
                                         params=with_target(target), project=project)

    async def patch(self, name: str, body: dict[str, Any], *, etag: str | None = None,
                    project: str | None = None, target: str | None = None) -> Operation:
        return await self._client.mutate("PATCH", _p(name), json=body, headers=if_match(etag),
                                         params=with_target(target), project=project)

    async def rename(self, name: str, new_name: str, *, project: str | None = None) -> Operation:
        return await self._client.mutate("POST", _p(name), json={"name": new_name}, project=project)

    async def delete(self, name: str, *, project: str | None = None) -> Operation:
        return await self._client.mutate("DELETE", _p(name), project=project)
