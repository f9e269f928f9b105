"""Containers on an LXD server: create from a spec and start (removing it again when the start fails), remove
one or many (forced stop, delete with retries), list and filter, addresses, config, profiles and disks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from app.containers.addresses import DEFAULT_SKIPPED_INTERFACES, Address, container_addresses
from app.containers.spec import (
    STOPPED,
    Container,
    ContainerSpec,
    alive_containers,
    build_create_request,
    filter_containers,
    merge_config,
    remove_failure_message,
    replace_profile,
    state_request,
    writable_instance,
)
from app.http.errors import ProblemError
from app.images.search import DEFAULT_ALIAS_TEMPLATE, ImageSource, acquisition_error
from app.jobs.progress import PROVISIONING, CancelCheck, ProgressFn, if_match, report, server_facts
from app.lxd.client import Client
from app.lxd.errors import LXDError, LXDTimeout, LXDUnavailable, OperationVanished
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


def _p(name: str) -> str:
    return f"/1.0/instances/{quote(name, safe='')}"


def _err(exc: BaseException) -> str:
    return str(getattr(exc, "error", None) or exc)


async def get_container(client: Client, name: str) -> tuple[Container, str | None]:
    """The container as LXD describes it, and its ETag."""
    env = await client.request("GET", _p(name))
    return Container(dict(env.metadata or {})), env.etag


async def _put(client: Client, name: str, data: Mapping[str, Any], etag: str | None) -> None:
    await client.mutate("PUT", _p(name), json=writable_instance(data), headers=if_match(etag))


# --------------------------------------------------------------------------------------------- create


OperationHook = Callable[[str, str], Awaitable[None]]
"""Told of an LXD operation: (operation id, status)."""
StepHook = Callable[[str], Awaitable[None]]
"""Told of each step of a create reached (`creating`, `created`)."""


@dataclass
class CreatedContainer:
    """A container made by `create_from_spec`: it, the image it came from, and NIC parents of unknown subnet."""

    container: Container
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
    op = await client.mutate("PUT", f"{_p(name)}/state", json=state_request("start"), wait=False)
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
                           on_step: StepHook | None = None, roll_back: bool = True) -> CreatedContainer:
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
    facts = await server_facts(client)
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
        op = await client.mutate("POST", "/1.0/instances", json=request.body, wait=False,
                                 params={"target": target} if target else None)
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
    container, _ = await get_container(client, spec.name)
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
    env = await client.request("GET", f"{_p(name)}/state")
    state = env.metadata or {}
    if state.get("status_code") != STOPPED:
        await client.mutate("PUT", f"{_p(name)}/state", json=state_request("stop", force=True),
                            headers=if_match(env.etag))
    last: BaseException | None = None
    for attempt in range(attempts):
        try:
            op = await client.mutate("DELETE", _p(name), wait=False)
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


async def remove_containers(client: Client, names: Iterable[str], **kw: Any) -> None:
    """Remove each container in order; the failures do not stop the others and are reported together:
    `failed to remove containers: c1, c2` (`.failed` lists them)."""
    failed: list[str] = []
    for name in names:
        try:
            await remove_container(client, name, **kw)
        except Exception as exc:
            log.warning("removing container %s failed: %s", name, exc)
            failed.append(name)
    if failed:
        raise ContainerRemoveError(remove_failure_message(failed), failed)


# --------------------------------------------------------------------------------------------- read


async def _instances(client: Client) -> list[dict[str, Any]]:
    env = await client.request("GET", "/1.0/instances", params={"recursion": 1})
    return [dict(i) for i in env.metadata or []]


async def list_containers(client: Client, prefix: str = "", statuses: Sequence[str] = ()) -> list[Container]:
    """Containers whose name starts with `prefix` and (when given) whose status is one of `statuses`, in the
    server's order."""
    return [Container(dict(i)) for i in filter_containers(await _instances(client), prefix, statuses)]


async def list_alive_containers(client: Client, prefix: str = "") -> list[Container]:
    """Containers starting, started, running, stopping or stopped (not frozen, errored, ...)."""
    return [Container(dict(i)) for i in alive_containers(await _instances(client), prefix)]


async def container_addresses_of(client: Client, name: str,
                                 skip_interfaces: Iterable[str] = DEFAULT_SKIPPED_INTERFACES) -> list[Address]:
    """The container's usable addresses: none on `skip_interfaces`, no loopback, no link-local."""
    env = await client.request("GET", f"{_p(name)}/state")
    return container_addresses(env.metadata or {}, skip_interfaces)


async def container_profiles(client: Client, name: str) -> list[str]:
    container, _ = await get_container(client, name)
    return list(container.data.get("profiles") or [])


# --------------------------------------------------------------------------------------------- update


async def update_container_config(client: Client, name: str, config: Mapping[str, str]) -> None:
    """Merge `config` into the container's config (kept keys untouched), written back under its ETag."""
    container, etag = await get_container(client, name)
    container.data["config"] = merge_config(container.data.get("config"), config)
    await _put(client, name, container.data, etag)


async def update_container_profiles(client: Client, name: str, profiles: Sequence[str]) -> None:
    """Set the container's whole profile list (order kept); every profile must exist."""
    try:
        container, etag = await get_container(client, name)
    except LXDError as exc:
        raise ContainerServiceError(f'failed to get "{name}": {_err(exc)}') from exc
    container.data["profiles"] = list(profiles)
    try:
        op = await client.mutate("PUT", _p(name), json=writable_instance(container.data), headers=if_match(etag),
                                 wait=False)
    except LXDError as exc:
        raise ContainerServiceError(f'failed to update "{name}" with profiles: {_err(exc)}') from exc
    try:
        await op.wait()
    except LXDError as exc:
        raise ContainerServiceError(f"update failed: {_err(exc)}") from exc


async def replace_container_profile(client: Client, name: str, old: str, new: str) -> list[str]:
    """Replace profile `old` by `new` (no `old`: append `new`; no `new`: remove `old`); the new list."""
    try:
        container, etag = await get_container(client, name)
    except LXDError as exc:
        raise ContainerServiceError(f'failed to get container "{name}": {_err(exc)}') from exc
    profiles = replace_profile(container.data.get("profiles") or [], old, new)
    container.data["profiles"] = profiles
    try:
        op = await client.mutate("PUT", _p(name), json=writable_instance(container.data), headers=if_match(etag),
                                 wait=False)
    except LXDError as exc:
        raise ContainerServiceError(f'failed to update container "{name}": {_err(exc)}') from exc
    await op.wait()
    return profiles


async def add_disk(client: Client, name: str, device: str, path: str, source: str, *, pool: str = "",
                   read_only: bool = False) -> Container:
    """Add a disk device to a container (`DeviceExistsError` when the name is taken), written under its ETag."""
    container, etag = await get_container(client, name)
    container.add_disk(device, path, source, pool, read_only)
    await _put(client, name, container.data, etag)
    return container


async def write_container(client: Client, container: Container) -> None:
    """Write a modified container definition back (no ETag: the last writer wins)."""
    await _put(client, container.name, container.data, None)

