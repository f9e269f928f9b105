"""The policy guard at the HTTP edge: a 403 problem naming the refused key and the rule that would allow it, before
LXD is asked to change anything.

What a caller may do beyond the allow-list (app.tokens.policy) is the union of the operator's `LXDGW_POLICY_ALLOW`
and the calling token's own `allow` list. Two steps: `enforce` checks what the request itself carries (no LXD
needed, answered first); `enforce_expanded` and `enforce_profile` read LXD (the profiles named, the networks it
manages) and check the definition LXD would actually run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from starlette.requests import HTTPConnection

from app.http.auth import Principal
from app.http.deps import Backend
from app.http.errors import ProblemError
from app.lxd.errors import NotFound
from app.lxd.kept import kept_on
from app.lxd.models import Event
from app.lxd.profiles import Profile
from app.tokens.policy import Layer, Policy, PolicyViolation

Devices = Mapping[str, Mapping[str, object] | None]


def policy_for(conn: HTTPConnection, principal: Principal) -> Policy:
    return Policy.of([*conn.app.state.settings.policy_allow, *principal.allow])


def as_sent(config: Mapping[str, object | None] | None,
            devices: Mapping[str, Mapping[str, object | None] | None] | None) -> tuple[dict[str, object],
                                                                                     dict[str, dict[str, object]]]:
    """What a merge patch sets: no removed keys or devices, and no untyped device (a merge into an existing
    device, checked once merged)."""
    return ({k: v for k, v in (config or {}).items() if v is not None},
            {name: {k: v for k, v in dev.items() if v is not None} for name, dev in (devices or {}).items()
             if dev is not None and dev.get("type") is not None})


def enforce(conn: HTTPConnection, principal: Principal, *, config: Mapping[str, object | None] | None = None,
            devices: Devices | None = None) -> None:
    """What a request itself carries (container create/patch/device add, profile create/update/patch)."""
    policy_for(conn, principal).check_instance(config, devices)


NETWORKS_KEEP = 5.0
"""Seconds the default project's managed networks are kept (for the requests of a burst) while no network event
came."""


def _about_networks(event: Event) -> bool:
    """An event after which the networks LXD manages may differ: any network lifecycle event (created, deleted,
    renamed, updated...), any operation on networks."""
    md = event.metadata
    if event.type == "lifecycle":
        return str(md.get("action", "")).startswith("network")
    return event.type == "operation" and bool((md.get("resources") or {}).get("networks"))


async def managed_networks(b: Backend) -> dict[str, str]:
    """The networks LXD manages (name -> type), as seen from the request's project.

    LXD lists networks only with what uses each (costly: it looks at every instance), so in the default project
    the answer is kept `NETWORKS_KEEP` seconds while LXD's events stream carries no network event (`app.lxd.kept`:
    only what was read on a settled stream that stayed up; a network created, deleted or renamed through LXD drops
    it). Another project reads it every time (its networks may be the default project's, whose events its stream
    does not carry)."""
    client = b.client
    if (client.project or "default") != "default":
        return {n.name: n.type for n in await client.networks.list() if n.managed}
    bus = client.events.bus()
    kept = kept_on(bus, "managed-networks", _about_networks, NETWORKS_KEEP)
    if (hit := kept.get(bus, "")) is not None:
        return dict(hit)
    begun = kept.begin(bus)
    managed = {n.name: n.type for n in await client.networks.list() if n.managed}
    kept.put(bus, "", dict(managed), begun)
    return managed


async def profile_layers(b: Backend, names: Sequence[str], where: str) -> list[Layer]:
    """The profiles named, read from LXD in the request's project; an unknown one is a 422 naming it."""
    layers = []
    for i, name in enumerate(names):
        try:
            p = await b.client.profiles.get(name)
        except NotFound:
            message = f"no profile {name!r} in project {b.project!r}"
            raise ProblemError(422, f"{where}.{i}: {message}", slug="validation",
                               errors=[{"field": f"{where}.{i}", "message": message}]) from None
        layers.append(Layer(config=p.config, devices=p.devices, profile=name, project=p.project or b.project))
    return layers


async def enforce_expanded(conn: HTTPConnection, b: Backend, *, profiles: Sequence[str], layers: Iterable[Layer],
                           where: str = "body.profiles") -> None:
    """The instance LXD would run: `profiles` (read from LXD) with `layers` (the instance's own) laid over them."""
    policy = policy_for(conn, b.principal)
    expanded = [*await profile_layers(b, profiles, where), *layers]
    managed = await managed_networks(b)
    policy.check_expanded(expanded, managed)


async def enforce_container(conn: HTTPConnection, b: Backend, name: str) -> None:
    """A container as LXD runs it now (its profiles read from LXD, its own config and devices over them), before
    the caller runs something in it, reads or writes its files or starts it: a token may not use a container whose
    definition it could not have made (a privileged one another token's rule allowed, say)."""
    try:
        inst = await b.client.instances.get(name)
    except NotFound:
        raise ProblemError(404, f"container {name!r} not found", slug="container-not-found") from None
    await enforce_expanded(conn, b, profiles=inst.profiles, where="container.profiles",
                           layers=[Layer(config=inst.config, devices=inst.devices, lxd_written=True)])


async def enforce_profile(conn: HTTPConnection, b: Backend, *, config: Mapping[str, object | None] | None,
                          devices: Devices | None, current: Profile | None = None) -> None:
    """A profile's whole content after an edit, as untrusted: a `profile:` rule never covers editing it. With
    `current` (the profile as LXD holds it), also every container that uses it, as LXD would run it with the new
    content: an edit that removes what masked another profile's forbidden key is refused too. (A container already
    beyond the caller's policy is not the caller's to use, and is left out.)"""
    enforce(conn, b.principal, config=config, devices=devices)
    managed = await managed_networks(b)
    policy = policy_for(conn, b.principal)
    policy.check_instance(config, devices, managed)
    if current is None:
        return
    edited = Layer(config=config or {}, devices=devices or {})  # untrusted, whatever rules name the profile
    for project, name in current.instances():
        if not b.principal.allows_project(project):
            continue  # a container the caller cannot reach at all (a project sharing these profiles, say)
        user = b if project == b.project else replace(b, project=project, client=b.client.with_project(project))
        try:
            inst = await user.client.instances.get(name)
        except NotFound:
            continue  # gone meanwhile
        own = Layer(config=inst.config, devices=inst.devices, lxd_written=True)
        layers = await profile_layers(user, inst.profiles, "profiles")
        try:
            policy.check_expanded([*layers, own], managed)
        except PolicyViolation:
            continue  # already beyond this caller's policy: it cannot use that container (see enforce_container)
        try:
            policy.check_expanded([edited if layer.profile == current.name else layer for layer in layers] + [own],
                                  managed)
        except PolicyViolation as v:
            raise ProblemError(403, f"container {name!r} uses profile {current.name!r}, and with this edit it would "
                               f"run with what the policy refuses: {v.detail}", slug="policy",
                               title="Forbidden by policy", key=v.key, rule=v.rule) from None


def enforce_volume(conn: HTTPConnection, principal: Principal, config: Mapping[str, object | None] | None) -> None:
    """A custom storage volume's config."""
    policy_for(conn, principal).check_volume_config(config)


def enforce_image_server(conn: HTTPConnection, principal: Principal, server: str | None,
                         configured: Iterable[str]) -> None:
    policy_for(conn, principal).check_image_server(server, configured)
