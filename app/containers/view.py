"""The gateway's view of a container: LXD's instance and its live state, shaped as the `Container` of the API.

Shared by the job results and the HTTP routes, so that a job's `result` and `GET /v1/containers/{name}` agree.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from app.containers.addresses import DEFAULT_SKIPPED_INTERFACES, container_addresses
from app.containers.spec import Container, status_of
from app.lxd.client import Client
from app.networks.decisions import NetworkConfigError, interface_info_from_devices, nic_devices


def _p(name: str) -> str:
    return f"/1.0/instances/{quote(name, safe='')}"


async def read_container(client: Client, name: str) -> dict[str, Any]:
    """The instance with its live `state` (one call where the server returns both), its ETag in `_etag`."""
    env = await client.request("GET", _p(name), params={"recursion": 1})
    data = dict(env.metadata or {})
    if not isinstance(data.get("state"), dict):
        data["state"] = (await client.request("GET", f"{_p(name)}/state")).metadata or {}
    data["_etag"] = env.etag
    return data


async def list_with_state(client: Client) -> list[dict[str, Any]]:
    """Every container of the client's project with its live state, in one call."""
    env = await client.request("GET", "/1.0/instances", params={"recursion": 2})
    return [dict(i) for i in env.metadata or [] if (i or {}).get("type", "container") == "container"]


def addresses_of(data: dict[str, Any]) -> list[dict[str, str]]:
    """Usable addresses: no loopback, no link-local, nothing on the LXD bridge itself."""
    return [{"address": a.value, "family": a.family, "scope": str(a.scope) or "global", "interface": a.interface}
            for a in container_addresses(data.get("state") or {}, DEFAULT_SKIPPED_INTERFACES)]


def interfaces_of(data: dict[str, Any]) -> list[dict[str, Any]]:
    devices = data.get("expanded_devices") or data.get("devices") or {}
    try:
        infos = interface_info_from_devices(nic_devices(devices))
    except NetworkConfigError:
        return []
    return [i.model_dump(mode="json") for i in infos]


def container_view(data: dict[str, Any], *, remote: str, project: str) -> dict[str, Any]:
    """The `Container` of the API for an instance read with `read_container` or `list_with_state`."""
    c = Container(data)
    state = data.get("state") or {}
    status = status_of(state) if state.get("status_code") else status_of(data)
    return {
        "name": c.name,
        "status": status,
        "status_code": state.get("status_code") or data.get("status_code") or 0,
        "architecture": data.get("architecture") or "",
        "cpus": c.cpus(),
        "memory_mib": c.memory_mib(),
        "profiles": list(data.get("profiles") or []),
        "config": dict(c.config),
        "devices": dict(data.get("devices") or {}),
        "metadata": c.all_metadata(),
        "addresses": addresses_of(data),
        "interfaces": interfaces_of(data),
        "description": data.get("description") or "",
        "ephemeral": bool(data.get("ephemeral")),
        "created_at": data.get("created_at"),
        "location": data.get("location") or "",
        "project": data.get("project") or project,
        "remote": remote,
    }
