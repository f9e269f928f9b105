"""Storage on an LXD server: pools, custom volumes, and a root disk for a profile."""

from __future__ import annotations

from collections.abc import Mapping

from app.containers.constraints import default_pool_request, has_root_disk, pick_root_pool, set_root_disk
from app.http.errors import ProblemError
from app.lxd.client import Client
from app.lxd.errors import LXDError, NotFound
from app.lxd.storage import VolumeSnapshot
from app.networks.decisions import DEFAULT_PROFILE


class StorageServiceError(ProblemError):
    """A storage action LXD refused; the message names the pool or volume. It answers the status of LXD's error
    (409 `conflict` when there is none)."""

    status = 409
    slug = "conflict"
    status_from_lxd = True


def _err(exc: BaseException) -> str:
    return str(getattr(exc, "error", None) or exc)


async def create_pool(client: Client, name: str, driver: str, config: Mapping[str, str] | None = None) -> None:
    """Create storage pool `name` with `driver` and `config`."""
    try:
        await client.storage.create(name, driver, config=dict(config or {}))
    except LXDError as exc:
        raise StorageServiceError(f'creating storage pool "{name}": {_err(exc)}') from exc


async def create_volume(client: Client, pool: str, name: str, config: Mapping[str, str] | None = None) -> None:
    """Create custom volume `name` in `pool`."""
    try:
        await client.storage.create_volume(pool, name, config=dict(config or {}))
    except LXDError as exc:
        raise StorageServiceError(f'creating storage pool volume "{name}": {_err(exc)}') from exc


async def volume_snapshots(client: Client, pool: str, volume: str) -> list[VolumeSnapshot] | None:
    """The snapshots of custom volume `volume` in `pool`; None when the pool or the volume does not exist (LXD 5.0
    lists no snapshots for a volume it does not have, so the volume is looked up first)."""
    try:
        await client.storage.volume(pool, volume)
        return await client.storage.volume_snapshots(pool, volume)
    except NotFound:
        return None


async def ensure_default_storage(client: Client, profile: str = DEFAULT_PROFILE) -> str | None:
    """Give `profile` a root disk unless a device of it is already mounted at `/` (then nothing is sent).

    The disk goes on pool `default` when there is one, else on the first pool; with no pool at all a `dir` pool
    `default` is created first. The profile is written under its ETag. Returns the pool used (None: unchanged).
    """
    p = await client.profiles.get(profile)
    if has_root_disk(p.devices):
        return None
    pool = pick_root_pool(await client.storage.names())
    if pool is None:
        body = default_pool_request()
        await client.storage.create(body["name"], body["driver"])
        pool = str(body["name"])
    devices = {k: dict(v) for k, v in p.devices.items()}
    set_root_disk(devices, pool)
    await client.profiles.update(profile, {"config": p.config, "description": p.description, "devices": devices},
                                 etag=p.etag)
    return pool
