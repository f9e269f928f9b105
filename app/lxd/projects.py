"""Projects: list, get with ETag, create, update, rename, delete, state.

Every project-scoped call of this client takes `project=`; `Client.with_project(name)` gives a client whose
calls default to another project while sharing the connections and the events stream.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.lxd.models import Tagged
from app.lxd.operations import Operation
from app.lxd.resource import Resource, SubAPI, if_match, object_path


class Project(Resource, Tagged):
    """`GET /1.0/projects/<name>`."""

    name: str
    description: str = ""
    config: dict[str, str] = Field(default_factory=dict)
    used_by: list[str] = Field(default_factory=list)


def _p(name: str) -> str:
    return object_path("projects", name)


class Projects(SubAPI):
    """`client.projects`."""

    async def list(self) -> list[Project]:
        return await self._all("/1.0/projects", Project)

    async def names(self) -> list[str]:
        env = await self._client.request("GET", "/1.0/projects", scoped=False)
        return [u.split("?", 1)[0].rsplit("/", 1)[-1] for u in env.metadata or []]

    async def get(self, name: str) -> Project:
        env = await self._client.request("GET", _p(name), scoped=False)
        return Project.from_envelope(env)

    async def state(self, name: str) -> dict[str, Any]:
        """Resource usage and limits of a project."""
        env = await self._client.request("GET", f"{_p(name)}/state", scoped=False)
        return dict(env.metadata or {})

    async def create(self, name: str, *, config: dict[str, str] | None = None, description: str = "") -> Project:
        """Create a project; `Conflict` when it exists. Without `features.*` config it has its own instances,
        images and profiles (LXD's defaults)."""
        body = {"name": name, "config": config or {}, "description": description}
        await self._client.mutate("POST", "/1.0/projects", json=body)
        return await self.get(name)

    async def update(self, name: str, body: dict[str, Any], *, etag: str | None = None) -> Operation:
        return await self._client.mutate("PUT", _p(name), json=body, headers=if_match(etag))

    async def patch(self, name: str, body: dict[str, Any], *, etag: str | None = None) -> Operation:
        return await self._client.mutate("PATCH", _p(name), json=body, headers=if_match(etag))

    async def rename(self, name: str, new_name: str) -> Operation:
        return await self._client.mutate("POST", _p(name), json={"name": new_name})

    async def delete(self, name: str, *, force: bool = False) -> Operation:
        """Delete an empty project (`force=True`, where the server allows it, deletes its content too)."""
        return await self._client.mutate("DELETE", _p(name), params={"force": "true"} if force else None)
