"""Containers on an LXD server: create from a spec and start (removing it again when the start fails), and remove
one (forced stop, delete with retries)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.containers.spec import (
    ContainerSpec,
    build_create_request,
)
from app.http.errors import ProblemError
from app.images.search import DEFAULT_ALIAS_TEMPLATE, ImageSource, acquisition_error
from app.jobs.progress import PROVISIONING, CancelCheck, ProgressFn, report
from app.lxd.client import Client
from app.lxd.errors import LXDError, LXDTimeout, LXDUnavailable, OperationVanished
from app.lxd.models import Instance, StatusCode
from app.lxd.operations import Operation
from app.lxd.servers import ServerSpec, is_not_found
from app.networks.decisions import DEFAULT_BRIDGE, needs_bridge_ipv4

log = logging.getLogger(__name__)

DELETE_ATTEMPTS = 3
DELETE_RETRY_DELAY = 2.0


class ContainerServiceError(ProblemError):
    """A container action that LXD (or the gateway's rules) refused; the message says which and why."""

    status = 502
    slug = "container-failed"


class ContainerCreateError(ContainerServiceError):
    """The container could not be created."""

    slug = "create-failed"


class ContainerStartError(ContainerServiceError):
    """The container was created but would not start (removed again unless the caller removes it itself)."""

    slug = "start-failed"


class CreateCancelled(ContainerServiceError):
    """The create was stopped on request; what it had made has been removed again."""

    status = 409
    slug = "cancelled"


class ContainerRemoveError(ContainerServiceError):
    """One or more containers could not be removed; `failed` names them in the order given."""

    slug = "delete-failed"

    def __init__(self, message: str, failed: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.failed = list(failed)


def _err(exc: BaseException) -> str:
    return str(getattr(exc, "error", None) or exc)


# --------------------------------------------------------------------------------------------- create


OperationHook = Callable[[str, str], Awaitable[None]]
"""Told of an LXD operation: (operation id, status)."""
StepHook = Callable[[str], Awaitable[None]]
"""Told of each step of a create reached (`creating`, `created`)."""


@dataclass
class CreatedContainer:
    """A container made by `create_from_spec`: it (None when not read back), the image it came from, and NIC
    parents of unknown subnet."""

    container: Instance | None
    image: ImageSource
    unknown_parents: list[str] = field(default_factory=list)
    ensured_ipv4: bool = False


async def resolve_image(client: Client, spec: ContainerSpec, *, sources: Sequence[ServerSpec] = (),
                        alias_template: str = DEFAULT_ALIAS_TEMPLATE, progress: ProgressFn | None = None,
                        ) -> ImageSource:
    """The image a spec names: a local fingerprint as it is, else found (and copied locally when asked)."""
    from app.images.service import find_image

    ref = spec.image
    if ref.fingerprint:
        image = await client.images.get(ref.fingerprint)
        return ImageSource(fingerprint=image.fingerprint, info=image.model_dump(mode="json"))
    return await find_image(client, series=ref.series, alias=ref.alias, arch=ref.arch, sources=sources,
                            copy_local=ref.copy_local, progress=progress, alias_template=alias_template)


async def start_container(client: Client, name: str, *, on_operation: OperationHook | None = None) -> None:
    """Start a container and wait until it has started (`{action: start, timeout: -1}`, no ETag)."""
    op = await client.instances.start(name, timeout=-1, wait=False)
    await _followed(op, on_operation)


async def _followed(op: Operation, on_operation: OperationHook | None) -> None:
    """Wait for `op`, telling `on_operation` of it when it starts and how it ended."""
    if on_operation is None or not op.id:
        await op.wait()
        return
    await on_operation(op.id, "Running")
    try:
        await op.wait()
    except BaseException:
        await on_operation(op.id, op.state.status or "Failure")
        raise
    await on_operation(op.id, op.state.status or "Success")


async def _roll_back(client: Client, name: str, why: str) -> None:
    try:
        await asyncio.shield(remove_container(client, name))
    except Exception as exc:
        log.warning("removing container %s after %s failed: %s", name, why, exc)


async def create_from_spec(client: Client, spec: ContainerSpec, *, image: ImageSource | None = None,
                           sources: Sequence[ServerSpec] = (), alias_template: str = DEFAULT_ALIAS_TEMPLATE,
                           bridge: str = DEFAULT_BRIDGE, bridge_nat: bool = True,
                           progress: ProgressFn | None = None, cancel_check: CancelCheck | None = None,
                           target: str | None = None, on_operation: OperationHook | None = None,
                           on_step: StepHook | None = None, roll_back: bool = True,
                           read_back: bool = True) -> CreatedContainer:
    """Create a container from `spec` and (unless `spec.start` is false) start it.

    The image is `image` when given, else resolved from `spec.image` (an error there reads
    "acquiring LXD image: ..."). When the only NIC parent without a known subnet is `bridge`, the bridge is
    given IPv4 first. A failed create raises "container creation failed: ..."; a failed start removes the
    container again and raises the start error. `target` places it on a cluster member; `on_operation` hears
    of each LXD operation (create, start) with its status. `cancel_check` is
    consulted after each step: when it answers true (or raises), what was created is removed and
    `CreateCancelled` (or its exception) is raised; a cancelled task rolls back the same way.

    `on_step` is told `"creating"` just before the create request is sent (from then on a container of that name
    may exist) and `"created"` once LXD made it. `roll_back=False` leaves what was made to the caller (which then
    removes it itself). When LXD stops answering, its error is raised as it is: nothing is removed then.
    `read_back=False` skips reading the container once made (`container` is None): for a caller that reads it
    its own way.
    """
    from app.networks.service import ensure_ipv4

    async def roll_back_if(created: bool, why: str) -> None:
        if created and roll_back:
            await _roll_back(client, spec.name, why)

    async def checkpoint(created: bool) -> None:
        if cancel_check is None:
            return
        try:
            stop = cancel_check()
        except BaseException:
            await roll_back_if(created, "a cancel")
            raise
        if stop:
            await roll_back_if(created, "a cancel")
            raise CreateCancelled(f'creating container "{spec.name}" was cancelled')

    await report(progress, PROVISIONING, None, "Creating container spec")
    if image is None:
        try:
            image = await resolve_image(client, spec, sources=sources, alias_template=alias_template,
                                        progress=progress)
        except (LXDUnavailable, LXDTimeout):
            raise  # the target LXD itself is gone or slow: not an image problem
        except Exception as exc:
            raise acquisition_error(exc) from exc
    facts = await client.server_info()
    request = build_create_request(spec, image, facts.version)
    ensured = False
    if needs_bridge_ipv4(request.unknown_parents, facts.network_api, bridge):
        try:
            ensured = await ensure_ipv4(client, bridge, nat=bridge_nat)
        except LXDError as exc:
            raise ContainerCreateError(f"ensuring default bridge IPv4 config: {_err(exc)}") from exc
    elif request.unknown_parents:
        log.warning("no subnet known for NIC parents %s of %s", request.unknown_parents, spec.name)
    await checkpoint(False)

    await report(progress, PROVISIONING, None, "Creating container")
    if on_step is not None:
        await on_step("creating")
    created = False
    try:
        op = await client.instances.create_from(request.instance, target=target, wait=False)
        created = True
        try:
            await _followed(op, on_operation)
        except (LXDUnavailable, LXDTimeout, OperationVanished):
            raise  # LXD stopped answering (or restarted): whether it made the container is unknown
        except LXDError as exc:
            raise ContainerCreateError(f"container creation failed: {_err(exc)}") from exc
        if on_step is not None:
            await on_step("created")
        await checkpoint(True)
        if spec.start:
            await report(progress, PROVISIONING, None, "Starting container")
            try:
                await start_container(client, spec.name, on_operation=on_operation)
            except (LXDUnavailable, LXDTimeout, OperationVanished):
                await roll_back_if(True, "LXD stopped answering")
                raise  # not a refusal to start: LXD did not answer
            except LXDError as exc:
                await roll_back_if(True, "a failed start")
                raise ContainerStartError(_err(exc)) from exc
            await checkpoint(True)
    except asyncio.CancelledError:
        await roll_back_if(created, "a cancel")
        raise
    container = await client.instances.get(spec.name) if read_back else None
    await report(progress, "running", 100, "Container started" if spec.start else "Container created")
    return CreatedContainer(container=container, image=image, unknown_parents=request.unknown_parents,
                            ensured_ipv4=ensured)


# --------------------------------------------------------------------------------------------- remove


async def remove_container(client: Client, name: str, *, attempts: int = DELETE_ATTEMPTS,
                           retry_delay: float = DELETE_RETRY_DELAY,
                           sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
    """Remove a container: force-stop it unless stopped (with the state's ETag), then delete it.

    A missing container is an error at the first read; "not found" on the delete itself counts as done. A delete
    LXD refuses outright is not retried; a delete whose operation fails is retried (`attempts` in all,
    `retry_delay` seconds apart), then fails with "attempt count exceeded: <last error>".
    """
    state = await client.instances.state(name)
    if state.status_code != StatusCode.STOPPED:
        await client.instances.set_state(name, "stop", force=True, timeout=-1, etag=state.etag)
    last: BaseException | None = None
    for attempt in range(attempts):
        try:
            op = await client.instances.delete(name, wait=False)
        except LXDError as exc:
            if is_not_found(exc):
                return
            raise
        try:
            await op.wait()
            return
        except LXDError as exc:
            last = exc
            log.info("deleting container %s failed (attempt %d of %d): %s", name, attempt + 1, attempts, exc)
        if attempt + 1 < attempts:
            await sleep(retry_delay)
    raise ContainerRemoveError(f"attempt count exceeded: {_err(last) if last else 'delete failed'}", [name])
