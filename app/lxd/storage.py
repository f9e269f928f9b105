"""Storage pools and volumes: list, get with ETag, create (with `target=` in a cluster), update, rename, delete;
snapshots of custom volumes: list, create, restore, delete.

Pool and volume calls are synchronous on LXD 5.0 and asynchronous on newer LXD; both are waited for the same way.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any
from urllib.parse import quote

from pydantic import Field, field_validator

from app.lxd.models import Tagged
from app.lxd.operations import Operation
from app.lxd.resource import Resource, SubAPI, if_match, list_params, object_path, with_target


class _Storage(Resource, Tagged):
    """What a pool and a volume both have."""

    name: str
    description: str = ""
    config: dict[str, str] = Field(default_factory=dict)
    used_by: list[str] = Field(default_factory=list)


class StoragePool(_Storage):
    """`GET /1.0/storage-pools/<name>`; `etag` is None on LXD 5.0, which checks If-Match but sends no ETag."""

    driver: str = ""
    status: str = ""
    locations: list[str] = Field(default_factory=list)


class StorageVolume(_Storage):
    """`GET /1.0/storage-pools/<pool>/volumes/<type>/<name>`."""

    type: str = "custom"
    content_type: str = "filesystem"
    location: str = ""
    project: str = ""


class VolumeSnapshot(Resource):
    """`GET /1.0/storage-pools/<pool>/volumes/<type>/<volume>/snapshots/<name>`; `name` is the snapshot's own
    name (LXD may send `<volume>/<name>`: the part after the slash is kept)."""

    name: str
    description: str = ""
    content_type: str = "filesystem"
    config: dict[str, str] = Field(default_factory=dict)
    created_at: datetime | None = None
    expires_at: datetime | None = None

    @field_validator("name")
    @classmethod
    def _own_name(cls, v: str) -> str:
        return v.rsplit("/", 1)[-1]


def _pool(name: str) -> str:
    return object_path("storage-pools", name)


def _vol(pool: str, name: str, vtype: str) -> str:
    return f"{_pool(pool)}/volumes/{quote(vtype, safe='')}/{quote(name, safe='')}"


class Storage(SubAPI):
    """`client.storage`: pools (`list`, `get`, `create`, ...) and their volumes (`volumes`, `create_volume`, ...)."""

    # ------------------------------------------------------------------------------------------ pools

    async def names(self) -> list[str]:
        """The pool names, in the server's order."""
        env = await self._client.request("GET", "/1.0/storage-pools", scoped=False)
        return [str(u).split("?", 1)[0].rsplit("/", 1)[-1] for u in env.metadata or []]

    async def list(self, *, target: str | None = None) -> list[StoragePool]:
        env = await self._client.request("GET", "/1.0/storage-pools", params=with_target(target, {"recursion": 1}),
                                         scoped=False)
        return [StoragePool.model_validate(p) for p in env.metadata or []]

    async def get(self, name: str, *, target: str | None = None) -> StoragePool:
        env = await self._client.request("GET", _pool(name), params=with_target(target), scoped=False)
        return StoragePool.from_envelope(env)

    async def resources(self, name: str, *, target: str | None = None) -> dict[str, Any]:
        """Space and inode usage of a pool."""
        env = await self._client.request("GET", f"{_pool(name)}/resources", params=with_target(target), scoped=False)
        return dict(env.metadata or {})

    async def create(self, name: str, driver: str, *, config: dict[str, str] | None = None, description: str = "",
                     target: str | None = None) -> Operation:
        """Create a pool. In a cluster, first once per member with `target=` (member-specific config such as
        `source`), then once without `target`."""
        body = {"name": name, "driver": driver, "config": config or {}, "description": description}
        return await self._client.mutate("POST", "/1.0/storage-pools", json=body, params=with_target(target))

    async def update(self, name: str, body: dict[str, Any], *, etag: str | None = None,
                     target: str | None = None) -> Operation:
        return await self._client.mutate("PUT", _pool(name), json=body, headers=if_match(etag),
                                         params=with_target(target))

    async def patch(self, name: str, body: dict[str, Any], *, etag: str | None = None,
                    target: str | None = None) -> Operation:
        return await self._client.mutate("PATCH", _pool(name), json=body, headers=if_match(etag),
                                         params=with_target(target))

    async def delete(self, name: str) -> Operation:
        return await self._client.mutate("DELETE", _pool(name))

    # ------------------------------------------------------------------------------------------ volumes

    async def volumes(self, pool: str, *, vtype: str | None = None, filter: str | None = None,
                      all_projects: bool = False, project: str | None = None,
                      target: str | None = None) -> builtins.list[StorageVolume]:
        """Volumes of a pool (of one type: `custom`, `container`, `virtual-machine`, `image`; all when None)."""
        params = list_params(filter=filter, all_projects=all_projects)
        path = f"{_pool(pool)}/volumes" + (f"/{quote(vtype, safe='')}" if vtype else "")
        env = await self._client.request("GET", path, params=with_target(target, params), project=project)
        return [StorageVolume.model_validate(v) for v in env.metadata or []]

    async def volume(self, pool: str, name: str, *, vtype: str = "custom", project: str | None = None,
                     target: str | None = None) -> StorageVolume:
        env = await self._client.request("GET", _vol(pool, name, vtype), params=with_target(target), project=project)
        return StorageVolume.from_envelope(env)

    async def create_volume(self, pool: str, name: str, *, config: dict[str, str] | None = None,
                            content_type: str = "filesystem", description: str = "",
                            source: dict[str, Any] | None = None, project: str | None = None,
                            target: str | None = None, timeout: float | None = None) -> StorageVolume:
        """Create a custom volume (empty, or from `source`); `Conflict` when it exists."""
        body: dict[str, Any] = {"name": name, "type": "custom", "content_type": content_type,
                                "config": config or {}, "description": description}
        if source:
            body["source"] = source
        await self._client.mutate("POST", f"{_pool(pool)}/volumes/custom", json=body, params=with_target(target),
                                  project=project, timeout=timeout)
        return await self.volume(pool, name, project=project, target=target)

    async def update_volume(self, pool: str, name: str, body: dict[str, Any], *, vtype: str = "custom",
                            etag: str | None = None, project: str | None = None,
                            target: str | None = None) -> Operation:
        return await self._client.mutate("PUT", _vol(pool, name, vtype), json=body, headers=if_match(etag),
                                         params=with_target(target), project=project)

    async def patch_volume(self, pool: str, name: str, body: dict[str, Any], *, vtype: str = "custom",
                           etag: str | None = None, project: str | None = None,
                           target: str | None = None) -> Operation:
        return await self._client.mutate("PATCH", _vol(pool, name, vtype), json=body, headers=if_match(etag),
                                         params=with_target(target), project=project)

    async def rename_volume(self, pool: str, name: str, new_name: str, *, vtype: str = "custom",
                            project: str | None = None, target: str | None = None) -> Operation:
        return await self._client.mutate("POST", _vol(pool, name, vtype), json={"name": new_name},
                                         params=with_target(target), project=project)

    async def delete_volume(self, pool: str, name: str, *, vtype: str = "custom", project: str | None = None,
                            target: str | None = None) -> Operation:
        return await self._client.mutate("DELETE", _vol(pool, name, vtype), params=with_target(target),
                                         project=project)

    # ------------------------------------------------------------------------------------------ volume snapshots

    async def volume_snapshots(self, pool: str, volume: str, *, vtype: str = "custom", project: str | None = None,
                               target: str | None = None) -> builtins.list[VolumeSnapshot]:
        """Snapshots of a volume; `NotFound` when the pool or the volume does not exist."""
        env = await self._client.request("GET", f"{_vol(pool, volume, vtype)}/snapshots",
                                         params=with_target(target, {"recursion": 1}), project=project)
        return [VolumeSnapshot.model_validate(s) for s in env.metadata or []]

    async def volume_snapshot(self, pool: str, volume: str, snapshot: str, *, vtype: str = "custom",
                              project: str | None = None, target: str | None = None) -> VolumeSnapshot:
        env = await self._client.request("GET", f"{_vol(pool, volume, vtype)}/snapshots/{quote(snapshot, safe='')}",
                                         params=with_target(target), project=project)
        return VolumeSnapshot.model_validate(env.metadata)

    async def create_volume_snapshot(self, pool: str, volume: str, snapshot: str, *, vtype: str = "custom",
                                     expires_at: datetime | None = None, project: str | None = None,
                                     target: str | None = None, wait: bool = True) -> Operation:
        """Take a snapshot of a volume; `Conflict` when one of that name exists."""
        body: dict[str, Any] = {"name": snapshot}
        if expires_at is not None:
            body["expires_at"] = expires_at.isoformat()
        return await self._client.mutate("POST", f"{_vol(pool, volume, vtype)}/snapshots", json=body,
                                         params=with_target(target), project=project, wait=wait)

    async def restore_volume_snapshot(self, pool: str, volume: str, snapshot: str, *, vtype: str = "custom",
                                      project: str | None = None, target: str | None = None,
                                      wait: bool = True) -> Operation:
        """Bring a volume back to a snapshot (a PUT carrying only `restore`: LXD leaves the config as it is). LXD
        refuses it while the volume is attached to a running instance."""
        return await self._client.mutate("PUT", _vol(pool, volume, vtype), json={"restore": snapshot},
                                         params=with_target(target), project=project, wait=wait)

    async def delete_volume_snapshot(self, pool: str, volume: str, snapshot: str, *, vtype: str = "custom",
                                     project: str | None = None, target: str | None = None,
                                     wait: bool = True) -> Operation:
        return await self._client.mutate("DELETE",
                                         f"{_vol(pool, volume, vtype)}/snapshots/{quote(snapshot, safe='')}",
                                         params=with_target(target), project=project, wait=wait)
