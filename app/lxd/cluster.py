"""Cluster: the cluster's state and its members. Calls that place something take `target=` (a member, or
`@group` for a cluster group) in the module that creates it (storage pools, volumes, networks, image copies)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from pydantic import Field

from app.lxd.errors import LXDError
from app.lxd.models import Tagged
from app.lxd.resource import Resource, SubAPI


class ClusterInfo(Resource):
    """`GET /1.0/cluster`."""

    server_name: str = ""
    enabled: bool = False
    member_config: list[dict[str, Any]] = Field(default_factory=list)


class ClusterMember(Resource, Tagged):
    """`GET /1.0/cluster/members/<name>`."""

    server_name: str
    url: str = ""
    database: bool = False
    status: str = ""
    message: str = ""
    architecture: str = ""
    failure_domain: str = ""
    description: str = ""
    roles: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    config: dict[str, str] = Field(default_factory=dict)


def _m(name: str) -> str:
    return f"/1.0/cluster/members/{quote(name, safe='')}"


class Cluster(SubAPI):
    """`client.cluster`."""

    async def info(self) -> ClusterInfo:
        env = await self._client.request("GET", "/1.0/cluster", scoped=False)
        return ClusterInfo.model_validate(env.metadata or {})

    async def enabled(self) -> bool:
        return (await self.info()).enabled

    async def members(self) -> list[ClusterMember]:
        """The members; empty on a standalone server (LXD answers "Server is not clustered" there)."""
        try:
            return await self._all("/1.0/cluster/members", ClusterMember)
        except LXDError as exc:
            if "not clustered" in exc.error.lower():
                return []
            raise

    async def member(self, name: str) -> ClusterMember:
        env = await self._client.request("GET", _m(name), scoped=False)
        return ClusterMember.from_envelope(env)
