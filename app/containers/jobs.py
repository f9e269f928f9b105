"""Container jobs: create, delete, state actions, bulk remove, rename, copy, publish, snapshots.

Each kind is a step coroutine over a `JobContext` whose `params` are the validated request body (plus the
container `name` taken from the path). Each also says how a job that a dead gateway left `running` is settled from
the state of the container itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from app.containers import job_types as jt
from app.containers.mirror import KIND
from app.containers.service import (
    ContainerCreateError,
    ContainerRemoveError,
    ContainerServiceError,
    ContainerStartError,
    CreateCancelled,
    create_from_spec,
    remove_container,
)
from app.containers.spec import ContainerSpec
from app.containers.view import container_view, read_container
from app.images.search import ImageError
from app.jobs import (
    CancelPolicy,
    Job,
    JobCancelled,
    JobContext,
    JobFailure,
    JobKind,
    RecoveryOutcome,
    RollbackIncomplete,
)
from app.jobs.env import workflow_env
from app.lxd.client import Client
from app.lxd.errors import LXDError, NotFound
from app.lxd.models import Progress, StatusCode
from app.lxd.operations import Operation

log = logging.getLogger("app.jobs.env")

CREATE_STEP = "creating"
CREATED_STEP = "created"
ACTION_STATUS = {"start": StatusCode.RUNNING, "restart": StatusCode.RUNNING, "unfreeze": StatusCode.RUNNING,
                 "stop": StatusCode.STOPPED, "freeze": StatusCode.FROZEN}


def _client(ctx: JobContext) -> Client:
    return workflow_env(ctx).client(ctx.remote, ctx.project)


async def _record(ctx: JobContext, op: Operation) -> None:
    if op.id:
        await ctx.record_operation(ctx.remote or "", op.id, op.state.status or "Success")


async def _status(client: Client, name: str) -> str | None:
    """The container's status, None when it does not exist."""
    try:
        return (await client.instances.state(name)).status
    except NotFound:
        return None


def _mark(ctx: JobContext) -> int:
    """Where the read model's reads stand before the job's change is asked of LXD (see `_view`)."""
    env = workflow_env(ctx)
    return env.mirror.mark(ctx.remote) if env.mirror is not None and ctx.remote else 0


async def _view(ctx: JobContext, client: Client, name: str, *, status: str | None = None,
                since: int = 0) -> dict[str, Any]:
    """The container as it is now, read through the read model (which then holds it too). With the `status` the
    job's change left it in and the model's `since` (`_mark`) from before the change was asked: the model's record
    serves once it was read after that and shows the status (the model reads it on LXD's event of the change), with
    no read of its own."""
    env = workflow_env(ctx)
    if env.mirror is not None and ctx.remote:
        project = ctx.project or "default"
        if status is not None:
            data = await env.mirror.after_change(ctx.remote, project, KIND, name, client=client, since=since,
                                                 shows=lambda view: view.get("status") == status)
        else:
            data = await env.mirror.fresh(ctx.remote, project, KIND, name, client=client)
        if data is None:
            raise NotFound(f"container {name!r} not found")
        return data
    return container_view(await read_container(client, name), remote=ctx.remote or "",
                          project=ctx.project or "default")


# ------------------------------------------------------------------------------------------------ create


async def _remove_made(ctx: JobContext, name: str) -> str | None:
    """Remove the container `name` this job made (half-made or not); what was done, None when there was none.

    Once the job has ended (a retried cleanup), a container made after that is someone else's and is left alone.
    Raises `RollbackIncomplete` when LXD does not let it be removed (yet)."""
    client = _client(ctx)
    ended = ctx.job.finished_at
    try:
        if ended is not None:
            made = (await client.instances.get(name)).created_at
            if made is not None and made > ended:
                return (f"container {name!r} was not removed: the one that exists now was created after this job "
                        "ended")
        await remove_container(client, name)
    except NotFound:
        return None
    except (LXDError, ContainerServiceError, OSError) as exc:
        reason = str(getattr(exc, "error", None) or exc) or type(exc).__name__
        raise RollbackIncomplete(f"container {name!r} could not be removed yet ({reason}); its removal is retried "
                                 "until it succeeds") from exc
    return f"container {name!r} was removed"


