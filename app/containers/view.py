"""The gateway's view of a container: LXD's instance and its live state, shaped as the `Container` of the API.

Shared by the job results and the HTTP routes, so that a job's `result` and `GET /v1/containers/{name}` agree.
"""

from __future__ import annotations

from typing import Any

from app.containers.addresses import DEFAULT_SKIPPED_INTERFACES, container_addresses
from app.containers.spec import cpus_of, memory_mib_of, status_of, user_metadata
from app.lxd.client import Client
from app.lxd.errors import LXDError
from app.lxd.models import Instance, InstanceState
from app.networks.decisions import NetworkConfigError, interface_info_from_devices, nic_devices


def _data(inst: Instance) -> dict[str, Any]:
    return inst.model_dump(mode="json", by_alias=True, exclude_unset=True)


UNREACHABLE_MEMBER = "Missing event connection with target cluster member"
"""What LXD answers (after 10 s) for an instance whose cluster member it cannot reach."""


async def read_container(client: Client, name: str) -> dict[str, Any]:
    """The instance with its live `state` (one call where the server returns both), its ETag in `_etag`. An
    instance on a cluster member LXD cannot reach is read as LXD lists it: status `Error`, its location, no state."""
    try:
        inst = await client.instances.get(name, recursion=1)
    except LXDError as exc:
        if UNREACHABLE_MEMBER not in exc.error:
            raise
        listed = [i for i in await client.instances.list(recursion=1, filter=f"name eq {name}") if i.name == name]
        if not listed:
            raise
        return {**_data(listed[0]), "_etag": ""}
    if inst.state is None:
        inst.state = await client.instances.state(name)
    data = _data(inst)
    data["_etag"] = inst.etag
    return data


async def list_with_state(client: Client) -> list[dict[str, Any]]:
    """Every container of the client's project with its live state, in one call. An instance on a cluster member
    LXD cannot reach comes with its name, status `Error` and location only (no type): it is kept."""
    return [_data(i) for i in await client.instances.list(recursion=2) if i.type in ("container", "")]


def addresses_of(data: dict[str, Any]) -> list[dict[str, str]]:
    """Usable addresses: no loopback, no link-local, nothing on the LXD bridge itself."""
    return [{"address": a.value, "family": a.family, "scope": str(a.scope) or "global", "interface": a.interface}
            for a in container_addresses(InstanceState.model_validate(data.get("state") or {}),
                                         DEFAULT_SKIPPED_INTERFACES)]


def interfaces_of(data: dict[str, Any]) -> list[dict[str, Any]]:
    devices = data.get("expanded_devices") or data.get("devices") or {}
    try:
        infos = interface_info_from_devices(nic_devices(devices))
    except NetworkConfigError:
        return []
    return [i.model_dump(mode="json") for i in infos]


def error_message(status: str, location: str) -> str:
    """What an `Error` status of a container in a cluster means: LXD could not reach the member holding it."""
    if status == "Error" and location:
        return f"LXD cannot reach cluster member {location!r}, which holds this container"
    return ""


def container_view(data: dict[str, Any], *, remote: str, project: str) -> dict[str, Any]:
    """The `Container` of the API for an instance read with `read_container` or `list_with_state`."""
    config = data.get("config") or {}
    state = data.get("state") or {}
    status = status_of(state) if state.get("status_code") else status_of(data)
    return {
        "name": data.get("name", ""),
        "status": status,
        "status_code": state.get("status_code") or data.get("status_code") or 0,
        "architecture": data.get("architecture") or "",
        "cpus": cpus_of(config.get("limits.cpu", "")),
        "memory_mib": memory_mib_of(config.get("limits.memory", "")),
        "profiles": list(data.get("profiles") or []),
        "config": dict(config),
        "devices": dict(data.get("devices") or {}),
        "metadata": user_metadata(config),
        "addresses": addresses_of(data),
        "interfaces": interfaces_of(data),
        "description": data.get("description") or "",
        "ephemeral": bool(data.get("ephemeral")),
        "created_at": data.get("created_at"),
        "location": data.get("location") or "",
        "status_message": error_message(status, data.get("location") or ""),
        "project": data.get("project") or project,
        "remote": remote,
    }
