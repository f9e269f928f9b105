"""`/v1/profiles`: LXD profiles (list, create, read with ETag, replace, merge-patch, delete), their NICs, and the
root-disk and network checks containers of a profile rely on."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Request, Response
from pydantic import BaseModel, Field

from app.http.cache import CACHE_HEADERS, answer, read_one, read_page
from app.http.deps import (
    NAME_PATTERN,
    NAME_RULE,
    Backend,
    BackendDep,
    Config,
    ConfigKey,
    DeviceName,
    Devices,
    IfMatch,
    OwnProfiles,
)
from app.http.errors import ProblemError, lxd_cause, problem_responses, status_of
from app.http.etag import Admin, Reader, Writer, edit, merge_patch
from app.http.pagination import Page, PageDep, page_of
from app.http.redact import redact_secret_config
from app.lxd.errors import NotFound
from app.lxd.models import api_object
from app.lxd.profiles import Profile
from app.mirror import Lookup, Record, Shaped, stable_part
from app.networks.decisions import NetworkConfigError
from app.networks.service import nics_from_profile, verify_network_device
from app.profiles.mirror import PROFILES
from app.profiles.schemas import CONFIG_EXAMPLE, DEVICES_EXAMPLE, ProfileOut
from app.storage.service import StorageServiceError, ensure_default_storage
from app.store.tokens import Scope
from app.tokens.guard import as_sent, enforce, enforce_profile

router = APIRouter(prefix="/v1/profiles", tags=["profiles"])

ProfileName = Annotated[str, Path(pattern=NAME_PATTERN, description=NAME_RULE, examples=["web"])]


class ProfileBody(BaseModel):
    """What a PUT replaces: description, config and devices."""

    description: str = Field("", description="free text", examples=["web servers"])
    config: Config = Field(default_factory=dict, description="LXD instance config keys", examples=[CONFIG_EXAMPLE])
    devices: Devices = Field(default_factory=dict, description="devices by name", examples=[DEVICES_EXAMPLE])


class ProfileCreate(ProfileBody):
    name: str = Field(pattern=NAME_PATTERN, description=NAME_RULE, examples=["web"])


class ProfilePatch(BaseModel):
    """A JSON merge patch (RFC 7396): `null` removes a config key or a device."""

    description: str | None = Field(None, description="new description (absent: unchanged)", examples=["web"])
    config: dict[ConfigKey, str | None] | None = Field(None, description="keys to set; `null` removes one",
                                                       examples=[{"limits.cpu": "4", "user.team": None}])
    devices: dict[DeviceName, dict[ConfigKey, str | None] | None] | None = Field(
        None, description="devices to add or merge; `null` removes one", examples=[{"eth1": None}])


class Nic(BaseModel):
    name: str = Field(description="the device name", examples=["eth0"])
    hwaddr: str = Field(description="its MAC address (a new one when the profile sets none; not written back)",
                        examples=["00:16:3e:4a:10:9c"])
    device: dict[str, str] = Field(description="the NIC device, `hwaddr` included",
                                   examples=[{"type": "nic", "nictype": "bridged", "parent": "lxdbr0",
                                              "hwaddr": "00:16:3e:4a:10:9c"}])


class StorageEnsured(BaseModel):
    changed: bool = Field(description="whether a root disk was added", examples=[True])
    pool: str | None = Field(description="the pool of the root disk added (null: the profile had one)",
                             examples=["default"])


class NetworkVerified(BaseModel):
    bridge: str = Field(description="the network containers of the profile attach to", examples=["lxdbr0"])
    created_bridge: bool = Field(description="whether the bridge was created", examples=[False])
    added_nic: str | None = Field(description="the NIC device added to the profile (null: none)", examples=["eth0"])


def _key(backend: BackendDep, name: str) -> tuple[str, ...]:
    return (backend.remote, backend.project, "profile", name)


async def _get(backend: BackendDep, name: str) -> Profile:
    return await backend.client.profiles.get(name)


def _stable(view: Shaped) -> Shaped:
    return {k: v for k, v in view.items() if k != "used_by"}


def _redacted(view: Shaped) -> Shaped:
    return {**view, "config": redact_secret_config(view.get("config") or {})}


def _seen(b: Backend, rec: Record) -> tuple[Shaped, bytes, str]:
    """The profile as the caller may see it (secret config values redacted without `write`), with the gateway's
    ETag: its second part leaves out `used_by`, which no write of the profile changes."""
    if b.principal.has(Scope.write):
        return rec.view("", None, _stable)
    return rec.view("read", _redacted, _stable)


async def _read(request: Request, b: Backend, name: str, *, live: bool = False) -> Lookup:
    return await read_one(request, b.mirror, b.remote, b.project, PROFILES, name, client=b.client, live=live,
                          missing=ProblemError(404, f"profile {name!r} not found", slug="not-found"))


def _versions(b: Backend, p: Profile) -> set[str | None]:
    """What an `If-Match` may name: the stable part of the gateway's ETag, or LXD's own ETag."""
    rec = Record(ProfileOut.of(p).model_dump(mode="json"), 0.0, 0, 0)
    return {stable_part(_seen(b, rec)[2]), p.etag}


def _touch_users(b: Backend, used_by: list[str]) -> None:
    """A profile changed through the gateway: the containers using it show it (their `interfaces` come from the
    devices they get from it), so the next read of each waits for it to be read again."""
    by_project: dict[str, list[str]] = {}
    for url in used_by:
        parts, project = api_object(url)
        if len(parts) == 2 and parts[0] == "instances":
            by_project.setdefault(project, []).append(parts[1])
    for project, names in by_project.items():
        b.mirror.touch(b.remote, project, "instances", *names)


def _changed(request: Request, b: Backend, lk: Lookup) -> Response:
    """The answer to a profile write, once the containers using it will be read again."""
    assert lk.record is not None
    _touch_users(b, list(lk.record.data.get("used_by") or []))
    return answer(request, lk, lambda rec: _seen(b, rec))


def _if_match(value: str | None) -> str | None:
    return ", ".join(stable_part(v) for v in value.split(",")) if value else value


@router.get("", summary="List profiles", response_model=Page[ProfileOut], operation_id="profiles-list",
            responses={200: {"headers": CACHE_HEADERS}, 304: {"description": "not modified since the "
                                                                          "`If-None-Match` ETag"},
                       **problem_responses(400, 401, 403, 404, 422, 503)})
async def list_profiles(request: Request, backend: BackendDep, page: PageDep, _: Reader) -> Response:
    """Profiles sorted by name, from the read model while it is in sync (`X-Gateway-Cache`, `Age`)."""
    b = backend
    return await read_page(request, b.mirror, b.remote, b.project, PROFILES, client=b.client,
                           view=lambda rec: _seen(b, rec), page=page, filters=b.filters())


@router.post("", summary="Create a profile", status_code=201, response_model=ProfileOut,
             operation_id="profiles-create", responses=problem_responses(401, 403, 404, 409, 422, 503))
async def create_profile(body: ProfileCreate, backend: BackendDep, request: Request,
                         response: Response, principal: Writer, _own: OwnProfiles) -> Response:
    enforce(request, principal, config=body.config, devices=body.devices)
    if body.name in await backend.client.profiles.names():
        raise ProblemError(409, f"profile {body.name!r} exists", slug="exists")
    await enforce_profile(request, backend, config=body.config, devices=body.devices)
    await backend.client.profiles.create(body.name, config=body.config, devices=body.devices,
                                         description=body.description)
    return answer(request, await _read(request, backend, body.name, live=True), lambda rec: _seen(backend, rec),
                  status_code=201, headers={"Location": f"/v1/profiles/{body.name}"})


@router.get("/{name}", summary="A profile, with its ETag", response_model=ProfileOut, operation_id="profiles-get",
            responses=problem_responses(401, 403, 404, 422, 503))
async def get_profile(name: ProfileName, request: Request, backend: BackendDep, _: Reader) -> Response:
    """The profile, from the read model while it is in sync. The `ETag` is the gateway's: `If-None-Match`
    answers 304 while nothing changed; `If-Match` on `PUT`/`PATCH` compares against it (or LXD's)."""
    return answer(request, await _read(request, backend, name), lambda rec: _seen(backend, rec))


@router.put("/{name}", summary="Replace a profile's description, config and devices", response_model=ProfileOut,
            operation_id="profiles-replace", responses=problem_responses(401, 403, 404, 409, 412, 422, 503),
            description="409 when LXD refuses the change for the instances using the profile (e.g. removing the "
                        "root disk they rely on).")
async def replace_profile(name: ProfileName, body: ProfileBody, backend: BackendDep, request: Request,
                          response: Response, principal: Writer, _own: OwnProfiles,
                          if_match: IfMatch = None) -> Response:
    enforce(request, principal, config=body.config, devices=body.devices)

    async def write(current: Profile) -> None:
        await enforce_profile(request, backend, config=body.config, devices=body.devices, current=current)
        await backend.client.profiles.update(name, body.model_dump(), etag=current.etag)

    await edit(_key(backend, name), _if_match(if_match), f"profile {name!r}", lambda: _get(backend, name), write,
               versions=lambda p: _versions(backend, p))
    return _changed(request, backend, await _read(request, backend, name, live=True))


@router.patch("/{name}", summary="Merge-patch a profile (null removes a key or a device)",
              response_model=ProfileOut, operation_id="profiles-patch",
              responses=problem_responses(401, 403, 404, 409, 412, 422, 503),
              description="409 when LXD refuses the change for the instances using the profile (e.g. removing the "
                          "root disk they rely on).")
async def patch_profile(name: ProfileName, backend: BackendDep, request: Request, response: Response,
                        principal: Writer, _own: OwnProfiles, if_match: IfMatch = None,
                        patch: ProfilePatch = Body(openapi_examples={"merge": {
                            "summary": "set one key, remove another and a device",
                            "value": {"config": {"limits.cpu": "4", "user.team": None}, "devices": {"eth1": None}}}},
                            media_type="application/merge-patch+json")) -> Response:
    given = patch.model_dump(exclude_unset=True)
    config, devices = as_sent(given.get("config"), given.get("devices"))
    enforce(request, principal, config=config, devices=devices)

    async def write(current: Profile) -> None:
        merged = merge_patch(current.writable(), given)
        merged.setdefault("config", {})
        merged.setdefault("devices", {})
        merged["description"] = merged.get("description") or ""
        await enforce_profile(request, backend, config=merged["config"], devices=merged["devices"],
                              current=current)
        await backend.client.profiles.update(name, merged, etag=current.etag)

    await edit(_key(backend, name), _if_match(if_match), f"profile {name!r}", lambda: _get(backend, name), write,
               versions=lambda p: _versions(backend, p))
    return _changed(request, backend, await _read(request, backend, name, live=True))


@router.delete("/{name}", summary="Delete a profile (409 while instances use it)", status_code=204,
               operation_id="profiles-delete", responses=problem_responses(401, 403, 404, 409, 422, 503))
async def delete_profile(name: ProfileName, backend: BackendDep, _: Writer, _own: OwnProfiles) -> Response:
    current = await _get(backend, name)
    if current.used_by:
        raise ProblemError(409, f"profile {name!r} is in use by {len(current.used_by)} instance(s)",
                           slug="in-use", used_by=current.used_by)
    try:
        await backend.client.profiles.delete(name)
    finally:
        backend.mirror.touch(backend.remote, backend.project, PROFILES, name)
    return Response(status_code=204)


@router.get("/{name}/nics", summary="The profile's NIC devices, each with a MAC address",
            response_model=Page[Nic], operation_id="profiles-nics",
            responses=problem_responses(400, 401, 403, 404, 422, 503))
async def profile_nics(name: ProfileName, backend: BackendDep, page: PageDep, _: Reader) -> Page[Nic]:
    nics = await nics_from_profile(backend.client, name)
    items = [Nic(name=k, hwaddr=v.get("hwaddr", ""), device=dict(v)) for k, v in nics.items()]
    return page_of(items, page, filters=backend.filters(profile=name))


@router.post("/{name}/ensure-storage", summary="Give the profile a root disk unless it has one",
             response_model=StorageEnsured, operation_id="profiles-ensure-storage",
             description="The disk goes on the `default` pool, else on the first pool; with no pool at all a `dir` "
                         "pool `default` is created first. A profile with a device mounted at `/` is left as it is.",
             responses=problem_responses(401, 403, 404, 409, 412, 422, 503))
async def ensure_storage(name: ProfileName, backend: BackendDep, _: Admin, _own: OwnProfiles) -> StorageEnsured:
    try:
        pool = await ensure_default_storage(backend.client, name)
    except StorageServiceError as exc:
        raise StorageServiceError(str(exc), slug="storage") from exc
    return StorageEnsured(changed=pool is not None, pool=pool)


@router.post("/{name}/verify-network", summary="Check the profile's NICs are usable (or give it one)",
             response_model=NetworkVerified, operation_id="profiles-verify-network",
             description="The first NIC (by name) that is bridged or macvlan, or sits on a bridge or macvlan "
                         "network, wins; IPv6-only networks are refused. A profile with no NIC on a standalone "
                         "server gets the bridge of the `bridge_name` setting (created when missing) and an `ethN` "
                         "NIC on it. 409 `network-unusable` when no NIC is usable.",
             responses=problem_responses(401, 403, 404, 409, 422, 503))
async def verify_network(name: ProfileName, backend: BackendDep, request: Request, _: Admin,
                         _own: OwnProfiles) -> NetworkVerified:
    settings = request.app.state.settings
    await _get(backend, name)  # 404 before anything else
    try:
        v = await verify_network_device(backend.client, name, bridge=settings.bridge_name, nat=settings.bridge_nat,
                                        bridge_config=settings.bridge_config)
    except NotFound:
        raise
    except NetworkConfigError as exc:  # 409, or LXD's status when it could not answer
        cause = lxd_cause(exc)
        status = 409 if cause is None else status_of(cause)[0]
        raise ProblemError(409 if status in (404, 409, 400) else status, str(exc), slug="network-unusable",
                           lxd_error=None if cause is None else cause.error) from None
    return NetworkVerified(bridge=v.bridge, created_bridge=v.created_bridge, added_nic=v.added_nic)
