"""Storage-volume snapshot jobs: `volume-snapshot.create`, `volume-snapshot.restore`, `volume-snapshot.delete`.

`params` carry the `pool`, the custom `volume` and the `snapshot` name. A job a dead gateway left `running` is
settled from the volume's snapshots as LXD lists them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from app.jobs import CancelPolicy, Job, JobContext, RecoveryOutcome
from app.jobs.env import workflow_env
from app.jobs.kinds import JobKind, RecoverFn
from app.lxd.client import Client
from app.lxd.operations import Operation
from app.lxd.storage import Storage
from app.storage import job_types as jt

SnapshotCall = Callable[[Storage, str, str, str], Awaitable[Operation]]


def _client(ctx: JobContext) -> Client:
    return workflow_env(ctx).client(ctx.remote, ctx.project)


def _names(ctx: JobContext) -> tuple[str, str, str]:
    return str(ctx.params["pool"]), str(ctx.params["volume"]), str(ctx.params["snapshot"])


async def _record(ctx: JobContext, op: Operation) -> None:
    if op.id:
        await ctx.record_operation(ctx.remote or "", op.id, op.state.status or "Success")


async def _snapshot_names(client: Client, pool: str, volume: str) -> set[str]:
    return {s.name for s in await client.storage.volume_snapshots(pool, volume)}


async def _recover_create(job: Job, ctx: JobContext) -> RecoveryOutcome:
    pool, volume, snap = _names(ctx)
    if snap in await _snapshot_names(_client(ctx), pool, volume):
        return RecoveryOutcome.succeeded({"pool": pool, "volume": volume, "name": snap})
    return RecoveryOutcome.failed("gateway-restarted", f"the gateway stopped before snapshot {snap!r} was taken")


async def _recover_restore(job: Job, ctx: JobContext) -> RecoveryOutcome:
    pool, volume, snap = _names(ctx)
    await _client(ctx).storage.restore_volume_snapshot(pool, volume, snap)  # restoring again is harmless
    return RecoveryOutcome.succeeded({"pool": pool, "volume": volume, "restored": snap})


async def _recover_delete(job: Job, ctx: JobContext) -> RecoveryOutcome:
    pool, volume, snap = _names(ctx)
    client = _client(ctx)
    if snap in await _snapshot_names(client, pool, volume):
        await client.storage.delete_volume_snapshot(pool, volume, snap)
    return RecoveryOutcome.succeeded({"pool": pool, "volume": volume, "deleted": snap})


def _snapshot_kind(name: str, summary: str, step: str, message: str, call: SnapshotCall, key: str,
                   recover: RecoverFn) -> JobKind:
    """The job kind `name`: report `step`, make the LXD `call` on (pool, volume, snapshot), record its operation;
    the result names the snapshot under `key`."""

    async def run(ctx: JobContext) -> dict[str, Any]:
        pool, volume, snap = _names(ctx)
        await ctx.progress(step, None, message.format(pool=pool, volume=volume, snap=snap))
        await _record(ctx, await call(_client(ctx).storage, pool, volume, snap))
        return {"pool": pool, "volume": volume, key: snap}

    run.__doc__ = summary
    return JobKind.of(name, run, cancel=CancelPolicy.INTERRUPT, recover=recover)


VOLUME_SNAPSHOT_CREATE = _snapshot_kind(
    "volume-snapshot.create", "Take a snapshot of a custom volume.", "snapshotting",
    "Snapshot {snap} of volume {volume} in pool {pool}", Storage.create_volume_snapshot, "name", _recover_create,
).typed(jt.VolumeSnapshotParams, jt.VolumeSnapshotTaken)
VOLUME_SNAPSHOT_RESTORE = _snapshot_kind(
    "volume-snapshot.restore", "Bring a custom volume back to a snapshot.", "restoring",
    "Restoring volume {volume} in pool {pool} to {snap}", Storage.restore_volume_snapshot, "restored",
    _recover_restore,
).typed(jt.VolumeSnapshotParams, jt.VolumeSnapshotRestored)
VOLUME_SNAPSHOT_DELETE = _snapshot_kind(
    "volume-snapshot.delete", "Delete a snapshot of a custom volume.", "deleting",
    "Deleting snapshot {snap} of volume {volume} in pool {pool}", Storage.delete_volume_snapshot, "deleted",
    _recover_delete,
).typed(jt.VolumeSnapshotParams, jt.VolumeSnapshotDeleted)