async def _rollback_create(ctx: JobContext) -> str | None:
    """Remove the container this job (may have) created: once it sent LXD the create request, a container of that
    name is its own (the name was free when the job was accepted)."""
    if CREATE_STEP not in ctx.checkpoints:
        return None
    return await _remove_made(ctx, ctx.params["name"])


def _spec_of(params: dict[str, Any]) -> ContainerSpec:
    """The spec a create job was given (its params also carry the placement `target`)."""
    return ContainerSpec.model_validate({k: v for k, v in params.items() if k != "target"})


async def _recover_create(job: Job, ctx: JobContext) -> RecoveryOutcome:
    client = _client(ctx)
    spec = _spec_of(ctx.params)
    status = await _status(client, spec.name)
    if status is not None and (status == "Running" or (not spec.start and CREATED_STEP in ctx.checkpoints)):
        return RecoveryOutcome.succeeded(await _view(ctx, client, spec.name))
    if status is not None and CREATE_STEP in ctx.checkpoints:
        await remove_container(client, spec.name)
        return RecoveryOutcome.failed("rolled-back", f"the gateway stopped while creating {spec.name!r}; the "
                                      "unfinished container was removed")
    return RecoveryOutcome.failed("rolled-back", f"the gateway stopped before {spec.name!r} was created; "
                                  "nothing was left behind")


def _on_member(detail: str, target: str | None) -> str:
    """A create failure's detail, naming the cluster member it was placed on."""
    return f"on cluster member {target!r}: {detail}" if target and repr(target) not in detail else detail


async def create_container(ctx: JobContext) -> dict[str, Any]:
    """Find (or copy) the image, create the container, start it; a failed start removes it again."""
    env = workflow_env(ctx)
    client = env.client(ctx.remote, ctx.project)
    target = ctx.params.get("target")
    spec = _spec_of(ctx.params)

    async def step(name: str) -> None:
        with contextlib.suppress(JobCancelled):  # the create itself stops at its next cancel check
            await ctx.checkpoint(name)

    since = _mark(ctx)
    try:
        created = await create_from_spec(
            client, spec, sources=env.image_sources(spec.image.sources, await client.server.backend()),
            alias_template=env.settings
            .image_alias_template, bridge=env.settings.bridge_name, bridge_nat=env.settings.bridge_nat,
            progress=ctx.progress, cancel_check=lambda: ctx.cancel_requested, target=target,
            on_operation=lambda op_id, status: ctx.record_operation(ctx.remote or "", op_id, status),
            on_step=step, roll_back=False, read_back=False)
    except CreateCancelled:
        raise JobCancelled(ctx.job_id) from None
    except ContainerStartError as exc:  # the job's rollback removes it; its `cleanup` says how that went
        raise JobFailure("start-failed", f"container {spec.name!r} would not start: {exc}",
                         lxd_error=str(exc)) from exc
    except ImageError as exc:
        raise JobFailure("image-not-found", str(exc)) from exc
    except ContainerCreateError as exc:
        raise JobFailure("create-failed", _on_member(str(exc), target),
                         lxd_error=str(exc.__cause__ or exc)) from exc
    except LXDError as exc:
        if not target:
            raise
        raise JobFailure("create-failed", _on_member(f"could not create {spec.name!r}: {exc.error}", target),
                         lxd_error=exc.error) from exc
    # a container created and not started shows no status of its own making: only a read after the job knows it
    view = await _view(ctx, client, spec.name, status="Running" if spec.start else None, since=since)
    view["image"] = {"fingerprint": created.image.fingerprint, "local": created.image.local}
    if created.unknown_parents:
        view["unknown_parents"] = created.unknown_parents
    return view


CREATE = JobKind.of("container.create", create_container, cancel=CancelPolicy.ROLLBACK_AFTER_STEP,
                    rollback=_rollback_create, recover=_recover_create, params=jt.ContainerCreateParams,
                    result=jt.CreatedContainer)


# ------------------------------------------------------------------------------------------------ delete


async def _recover_delete(job: Job, ctx: JobContext) -> RecoveryOutcome:
    client = _client(ctx)
    name = ctx.params["name"]
    if await _status(client, name) is not None:
        await remove_container(client, name)
    return RecoveryOutcome.succeeded({"name": name, "deleted": True})


