"""What the read model keeps of containers: each as the API shows it (`Container`), listed with one
`recursion=2` call and read one by one with `recursion=1` (the instance and its state in one call)."""

from __future__ import annotations

from typing import Any

from app.containers.view import container_view, list_with_state, read_container
from app.lxd.client import Client
from app.lxd.errors import NotFound
from app.mirror import MirrorKind, Shaped

KIND = "instances"


async def load_all(client: Client, remote: str) -> list[tuple[str, Shaped]]:
    project = client.project or "default"
    return [(str(i.get("name")), container_view(i, remote=remote, project=project))
            for i in await list_with_state(client)]


async def load_one(client: Client, remote: str, name: str) -> Shaped | None:
    try:
        data = await read_container(client, name)
    except NotFound:
        return None
    if data.get("type", "container") != "container":
        return None
    return container_view(data, remote=remote, project=client.project or "default")


async def load_definition(client: Client, remote: str, name: str, previous: Shaped) -> Shaped | None:
    """The container read without its state (`recursion=0`, which LXD answers at once), its addresses kept from
    `previous`; a full read when its status is not the one `previous` has (the state changed too)."""
    try:
        inst = await client.instances.get(name)
    except NotFound:
        return None
    if inst.type != "container":
        return None
    data = inst.model_dump(mode="json", by_alias=True, exclude_unset=True)
    view = container_view(data, remote=remote, project=client.project or "default")
    if view["status"] != previous.get("status"):
        return await load_one(client, remote, name)
    view["addresses"] = previous.get("addresses") or []
    return view


def running(view: Shaped) -> bool:
    return view.get("status") == "Running"


def awaits_address(view: Shaped) -> bool:
    """A running container with a NIC and no IPv4 address yet (a DHCP lease comes without an event)."""
    return bool(view.get("interfaces")) and not any(a.get("family") == "inet" for a in view.get("addresses") or ())


def touched_by(job_kind: str, params: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """The containers a job of `job_kind` with `params` may have changed (read again before its end is seen)."""
    if not job_kind.startswith(("container.", "snapshot.")) or job_kind == "container.exec":
        return []
    names = [str(n) for n in (params.get("names") or [])]
    names += [str(params[k]) for k in ("name", "new_name") if params.get(k)]
    return [(KIND, names)] if names else []


CONTAINERS = MirrorKind(name=KIND, load_all=load_all, load_one=load_one, load_definition=load_definition,
                        running=running, awaits_address=awaits_address)
