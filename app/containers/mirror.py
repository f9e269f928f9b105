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
    if (data.get("type") or "container") != "container":  # no type: on a cluster member LXD cannot reach
        return None
    return container_view(data, remote=remote, project=client.project or "default")


async def load_definition(client: Client, remote: str, name: str) -> Shaped | None:
    """The container read without its state (`recursion=0`, which LXD answers at once; its status is in it)."""
    try:
        inst = await client.instances.get(name)
    except NotFound:
        return None
    if inst.type != "container":
        return None
    data = inst.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return container_view(data, remote=remote, project=client.project or "default")


def keep_state(view: Shaped, current: Shaped | None) -> tuple[Shaped, bool]:
    """A container read without its state, with the addresses the model has while its status is the same; one
    that stopped has none; one that started (or is new) gets them from the full read that follows."""
    if current is not None and view["status"] == current.get("status"):
        return {**view, "addresses": current.get("addresses") or []}, True
    return {**view, "addresses": []}, view["status"] not in ("Running", "Frozen")


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
                        keep_state=keep_state, running=running, awaits_address=awaits_address,
                        per_member=True)
