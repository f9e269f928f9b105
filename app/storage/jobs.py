"""Storage-volume snapshot jobs: `volume-snapshot.create`, `volume-snapshot.restore`, `volume-snapshot.delete`.

`params` carry the `pool`, the custom `volume` and the `snapshot` name. A job a dead gateway left `running` is
settled from the volume's snapshots as LXD lists them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from app.jobs import CancelPolicy, Job, JobContext, RecoveryOutcome, job_kind
from app.jobs.env import workflow_env
from app.lxd.client import Client
from app.lxd.operations import Operation
from app.lxd.storage import Storage

SnapshotCall = Callable[[Storage, str, str, str], Awaitable[Operation]]


def _client(ctx: JobContext) -> Client:
    return workflow_env(ctx).client(ctx.remote, ctx.project)


def _names(ctx: JobContext) -> tuple[str, str, str]:
    return str(ctx.params["pool"]), str(ctx.params["volume"]), str(ctx.params["snapshot"])


async def _record(ctx: JobContext, op: Operation) -> None:
    if op.id:
        await ctx.record_operation(ctx.remote or "", op.id, op.state.status or "Success")


async def _step(ctx: JobContext, step: str, message: str, call: SnapshotCall, key: str) -> dict[str, Any]:
    """Report `step`, make the LXD call on (pool, volume, snapshot), record its operation; the result names the
    snapshot under `key`."""
    pool, volume, snap = _names(ctx)
    await ctx.progress(step, None, message.format(pool=pool, volume=volume, snap=snap))
    await _record(ctx, await call(_client(ctx).storage, pool, volume, snap))
    return {"pool": pool, "volume": volume, key: snap}


async def _snapshot_names(client: Client, pool: str, volume: str) -> set[str]:
    return {s.name for s in await client.storage.volume_snapshots(pool, volume)}


async def _recover_create(job: Job, ctx: JobContext) -> RecoveryOutcome:
    pool, volume, snap = _names(ctx)
    if snap in await _snapshot_names(_client(ctx), pool, volume):
        return RecoveryOutcome.succeeded({"pool": pool, "volume": volume, "name": snap})
    return RecoveryOutcome.failed("gateway-restarted", f"the gateway stopped before snapshot {snap!r} was taken")


@job_kind("volume-snapshot.create", cancel=CancelPolicy.INTERRUPT, recover=_recover_create)
async def create_volume_snapshot(ctx: JobContext) -> dict[str, Any]:
    """Take a snapshot of a custom volume."""
    return await _step(ctx, "snapshotting", "Snapshot {snap} of volume {volume} in pool {pool}",
                       Storage.create_volume_snapshot, "name")


async def _recover_restore(job: Job, ctx: JobContext) -> RecoveryOutcome:
    pool, volume, snap = _names(ctx)
    await _client(ctx).storage.restore_volume_snapshot(pool, volume, snap)  # restoring again is harmless
    return RecoveryOutcome.succeeded({"pool": pool, "volume": volume, "restored": snap})


@job_kind("volume-snapshot.restore", cancel=CancelPolicy.INTERRUPT, recover=_recover_restore)
async def restore_volume_snapshot(ctx: JobContext) -> dict[str, Any]:
    """Bring a custom volume back to a snapshot."""
    return await _step(ctx, "restoring", "Restoring volume {volume} in pool {pool} to {snap}",
                       Storage.restore_volume_snapshot, "restored")


async def _recover_delete(job: Job, ctx: JobContext) -> RecoveryOutcome:
    pool, volume, snap = _names(ctx)
    client = _client(ctx)
    if snap in await _snapshot_names(client, pool, volume):
        await client.storage.delete_volume_snapshot(pool, volume, snap)
    return RecoveryOutcome.succeeded({"pool": pool, "volume": volume, "deleted": snap})


@job_kind("volume-snapshot.delete", cancel=CancelPolicy.INTERRUPT, recover=_recover_delete)
async def delete_volume_snapshot(ctx: JobContext) -> dict[str, Any]:
    """Delete a snapshot of a custom volume."""
    return await _step(ctx, "deleting", "Deleting snapshot {snap} of volume {volume} in pool {pool}",
                       Storage.delete_volume_snapshot, "deleted")
