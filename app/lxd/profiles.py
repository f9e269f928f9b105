"""Profiles: list, get with ETag, create, replace/merge with If-Match, rename, delete.

LXD 5.0 answers "already exists" and "in use" with HTTP 500; they surface as `Conflict` like a 409. Updates are
synchronous on LXD 5.0 and asynchronous on newer LXD; both are waited for the same way.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import Field

from app.lxd.models import Tagged
from app.lxd.operations import Operation
from app.lxd.resource import Resource, SubAPI, if_match, object_path


class Profile(Resource, Tagged):
    """`GET /1.0/profiles/<name>`; `etag` is the ETag to pass back on update."""

    name: str
    description: str = ""
    config: dict[str, str] = Field(default_factory=dict)
    devices: dict[str, dict[str, str]] = Field(default_factory=dict)
    used_by: list[str] = Field(default_factory=list)
    project: str = ""

    def writable(self) -> dict[str, Any]:
        """The fields a PUT replaces."""
        return {"config": self.config, "description": self.description, "devices": self.devices}

    def instances(self) -> list[tuple[str, str]]:
        """The instances (and snapshots' instances) that use this profile, as (project, name), from `used_by`."""
        found: list[tuple[str, str]] = []
        for url in self.used_by:
            parts = urlsplit(url)
            segments = parts.path.split("/")
            if len(segments) >= 4 and segments[:3] == ["", "1.0", "instances"]:
                project = parse_qs(parts.query).get("project", ["default"])[0]
                entry = (project, unquote(segments[3]))
                if entry not in found:
                    found.append(entry)
        return found


def _p(name: str) -> str:
    return object_path("profiles", name)


class Profiles(SubAPI):
    """`client.profiles`."""

    async def list(self, *, all_projects: bool = False, project: str | None = None) -> list[Profile]:
        params: dict[str, Any] = {"recursion": 1}
        if all_projects:
            params["all-projects"] = "true"
        env = await self._client.request("GET", "/1.0/profiles", params=params, project=project)
        return [Profile.model_validate(p) for p in env.metadata or []]

    async def names(self, *, project: str | None = None) -> list[str]:
        env = await self._client.request("GET", "/1.0/profiles", project=project)
        return [u.split("?", 1)[0].rsplit("/", 1)[-1] for u in env.metadata or []]

    async def get(self, name: str, *, project: str | None = None) -> Profile:
        """The profile, with its ETag in `.etag`."""
        env = await self._client.request("GET", _p(name), project=project)
        return Profile.from_envelope(env)

    async def create(self, name: str, *, config: dict[str, str] | None = None,
                     devices: dict[str, dict[str, str]] | None = None, description: str = "",
                     project: str | None = None) -> Profile:
        """Create a profile; `Conflict` when it exists. `devices` and `description` are sent only when given."""
        body: dict[str, Any] = {"name": name, "config": dict(config or {})}
        if devices:
            body["devices"] = devices
        if description:
            body["description"] = description
        await self._client.mutate("POST", "/1.0/profiles", json=body, project=project)
        return await self.get(name, project=project)

    async def update(self, name: str, body: dict[str, Any], *, etag: str | None = None,
                     project: str | None = None, timeout: float | None = None) -> Operation:
        """PUT (replace config, devices, description); with `etag`, `PreconditionFailed` if it changed since."""
        return await self._client.mutate("PUT", _p(name), json=body, headers=if_match(etag), project=project,
                                         timeout=timeout)

    async def patch(self, name: str, body: dict[str, Any], *, etag: str | None = None,
                    project: str | None = None, timeout: float | None = None) -> Operation:
        """PATCH (merge); a config key set to "" is unset."""
        return await self._client.mutate("PATCH", _p(name), json=body, headers=if_match(etag), project=project,
                                         timeout=timeout)

    async def rename(self, name: str, new_name: str, *, project: str | None = None) -> Operation:
        return await self._client.mutate("POST", _p(name), json={"name": new_name}, project=project)

    async def delete(self, name: str, *, project: str | None = None) -> Operation:
        """Delete a profile; `Conflict` while instances use it."""
        return await self._client.mutate("DELETE", _p(name), project=project)