async def delete_container(ctx: JobContext) -> dict[str, Any]:
    """Force-stop the container if it runs, delete it, retry a failed delete operation."""
    name = ctx.params["name"]
    await ctx.progress("deleting", None, f"Deleting container {name}")
    try:
        await remove_container(_client(ctx), name)
    except ContainerRemoveError as exc:
        raise JobFailure("delete-failed", str(exc), lxd_error=str(exc)) from exc
    return {"name": name, "deleted": True}


DELETE = JobKind.of("container.delete", delete_container, cancel=CancelPolicy.INTERRUPT, recover=_recover_delete,
                    params=jt.ContainerParams, result=jt.Deleted)


async def _recover_remove_many(job: Job, ctx: JobContext) -> RecoveryOutcome:
    client = _client(ctx)
    names: list[str] = list(ctx.params["names"])
    left = [n for n in names if await _status(client, n) is not None]
    removed = [n for n in names if n not in left]
    if left:
        return RecoveryOutcome.failed("remove-failed", "the gateway stopped before removing: " + ", ".join(left),
                                      removed=removed, failed=left)
    return RecoveryOutcome.succeeded({"removed": removed, "failed": []})


async def remove_many(ctx: JobContext) -> dict[str, Any]:
    """Remove each named container in turn; failures do not stop the others and are named in the result."""
    client = _client(ctx)
    names: list[str] = list(ctx.params["names"])
    removed: list[str] = []
    failed: list[dict[str, str]] = []
    for i, name in enumerate(names):
        await ctx.progress("removing", i * 100 // max(1, len(names)), f"Removing container {name}")
        try:
            await remove_container(client, name)
        except (LXDError, ContainerServiceError) as exc:
            failed.append({"name": name, "error": str(getattr(exc, "error", None) or exc)})
        else:
            removed.append(name)
    result = {"removed": removed, "failed": [f["name"] for f in failed], "errors": failed}
    if failed:
        raise JobFailure("remove-failed", "failed to remove containers: " + ", ".join(result["failed"]),
                         result=result, failed=result["failed"])
    return result


REMOVE_MANY = JobKind.of("container.remove-many", remove_many, cancel=CancelPolicy.INTERRUPT,
                         recover=_recover_remove_many, params=jt.ContainerRemoveManyParams,
                         result=jt.RemovedMany)


# ------------------------------------------------------------------------------------------------ state actions


def _action_kind(action: str) -> JobKind:
    """The kind `container.<action>` of a state action."""

    async def recover(job: Job, ctx: JobContext) -> RecoveryOutcome:
        client = _client(ctx)
        name = ctx.params["name"]
        status = await _status(client, name)
        if status == ACTION_STATUS[action].label:
            return RecoveryOutcome.succeeded(await _view(ctx, client, name))
        return RecoveryOutcome.failed("gateway-restarted", f"the gateway stopped during {action}; the container "
                                      f"is {status or 'gone'}")

    async def run(ctx: JobContext) -> dict[str, Any]:
        client = _client(ctx)
        name = ctx.params["name"]
        force = bool(ctx.params.get("force", False))
        timeout = int(ctx.params.get("timeout", 30))
        await ctx.progress(action, None, f"{action.capitalize()} container {name}")
        since = _mark(ctx)
        if action == "stop":
            op = await client.instances.stop(name, timeout=timeout, force=force)
        elif action == "restart":
            op = await client.instances.set_state(name, "restart", timeout=timeout, force=force,
                                                  wait_timeout=timeout + 30 if timeout > 0 else None)
        else:
            op = await client.instances.set_state(name, action, force=force)
        await _record(ctx, op)
        # a restart ends Running as it began: only a read after it shows that it happened
        return await _view(ctx, client, name, status=None if action == "restart" else ACTION_STATUS[action].label,
                           since=since)

    run.__doc__ = f"{action.capitalize()} the container (body: force, timeout)."
    return JobKind.of(f"container.{action}", run, cancel=CancelPolicy.INTERRUPT, recover=recover)


START = _action_kind("start").typed(jt.ContainerActionParams, jt.ContainerOut)
STOP = _action_kind("stop").typed(jt.ContainerActionParams, jt.ContainerOut)
RESTART = _action_kind("restart").typed(jt.ContainerActionParams, jt.ContainerOut)
FREEZE = _action_kind("freeze").typed(jt.ContainerActionParams, jt.ContainerOut)
UNFREEZE = _action_kind("unfreeze").typed(jt.ContainerActionParams, jt.ContainerOut)


# ------------------------------------------------------------------------------------------------ rename, copy


async def _recover_rename(job: Job, ctx: JobContext) -> RecoveryOutcome:
    client = _client(ctx)
    old, new = ctx.params["name"], ctx.params["new_name"]
    if await _status(client, new) is not None and await _status(client, old) is None:
        return RecoveryOutcome.succeeded(await _view(ctx, client, new))
    return RecoveryOutcome.failed("gateway-restarted", f"the gateway stopped before {old!r} was renamed")


async def rename_container(ctx: JobContext) -> dict[str, Any]:
    """Rename a (stopped) container."""
    client = _client(ctx)
    old, new = ctx.params["name"], ctx.params["new_name"]
    await ctx.progress("renaming", None, f"Renaming {old} to {new}")
    await _record(ctx, await client.instances.rename(old, new))
    await ctx.set_resource(f"/v1/containers/{new}")
    return await _view(ctx, client, new)


RENAME = JobKind.of("container.rename", rename_container, cancel=CancelPolicy.INTERRUPT, recover=_recover_rename,
                    params=jt.ContainerRenameParams, result=jt.ContainerOut)


async def _rollback_copy(ctx: JobContext) -> str | None:
    if CREATED_STEP not in ctx.checkpoints:
        return None
    return await _remove_made(ctx, ctx.params["new_name"])


async def _recover_copy(job: Job, ctx: JobContext) -> RecoveryOutcome:
    client = _client(ctx)
    new = ctx.params["new_name"]
    status = await _status(client, new)
    if status is not None and (status == "Running" or not ctx.params.get("start")):
        return RecoveryOutcome.succeeded(await _view(ctx, client, new))
    if status is not None and CREATE_STEP in ctx.checkpoints:
        await remove_container(client, new)
    return RecoveryOutcome.failed("rolled-back", f"the gateway stopped while copying to {new!r}; nothing was "
                                  "left behind")


async def copy_container(ctx: JobContext) -> dict[str, Any]:
    """Copy a container to a new one (its profiles kept), and start the copy when asked."""
    client = _client(ctx)
    src, new = ctx.params["name"], ctx.params["new_name"]
    await ctx.progress("copying", None, f"Copying {src} to {new}")
    await ctx.checkpoint(CREATE_STEP)
    op = await client.instances.create(new, copy_from=src, instance_only=True)
    await _record(ctx, op)
    await ctx.checkpoint(CREATED_STEP)
    if ctx.params.get("start"):
        await ctx.progress("starting", None, f"Starting container {new}")
        await _record(ctx, await client.instances.start(new))
    return await _view(ctx, client, new)


COPY = JobKind.of("container.copy", copy_container, cancel=CancelPolicy.ROLLBACK_AFTER_STEP, rollback=_rollback_copy,
                  recover=_recover_copy, params=jt.ContainerCopyParams, result=jt.ContainerOut)


# ------------------------------------------------------------------------------------------------ publish


async def _recover_publish(job: Job, ctx: JobContext) -> RecoveryOutcome:
    client = _client(ctx)
    for alias in ctx.params.get("aliases") or []:
        with contextlib.suppress(NotFound):
            target = (await client.images.alias(alias)).target
            return RecoveryOutcome.succeeded({"fingerprint": target, "aliases": ctx.params.get("aliases")})
    return RecoveryOutcome.failed("gateway-restarted", "the gateway stopped while publishing; no image with the "
                                  "requested aliases exists")


async def publish_container(ctx: JobContext) -> dict[str, Any]:
    """Publish a stopped container as an image, with aliases."""
    client = _client(ctx)
    name = ctx.params["name"]
    aliases: list[str] = list(ctx.params.get("aliases") or [])

    pending: set[asyncio.Task[None]] = set()

    def on_progress(p: Progress) -> None:
        task = asyncio.ensure_future(ctx.progress(p.stage or "publishing", p.percent, p.text or None))
        pending.add(task)
        task.add_done_callback(pending.discard)

    await ctx.progress("publishing", None, f"Publishing {name}")
    image = await client.images.publish(name, aliases=aliases, public=bool(ctx.params.get("public")),
                                        on_progress=on_progress)
    data = image.model_dump(mode="json") if hasattr(image, "model_dump") else {}
    return {"fingerprint": data.get("fingerprint"), "aliases": aliases, "size": data.get("size"),
            "public": data.get("public")}


PUBLISH = JobKind.of("container.publish", publish_container, cancel=CancelPolicy.INTERRUPT, recover=_recover_publish,
                     params=jt.ContainerPublishParams, result=jt.Published)


# ------------------------------------------------------------------------------------------------ snapshots


async def _snapshot_names(client: Client, name: str) -> set[str]:
    return {s.name.rsplit("/", 1)[-1] for s in await client.instances.snapshots(name)}


async def _recover_snapshot_create(job: Job, ctx: JobContext) -> RecoveryOutcome:
    client = _client(ctx)
    name, snap = ctx.params["name"], ctx.params["snapshot"]
    if snap in await _snapshot_names(client, name):
        return RecoveryOutcome.succeeded({"container": name, "name": snap})
    return RecoveryOutcome.failed("gateway-restarted", f"the gateway stopped before snapshot {snap!r} was taken")


async def create_snapshot(ctx: JobContext) -> dict[str, Any]:
    """Take a snapshot of the container."""
    client = _client(ctx)
    name, snap = ctx.params["name"], ctx.params["snapshot"]
    await ctx.progress("snapshotting", None, f"Snapshot {snap} of {name}")
    await _record(ctx, await client.instances.create_snapshot(name, snap,
                                                              stateful=bool(ctx.params.get("stateful"))))
    return {"container": name, "name": snap, "stateful": bool(ctx.params.get("stateful"))}


SNAPSHOT_CREATE = JobKind.of("snapshot.create", create_snapshot, cancel=CancelPolicy.INTERRUPT,
                             recover=_recover_snapshot_create, params=jt.SnapshotParams, result=jt.SnapshotTaken)


def _snapshot_kind(name: str, doc: str, stage: str, message: str, done: str,
                   change: Callable[[Client, str, str], Awaitable[Operation]],
                   still_to_do: Callable[[Client, str, str], Awaitable[bool]]) -> JobKind:
    """The kind `name` changing an existing snapshot with `change(client, container, snapshot)`; its result is
    `{"container": ..., done: snapshot}`. A job a dead gateway left running is settled by making the change again
    when `still_to_do` says so."""

    async def recover(job: Job, ctx: JobContext) -> RecoveryOutcome:
        client = _client(ctx)
        container, snap = ctx.params["name"], ctx.params["snapshot"]
        if await still_to_do(client, container, snap):
            await change(client, container, snap)
        return RecoveryOutcome.succeeded({"container": container, done: snap})

    async def run(ctx: JobContext) -> dict[str, Any]:
        client = _client(ctx)
        container, snap = ctx.params["name"], ctx.params["snapshot"]
        await ctx.progress(stage, None, message.format(container=container, snapshot=snap))
        await _record(ctx, await change(client, container, snap))
        return {"container": container, done: snap}

    run.__doc__ = doc
    return JobKind.of(name, run, cancel=CancelPolicy.INTERRUPT, recover=recover)


async def _restore_again(client: Client, container: str, snap: str) -> bool:
    return True  # restoring again is harmless


async def _snapshot_left(client: Client, container: str, snap: str) -> bool:
    return snap in await _snapshot_names(client, container)


SNAPSHOT_RESTORE = _snapshot_kind(
    "snapshot.restore", "Restore the container to a snapshot.", "restoring", "Restoring {container} to {snapshot}",
    "restored", lambda client, name, snap: client.instances.restore_snapshot(name, snap), _restore_again,
).typed(jt.SnapshotParams, jt.SnapshotRestored)
SNAPSHOT_DELETE = _snapshot_kind(
    "snapshot.delete", "Delete a snapshot.", "deleting", "Deleting snapshot {snapshot} of {container}",
    "deleted", lambda client, name, snap: client.instances.delete_snapshot(name, snap), _snapshot_left,
).typed(jt.SnapshotParams, jt.SnapshotDeleted)
