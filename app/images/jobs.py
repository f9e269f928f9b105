"""Image jobs: find an OS image (and copy it into the local store), copy one from another server, import an
uploaded image, delete one.

`image.find` and `image.copy` report LXD's download progress as "Retrieving image: N%". Cancelling an
`image.copy` or `image.find` cancels LXD's download as soon as LXD allows it (a lookup still under way just
ends). Uploaded files are spooled in the data directory by the route and removed by the job, whatever its outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from app.images import job_types as jt
from app.images.search import ImageError, ImageSource, alias_for, image_progress
from app.images.service import copy_remote_image, find_image
from app.jobs import CancelPolicy, Job, JobCancelled, JobContext, JobFailure, JobKind, RecoveryOutcome
from app.jobs.env import workflow_env
from app.jobs.progress import PROVISIONING
from app.lxd.client import Client
from app.lxd.errors import NotFound, OperationCancelled
from app.lxd.images import Image
from app.lxd.models import Progress
from app.lxd.operations import Operation
from app.lxd.servers import ConnectionArgs, ServerSpec

log = logging.getLogger(__name__)

UPLOADING = "uploading"


def _client(ctx: JobContext) -> Client:
    return workflow_env(ctx).client(ctx.remote, ctx.project)


def image_summary(image: Image) -> dict[str, Any]:
    """The part of an image a job result carries."""
    return {"fingerprint": image.fingerprint, "aliases": image.alias_names, "architecture": image.architecture,
            "type": image.type, "size": image.size, "public": image.public,
            "description": image.properties.get("description", "")}


def _sources(ctx: JobContext) -> list[ServerSpec]:
    given = ctx.params.get("source_specs")
    if given is not None:  # resolved by the route: the sources as they were configured when the job was asked for
        return [ServerSpec(host=s["url"], name=s["name"], protocol=s["protocol"],
                           connection=ConnectionArgs(server_cert=s["certificate"]) if s.get("certificate") else None)
                for s in given]
    return workflow_env(ctx).image_sources(ctx.params.get("sources"))


def _message(p: Progress) -> tuple[int | None, str] | None:
    md: dict[str, Any] = {}
    if p.percent is not None:
        md["progress"] = {"percent": p.percent}
    if p.text:
        md[f"{p.stage or 'download'}_progress"] = p.text
    update = image_progress(md)
    return None if update is None else (update.percent, update.message)


# -- image.find ----------------------------------------------------------------------------------------------------

async def find(ctx: JobContext) -> dict[str, Any]:
    """Look for an image: the local alias first, then each source in order; with `copy_local`, pull it in."""
    client = _client(ctx)
    p = ctx.params
    series, alias = p.get("series"), p.get("alias")
    arch = p.get("arch")
    settings = workflow_env(ctx).settings
    sources = _sources(ctx)
    try:
        found: ImageSource = await find_image(client, series=series, alias=alias, arch=arch, sources=sources,
                                              copy_local=False, progress=ctx.progress,
                                              alias_template=settings.image_alias_template,
                                              local_alias=p.get("local_alias"))
    except ImageError as exc:
        raise JobFailure("image-not-found", str(exc), status=404, sources=[s.name for s in sources]) from exc
    if found.local:
        return {"fingerprint": found.fingerprint, "source": None, "alias": found.alias, "local": True,
                "copied": False}
    source_name = found.server.name if found.server else None
    if not p.get("copy_local"):
        return {"fingerprint": found.fingerprint, "source": source_name, "alias": found.alias, "local": False,
                "copied": False}
    if series is not None:
        local_alias = alias_for(series, arch or (await client.server_info()).host_arch, settings.image_alias_template)
    else:
        local_alias = p.get("local_alias") or str(alias)
    downloads: list[Operation] = []

    async def downloading(op: Operation) -> None:
        downloads.append(op)
        await ctx.record_operation(ctx.remote or "", op.id)
        ctx.on_cancel(op.cancel_when_possible)  # LXD lets a download be cancelled once it has started

    try:
        fingerprint = await copy_remote_image(client, found, [local_alias], ctx.progress, on_operation=downloading)
    except ImageError as exc:
        for op in downloads:
            await ctx.record_operation(ctx.remote or "", op.id, op.state.status or "Failure")
        if ctx.cancel_requested:
            raise JobCancelled(ctx.job_id) from exc
        raise JobFailure("image-copy-failed", str(exc), status=502, source=source_name) from exc
    for op in downloads:
        await ctx.record_operation(ctx.remote or "", op.id, "Success")
    return {"fingerprint": fingerprint, "source": source_name, "alias": local_alias, "local": True, "copied": True}


FIND = JobKind.of("image.find", find, cancel=CancelPolicy.CANCEL_OPERATION, params=jt.ImageFindParams,
                  result=jt.ImageFound)



# -- image.copy ----------------------------------------------------------------------------------------------------

async def _recover_copy(job: Job, ctx: JobContext) -> RecoveryOutcome:
    """Settled from the image store: the image (or the first alias asked for) being there means success."""
    client = _client(ctx)
    p = ctx.params
    with contextlib.suppress(NotFound):
        if p.get("fingerprint"):
            image = await client.images.get(p["fingerprint"])
        elif p.get("aliases"):
            image = await client.images.get((await client.images.alias(p["aliases"][0])).target)
        else:
            raise NotFound("nothing to look for")
        await client.images.ensure_aliases(image.fingerprint, list(p.get("aliases") or []))
        return RecoveryOutcome.succeeded(image_summary(image))
    return RecoveryOutcome.failed("interrupted", "the gateway stopped during the copy; the image is not in the store")


async def _rollback_copy(ctx: JobContext) -> None:
    """A cancel that came too late (the download had finished): remove the image again, if this job brought it."""
    fingerprint = (ctx.checkpoints.get("copied") or {}).get("fingerprint")
    started = ctx.job.started_at
    if not fingerprint or started is None:
        return
    client = _client(ctx)
    with contextlib.suppress(NotFound):
        image = await client.images.get(fingerprint)
        if image.uploaded_at is not None and image.uploaded_at >= started:
            await client.images.delete(fingerprint)


async def copy(ctx: JobContext) -> dict[str, Any]:
    """Copy an image from another server into this one, under the aliases asked for."""
    client = _client(ctx)
    p = ctx.params
    op = await client.images.copy(server=p["server"], alias=p.get("alias"), fingerprint=p.get("fingerprint"),
                                  protocol=p.get("protocol"), certificate=p.get("certificate") or None,
                                  aliases=list(p.get("aliases") or []), public=bool(p.get("public")),
                                  auto_update=bool(p.get("auto_update")), wait=False)
    assert isinstance(op, Operation)
    await ctx.record_operation(ctx.remote or "", op.id)
    unregister = ctx.on_cancel(op.cancel_when_possible)  # LXD lets a download be cancelled once it has started
    await ctx.progress(PROVISIONING, None, "acquiring LXD image")

    async def follow() -> None:
        last = ""
        async for update in op.progress():
            msg = _message(update)
            if msg is not None and msg[1] != last:
                last = msg[1]
                await ctx.progress(PROVISIONING, msg[0], msg[1])

    follower = asyncio.get_running_loop().create_task(follow())
    try:
        await op.wait()
    except OperationCancelled:
        await ctx.record_operation(ctx.remote or "", op.id, "Cancelled")
        ctx.raise_if_cancelled()
        raise
    finally:
        unregister()
        follower.cancel()
        with contextlib.suppress(BaseException):
            await follower
    await ctx.record_operation(ctx.remote or "", op.id, "Success")
    fingerprint = str(op.metadata.get("fingerprint") or p.get("fingerprint") or "")
    if not fingerprint and p.get("alias"):
        raise JobFailure("image-copy-failed", "LXD did not say which image it copied", status=502)
    await ctx.checkpoint("copied", {"fingerprint": fingerprint})
    if p.get("aliases"):
        await client.images.ensure_aliases(fingerprint, list(p["aliases"]))
    image = await client.images.get(fingerprint)
    await ctx.progress(PROVISIONING, 100, "Retrieving image: 100%")
    return image_summary(image)


COPY = JobKind.of("image.copy", copy, cancel=CancelPolicy.CANCEL_OPERATION, recover=_recover_copy,
                  rollback=_rollback_copy, params=jt.ImageCopyParams, result=jt.ImageSummary)



# -- image.import --------------------------------------------------------------------------------------------------

def _spooled(ctx: JobContext) -> list[Path]:
    return [Path(f) for f in (ctx.params.get("files") or [])]


def _discard(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()


async def _recover_import(job: Job, ctx: JobContext) -> RecoveryOutcome:
    """Settled from the image store (the expected fingerprint is known before the upload); spooled files go."""
    await asyncio.to_thread(_discard, _spooled(ctx))
    fingerprint = ctx.params.get("fingerprint")
    if fingerprint:
        with contextlib.suppress(NotFound):
            image = await _client(ctx).images.get(fingerprint)
            await _client(ctx).images.ensure_aliases(image.fingerprint, list(ctx.params.get("aliases") or []))
            return RecoveryOutcome.succeeded(image_summary(image))
    return RecoveryOutcome.failed("interrupted", "the gateway stopped during the upload; upload the image again")


async def import_image(ctx: JobContext) -> dict[str, Any]:
    """Stream a spooled upload (a unified tarball, or metadata + rootfs) into LXD's image store."""
    client = _client(ctx)
    p = ctx.params
    files = _spooled(ctx)
    total = sum(int(s) for s in p.get("sizes") or []) or None
    loop = asyncio.get_running_loop()
    last = [-1]
    pending: set[asyncio.Task[None]] = set()

    def on_progress(sent: int, size: int | None) -> None:
        size = size or total
        if not size:
            return
        pct = min(100, sent * 100 // size)
        if pct != last[0] and pct % 5 == 0:
            last[0] = pct
            task = loop.create_task(ctx.progress(UPLOADING, pct, f"Uploading image: {pct}%"))
            pending.add(task)
            task.add_done_callback(pending.discard)

    try:
        await ctx.progress(UPLOADING, 0, "Uploading image: 0%")
        op = await client.images.upload(files[0], rootfs=files[1] if len(files) > 1 else None,
                                        aliases=None, public=bool(p.get("public")),
                                        fingerprint=p.get("fingerprint") or None, filename=p.get("filename") or None,
                                        on_progress=on_progress, wait=False)
        assert isinstance(op, Operation)
        if op.id:
            await ctx.record_operation(ctx.remote or "", op.id)
        await op.wait()
        if op.id:
            await ctx.record_operation(ctx.remote or "", op.id, "Success")
        fingerprint = str(op.metadata.get("fingerprint") or p.get("fingerprint") or "")
        if p.get("aliases"):
            await client.images.ensure_aliases(fingerprint, list(p["aliases"]))
        image = await client.images.get(fingerprint)
    finally:
        await asyncio.to_thread(_discard, files)
    await ctx.progress(UPLOADING, 100, "Uploading image: 100%")
    return image_summary(image)


IMPORT = JobKind.of("image.import", import_image, cancel=CancelPolicy.INTERRUPT, recover=_recover_import,
                    params=jt.ImageImportParams, result=jt.ImageSummary)



# -- image.delete --------------------------------------------------------------------------------------------------

async def _recover_delete(job: Job, ctx: JobContext) -> RecoveryOutcome:
    try:
        await _client(ctx).images.get(ctx.params["fingerprint"])
    except NotFound:
        return RecoveryOutcome.succeeded({"fingerprint": ctx.params["fingerprint"], "deleted": True})
    return RecoveryOutcome.failed("interrupted", "the gateway stopped before the image was deleted; it still exists")


async def delete(ctx: JobContext) -> dict[str, Any]:
    """Delete an image from the store (its aliases go with it)."""
    client = _client(ctx)
    fingerprint = ctx.params["fingerprint"]
    op = await client.images.delete(fingerprint, wait=False)
    if op.id:
        await ctx.record_operation(ctx.remote or "", op.id)
    await op.wait()
    if op.id:
        await ctx.record_operation(ctx.remote or "", op.id, "Success")
    return {"fingerprint": fingerprint, "deleted": True}


DELETE = JobKind.of("image.delete", delete, cancel=CancelPolicy.INTERRUPT, recover=_recover_delete,
                    params=jt.ImageParams, result=jt.ImageDeleted)
