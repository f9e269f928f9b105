"""`/v1/containers`: list, create, read, merge-patch, delete, bulk remove, state actions, addresses, devices,
rename, copy, publish, console log.

Everything long-running is a job (202 + `Location`, or 200 with `?wait=`). What the contract checks before a job
exists is checked here, in this order: validation (422), policy (403), unknown remote or project (404), a name
already taken (409), a missing container (404).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from app.containers.listing import select
from app.containers.mirror import KIND
from app.containers.placement import check_target
from app.containers.spec import ContainerSpec, user_metadata
from app.containers.view import container_view
from app.http.auth import TICKETS_ACCEPTED_WHEN_WATCHING, require
from app.http.cache import CACHE_HEADERS, answer, read_one, read_page
from app.http.deps import (
    CONFIG_KEY_PATTERN,
    DEVICE_NAME_PATTERN,
    NAME_PATTERN,
    NAME_RULE,
    AliasName,
    Backend,
    BackendDep,
    ContainerName,
    IfMatch,
    OwnImages,
)
from app.http.errors import ProblemError, problem_responses
from app.http.etag import edit, merge_patch
from app.http.fastpath import FastRead
from app.http.pagination import Page, PageDep, paginate
from app.http.redact import redact_secret_config
from app.http.watch import LastEventId, WatchQuery, watch_content, watch_stream
from app.jobs import Job
from app.jobs.starter import JobStarter, JobStarterDep, job_responses
from app.lxd.errors import LXDError, NotFound
from app.lxd.models import Instance
from app.mirror import Lookup, Record, stable_part
from app.store.tokens import Scope
from app.tokens.guard import as_sent, enforce, enforce_container, enforce_expanded
from app.tokens.policy import Layer

router = APIRouter(prefix="/v1/containers", tags=["containers"])

READ = [Depends(require(Scope.read))]
WRITE = [Depends(require(Scope.write))]

CONFIG_KEY_RE = re.compile(CONFIG_KEY_PATTERN)
DEVICE_NAME_RE = re.compile(DEVICE_NAME_PATTERN)
DEVICE_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
DEVICE_TYPES = {"none", "nic", "disk", "unix-char", "unix-block", "unix-hotplug", "usb", "gpu", "infiniband",
                "proxy", "tpm", "pci"}
EXAMPLE_CONTAINER = {
    "name": "web1", "status": "Running", "status_code": 103, "architecture": "x86_64", "cpus": 2, "memory_mib": 2048,
    "profiles": ["default"], "config": {"limits.cpu": "2", "user.role": "web"}, "devices": {},
    "metadata": {"role": "web"},
    "addresses": [{"address": "10.155.92.17", "family": "inet", "scope": "local-cloud", "interface": "eth0"}],
    "interfaces": [{"name": "eth0", "parent": "lxdbr0", "mac": "00:16:3e:12:34:56", "mtu": 0, "cidr": "",
                    "type": "ethernet", "config_type": "dhcp", "origin": "provider"}],
    "description": "", "ephemeral": False,
    "created_at": "2025-01-01T12:00:00Z", "location": "none", "project": "default", "remote": "local",
}


# ------------------------------------------------------------------------------------------------ models


class Address(BaseModel):
    address: str = Field(examples=["10.155.92.17"])
    family: str = Field(description="`inet` or `inet6`", examples=["inet"])
    scope: str = Field(description="public, local-cloud, local-fan, ...", examples=["local-cloud"])
    interface: str = Field(examples=["eth0"])


class Interface(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(examples=["eth0"])
    parent: str = Field("", examples=["lxdbr0"])
    mac: str = Field("", examples=["00:16:3e:12:34:56"])
    mtu: int = 0
    cidr: str = ""
    type: str = Field("ethernet", description="`ethernet`", examples=["ethernet"])
    config_type: str = Field("dhcp", description="how it is addressed: `dhcp`", examples=["dhcp"])
    origin: str = Field("provider", description="who set it up: `provider`", examples=["provider"])


class ContainerOut(BaseModel):
    """A container as the gateway describes it: LXD's definition and its live state."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE_CONTAINER]})

    name: str
    status: str = Field(description="Running, Stopped, Frozen, ...")
    status_code: int
    architecture: str
    cpus: int = Field(description="the leading number of `limits.cpu`; 0 when unset")
    memory_mib: int = Field(description="`limits.memory` in MiB; 0 when unset")
    profiles: list[str]
    config: dict[str, str]
    devices: dict[str, dict[str, str]]
    metadata: dict[str, str] = Field(description="config `user.k` as `k`")
    addresses: list[Address] = Field(description="usable addresses only")
    interfaces: list[Interface] = Field(description="NIC devices read back as interface info, sorted by name")
    description: str = Field("", description="free text")
    ephemeral: bool = Field(False, description="LXD deletes the container when it stops")
    created_at: str | None
    location: str = Field(description="the cluster member holding it (`none` or empty on a standalone server)")
    status_message: str = Field("", description="why the status is `Error`, when the gateway knows (a cluster "
                                "member LXD cannot reach)")
    project: str
    remote: str


class ContainerPatch(BaseModel):
    """A JSON merge patch (RFC 7396): `config` and `devices` are merged (`null` removes a key or a device),
    `profiles` replaces the list."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"config": {"limits.cpu": "2", "user.role": None}, "devices": {"data": {"type": "disk", "path": "/data",
                                                                              "source": "/srv/data"}}}]})

    config: dict[str, str | None] | None = None
    profiles: list[str] | None = None
    devices: dict[str, dict[str, str | None] | None] | None = None
    description: str | None = None


class DeviceAdd(BaseModel):
    """A device to add to the container."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "data", "device": {"type": "disk", "path": "/data", "source": "/srv/data"}}]})

    name: str = Field(pattern=DEVICE_NAME_RE.pattern, description="the device name")
    device: dict[str, str] = Field(description="LXD's device map; `type` is required")


class ActionBody(BaseModel):
    """Options of a state action."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"force": False, "timeout": 30}]})

    force: bool = Field(False, description="stop/restart: kill instead of a clean shutdown")
    timeout: int = Field(30, ge=-1, le=3600, description="seconds a clean stop may take (-1: no limit)")


class RemoveMany(BaseModel):
    """Containers to remove, each force-stopped and deleted."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"names": ["ci-1", "ci-2"]}]})

    names: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(min_length=1, max_length=1000)


class RenameBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "web2"}]})

    name: str = Field(pattern=NAME_PATTERN, description="the new name: " + NAME_RULE)


class CopyBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "web1-copy",
                                                                              "start": True}]})

    name: str = Field(pattern=NAME_PATTERN, description="the new container's name: " + NAME_RULE)
    start: bool = Field(False, description="start the copy")


class PublishBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"aliases": ["web-golden"],
                                                                              "public": False}]})

    aliases: list[Annotated[AliasName, Field(min_length=1, max_length=255)]] = Field(default_factory=list)
    public: bool = False


# ------------------------------------------------------------------------------------------------ checks


def _invalid(errors: list[dict[str, str]]) -> ProblemError:
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    return ProblemError(422, detail, slug="validation", errors=errors)


def config_errors(config: Mapping[str, object] | None, where: str) -> list[dict[str, str]]:
    errors = []
    for key in config or {}:
        if not CONFIG_KEY_RE.match(key):
            errors.append({"field": f"{where}.{key}", "message": "not a valid config key (letters, digits, '.', "
                                                                  "'_' and '-')"})
        elif key.startswith("volatile."):
            errors.append({"field": f"{where}.{key}", "message": "volatile keys are managed by LXD"})
    return errors


def device_errors(devices: Mapping[str, Mapping[str, object] | None] | None, where: str,
                  *, need_type: bool = True) -> list[dict[str, str]]:
    errors = []
    for name, dev in (devices or {}).items():
        if not DEVICE_NAME_RE.match(name):
            errors.append({"field": f"{where}.{name}", "message": "not a valid device name"})
            continue
        if dev is None:
            continue
        for key in dev:
            if not DEVICE_KEY_RE.match(key):
                errors.append({"field": f"{where}.{name}.{key}", "message": "not a valid device key"})
        dtype = dev.get("type")
        if need_type and dtype is None:
            errors.append({"field": f"{where}.{name}.type", "message": "a device needs a type"})
        elif dtype is not None and dtype not in DEVICE_TYPES:
            errors.append({"field": f"{where}.{name}.type", "message": f"unknown device type {dtype!r}"})
    return errors


def check(errors: list[dict[str, str]]) -> None:
    if errors:
        raise _invalid(errors)


def profile_errors(profiles: list[str] | None, where: str) -> list[dict[str, str]]:
    return [{"field": f"{where}.{i}", "message": "not a valid profile name"}
            for i, p in enumerate(profiles or []) if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$", p)]


async def ensure_project(b: Backend) -> None:
    """404 when the selected project does not exist on the remote (the read model knows, while in sync)."""
    if b.project == "default":
        return
    known = b.mirror.has_project(b.remote, b.project)
    if known is True:
        return
    if known is False:
        raise ProblemError(404, f"remote {b.remote!r} has no project {b.project!r}", slug="unknown-project")
    try:
        await b.client.projects.get(b.project)
    except NotFound:
        raise ProblemError(404, f"remote {b.remote!r} has no project {b.project!r}", slug="unknown-project") from None


async def require_container(b: Backend, name: str) -> None:
    await ensure_project(b)
    if not await b.client.instances.exists(name):
        raise ProblemError(404, f"container {name!r} not found", slug="container-not-found")


async def start_container_job(jobs: JobStarter, b: Backend, kind: str, name: str, params: dict[str, Any] | None = None,
                              *, resource: str | None = None,
                              then_check: Callable[[], Awaitable[None]] | None = None) -> JSONResponse:
    """Start job `kind` on the existing container `name` (404 first when it is missing, then `then_check()`);
    its params are `name` and `params`, its resource the container unless `resource` is given."""

    async def precheck() -> None:
        await require_container(b, name)
        if then_check is not None:
            await then_check()

    return await jobs.start(kind, params={"name": name, **(params or {})},
                            resource=resource or f"/v1/containers/{name}", remote=b.remote, project=b.project,
                            precheck=precheck)


async def require_free_name(b: Backend, name: str) -> None:
    await ensure_project(b)
    if await b.client.instances.exists(name):
        raise ProblemError(409, f"container {name!r} exists", slug="container-exists")


def _new_name_claim(b: Backend, name: str) -> dict[str, Any]:
    """A job that makes a container `name` reserves it until it ends: a second one is 409 at once, not a job."""
    return {"claim": ("container", b.remote, b.project, name), "claimed": f"container {name!r}",
            "claimed_slug": "container-exists"}


def _redacted(data: dict[str, Any]) -> dict[str, Any]:
    config = redact_secret_config(data.get("config") or {})
    return {**data, "config": config, "metadata": user_metadata(config)}


VOLATILE = ("status", "status_code", "addresses")
"""What LXD changes by itself (no write of the container): left out of the part of the ETag `If-Match` checks,
with the `volatile.*` config keys (LXD rewrites them when the container starts or stops; no caller may write them)."""


def _stable(view: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in view.items() if k not in VOLATILE}
    out["config"] = {k: v for k, v in (view.get("config") or {}).items() if not k.startswith("volatile.")}
    return out


def _seen(b: Backend, rec: Record) -> tuple[dict[str, Any], bytes, str]:
    """The container as the caller may see it (a token without `write` gets secret config values redacted),
    rendered, with the gateway's ETag over it."""
    if b.principal.has(Scope.write):
        return rec.view("", None, _stable)
    return rec.view("read", _redacted, _stable)


async def _lookup(request: Request, b: Backend, name: str, *, live: bool = False) -> Lookup:
    """The container from the read model (or LXD: see `Mirror.lookup`); 404 when there is none."""
    await ensure_project(b)
    return await read_one(request, b.mirror, b.remote, b.project, KIND, name, client=b.client, live=live,
                          missing=ProblemError(404, f"container {name!r} not found", slug="container-not-found"))


def _answer(request: Request, b: Backend, lk: Lookup, status_code: int = 200) -> Response:
    return answer(request, lk, lambda rec: _seen(b, rec), status_code)


def _versions(b: Backend, inst: Instance) -> set[str | None]:
    """The versions an `If-Match` may name for the container as read: the stable part of the gateway's ETag
    (what a write can change: see `stable_part`) and, still accepted, LXD's own ETag."""
    data = inst.model_dump(mode="json", by_alias=True, exclude_unset=True)
    rec = Record(container_view(data, remote=b.remote, project=b.project), 0.0, 0, 0)
    return {stable_part(_seen(b, rec)[2]), inst.etag}


def _if_match(value: str | None) -> str | None:
    return ", ".join(stable_part(v) for v in value.split(",")) if value else value


# ------------------------------------------------------------------------------------------------ routes


@router.get("", operation_id="containers-list", summary="List containers", response_model=Page[ContainerOut],
            dependencies=READ, responses={200: {"headers": CACHE_HEADERS, **watch_content("Container")},
                                          304: {"description": "not modified since the `If-None-Match` ETag"},
                                          **problem_responses(400, 401, 403, 404, 503)},
            openapi_extra=TICKETS_ACCEPTED_WHEN_WATCHING)
async def list_containers(
    request: Request, b: BackendDep, page: PageDep,
    prefix: Annotated[str, Query(max_length=63, description="only names starting with this")] = "",
    status: Annotated[list[str] | None, Query(description="only these statuses (repeatable), e.g. Running")] = None,
    alive: Annotated[bool, Query(description="keep Starting, Started, Running, Stopping, Stopped")] = False,
    watch: WatchQuery = False, last_event_id: LastEventId = None,
) -> Response:
    """Containers sorted by name, with their live state, `{items, next_cursor}`. Answered from the read model
    while it is in sync (`X-Gateway-Cache`, `Age`); the `ETag` covers the whole page (`If-None-Match`: 304)."""
    await ensure_project(b)
    if watch:
        return await watch_stream(request, b.mirror, b.remote, b.project, KIND, client=b.client,
                                  view=lambda rec: _seen(b, rec), last_event_id=last_event_id,
                                  keep=lambda d: bool(select([d], prefix, status or (), alive)))
    filters = {"prefix": prefix, "status": sorted(status or []), "alive": alive, "remote": b.remote,
               "project": b.project}
    return await read_page(request, b.mirror, b.remote, b.project, KIND, client=b.client,
                           view=lambda rec: _seen(b, rec), page=page, filters=filters,
                           keep=lambda items: select(items, prefix, status or (), alive))


@router.post("", operation_id="containers-create", summary="Create a container (job container.create)",
             status_code=202, response_model=Job, dependencies=WRITE, responses=job_responses(400, 401, 403, 404))
async def create_container(
    request: Request, b: BackendDep, jobs: JobStarterDep,
    spec: Annotated[ContainerSpec, Body(openapi_examples={"alias": {"summary": "from a local or remote alias",
                                                                    "value": {"name": "web1",
                                                                              "image": {"alias": "busybox"},
                                                                              "metadata": {"role": "web"}}}})],
    target: Annotated[str | None, Query(pattern=r"^@?[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", examples=["node2"],
                                        description="cluster member (or `@group`) to place the container on")]
    = None,
) -> JSONResponse:
    """Find or copy the image, create the container, start it; a failed start removes it again. The job's
    result is the `Container`."""
    check(config_errors(spec.config, "body.config") + device_errors(spec.devices, "body.devices")
          + profile_errors(spec.profiles, "body.profiles"))
    known = {s.name for s in request.app.state.settings.image_sources}
    unknown = [s for s in spec.image.sources or [] if s not in known]
    if unknown:
        raise _invalid([{"field": "body.image.sources", "message": f"no image source named {unknown[0]!r}"}])
    try:
        draft, _ = spec.draft()
    except ValueError as exc:
        raise _invalid([{"field": "body.interfaces", "message": str(exc)}]) from None
    enforce(request, b.principal, config=draft.config, devices=draft.devices)

    async def precheck() -> None:
        await ensure_project(b)
        await enforce_expanded(request, b, profiles=draft.profiles,
                               layers=[Layer(config=draft.config, devices=draft.devices)])
        await require_free_name(b, spec.name)
        await check_target(b.client, b.remote, target)

    params = spec.model_dump(mode="json")
    if target:
        params["target"] = target
    return await jobs.start("container.create", params=params,
                            resource=f"/v1/containers/{spec.name}", remote=b.remote, project=b.project,
                            precheck=precheck, **_new_name_claim(b, spec.name))


@router.post("/remove", operation_id="containers-remove-many", summary="Remove several containers (job)",
             status_code=202, response_model=Job, dependencies=WRITE, responses=job_responses(401, 403, 404))
async def remove_containers(body: RemoveMany, b: BackendDep, jobs: JobStarterDep) -> JSONResponse:
    """Each container is force-stopped and deleted; the job's result names those that failed."""
    names = list(dict.fromkeys(body.names))

    async def precheck() -> None:
        await ensure_project(b)
        existing = set(await b.client.instances.names())
        missing = [n for n in names if n not in existing]
        if missing:
            raise ProblemError(404, "no such containers: " + ", ".join(missing), slug="container-not-found",
                               missing=missing)

    return await jobs.start("container.remove-many", params={"names": names}, resource="/v1/containers",
                            remote=b.remote, project=b.project, precheck=precheck)


@router.get("/{name}", operation_id="containers-get", summary="Get a container", response_model=ContainerOut,
            dependencies=READ, responses={200: {"headers": CACHE_HEADERS}, 304: {"description": "not modified "
                                                                                 "since the `If-None-Match` ETag"},
                                          **problem_responses(401, 403, 404, 503)})
async def get_container(name: ContainerName, request: Request, b: BackendDep) -> Response:
    """The container with its live state, from the read model while it is in sync (`X-Gateway-Cache`, `Age`;
    `Cache-Control: no-cache` reads LXD). The `ETag` is the gateway's, over the whole answer: `If-None-Match`
    answers 304 while nothing changed, `If-Match` on `PATCH` compares against it."""
    return _answer(request, b, await _lookup(request, b, name))


async def fast_get(request: Request, b: Backend, params: dict[str, str]) -> Response:
    """`get_container` for the fast path (app/http/fastpath.py): `name` has been checked against its pattern."""
    return await get_container(params["name"], request, b)


FAST_GET = FastRead("containers-get", re.compile(r"/v1/containers/(?P<name>" + NAME_PATTERN.replace("^", "")
                                                 .replace("$", "") + ")"), Scope.read, fast_get)
"""`GET /v1/containers/{name}` on the fast path."""


def _key(b: Backend, name: str) -> tuple[str, ...]:
    return (b.remote, b.project, "instance", name)


async def _instance(b: Backend, name: str) -> Instance:
    try:
        return await b.client.instances.get(name, recursion=1)
    except NotFound:
        raise ProblemError(404, f"container {name!r} not found", slug="container-not-found") from None


@router.patch("/{name}", operation_id="containers-patch", summary="Change a container (merge patch)",
              response_model=ContainerOut, dependencies=WRITE,
              responses=problem_responses(401, 403, 404, 409, 412, 422, 503))
async def patch_container(name: ContainerName, patch: ContainerPatch, request: Request, b: BackendDep,
                          if_match: IfMatch = None) -> Response:
    """Merge `config` and `devices` (`null` removes), replace `profiles`, set `description`. With `If-Match`,
    412 when the container changed since that ETag."""
    check(config_errors(patch.config, "body.config") + device_errors(patch.devices, "body.devices",
                                                                       need_type=False)
          + profile_errors(patch.profiles, "body.profiles"))
    # The policy first on the patch as sent (answered before LXD is asked anything), then on the container as
    # LXD would run it: its profiles, what it holds and the patch merged.
    config, devices = as_sent(patch.config, patch.devices)
    enforce(request, b.principal, config=config, devices=devices)
    await ensure_project(b)

    async def write(inst: Instance) -> None:
        body = inst.writable()
        if patch.config is not None:
            body["config"] = merge_patch(body["config"], patch.config)
        if patch.devices is not None:
            body["devices"] = merge_patch(body["devices"], patch.devices)
            check(device_errors({k: v for k, v in body["devices"].items() if k in patch.devices}, "body.devices"))
        if patch.profiles is not None:
            body["profiles"] = patch.profiles
        if patch.description is not None:
            body["description"] = patch.description
        await enforce_expanded(request, b, profiles=body["profiles"], layers=_patched_layers(body, patch))
        await b.client.instances.update(name, body, etag=inst.etag)

    await edit(_key(b, name), _if_match(if_match), f"container {name!r}", lambda: _instance(b, name), write,
               versions=lambda inst: _versions(b, inst))
    if patch.profiles is not None:  # the profiles' `used_by` changed
        b.mirror.touch(b.remote, b.project, "profiles")
    return _answer(request, b, await _lookup(request, b, name, live=True))


def _patched_layers(body: Mapping[str, Any], patch: ContainerPatch) -> list[Layer]:
    """The container's own config and devices after a patch: what the patch sets (a device it touches is checked
    whole, merged as it will be), over what LXD holds already."""
    asked = {k for k, v in (patch.config or {}).items() if v is not None}
    touched = {k for k in patch.devices or {} if k in body["devices"]}
    kept = Layer(config={k: v for k, v in body["config"].items() if k not in asked},
                 devices={k: v for k, v in body["devices"].items() if k not in touched}, lxd_written=True)
    return [kept, Layer(config={k: body["config"][k] for k in asked},
                        devices={k: body["devices"][k] for k in touched})]


@router.delete("/{name}", operation_id="containers-delete", summary="Delete a container (job container.delete)",
               status_code=202, response_model=Job, dependencies=WRITE, responses=job_responses(401, 403, 404))
async def delete_container(name: ContainerName, b: BackendDep, jobs: JobStarterDep) -> JSONResponse:
    """Force-stop it if it runs, delete it, retry a failed delete operation. A missing container is 404."""
    return await start_container_job(jobs, b, "container.delete", name)


def _action_route(action: Literal["start", "stop", "restart", "freeze", "unfreeze"]) -> None:
    async def run_action(name: ContainerName, request: Request, b: BackendDep, jobs: JobStarterDep,
                         body: Annotated[ActionBody | None, Body()] = None) -> JSONResponse:
        opts = body or ActionBody()
        then = (lambda: enforce_container(request, b, name)) if action in ("start", "restart") else None
        # start and restart run the definition: the caller must be allowed it
        return await start_container_job(jobs, b, f"container.{action}", name, opts.model_dump(), then_check=then)

    run_action.__name__ = f"{action}_container"
    router.add_api_route(f"/{{name}}/{action}", run_action, methods=["POST"], operation_id=f"containers-{action}",
                         summary=f"{action.capitalize()} a container (job container.{action})", status_code=202,
                         response_model=Job, dependencies=WRITE, responses=job_responses(401, 403, 404),
                         description=f"Job `container.{action}`; the result is the `Container`. Body (optional): "
                                     "`{force, timeout}`.")


for _action in ("start", "stop", "restart", "freeze", "unfreeze"):
    _action_route(_action)  # type: ignore[arg-type]


@router.get("/{name}/addresses", operation_id="containers-addresses", summary="A container's usable addresses",
            response_model=Page[Address], dependencies=READ, responses=problem_responses(400, 401, 403, 404, 503))
async def container_addresses(name: ContainerName, request: Request, b: BackendDep,
                              page: PageDep) -> dict[str, Any]:
    """No loopback, no link-local, nothing on the LXD bridge itself; sorted by interface then address."""
    lk = await _lookup(request, b, name)
    assert lk.record is not None
    return paginate(list(lk.record.data["addresses"]), page, key=lambda a: f"{a['interface']}\x00{a['address']}",
                    filters={"name": name, "remote": b.remote, "project": b.project})


@router.post("/{name}/devices", operation_id="containers-add-device", summary="Add a device to a container",
             status_code=201, response_model=ContainerOut, dependencies=WRITE,
             responses=problem_responses(401, 403, 404, 409, 412, 422, 503))
async def add_device(name: ContainerName, body: DeviceAdd, request: Request, b: BackendDep) -> Response:
    """Add `{name, device}`; 409 when the container already has a device of that name."""
    check(device_errors({body.name: body.device}, "body.device"))
    enforce(request, b.principal, devices={body.name: body.device})
    await ensure_project(b)

    async def write(inst: Instance) -> None:
        if body.name in inst.devices:
            raise ProblemError(409, f"container {name!r} already has a device {body.name!r}", slug="device-exists")
        await enforce_expanded(request, b, profiles=inst.profiles,
                               layers=[Layer(config=inst.config, devices=inst.devices, lxd_written=True),
                                       Layer(devices={body.name: body.device})])
        data = inst.writable()
        data["devices"] = {**inst.devices, body.name: body.device}
        await b.client.instances.update(name, data, etag=inst.etag)

    await edit(_key(b, name), None, f"container {name!r}", lambda: _instance(b, name), write)
    return _answer(request, b, await _lookup(request, b, name, live=True), status_code=201)


@router.post("/{name}/rename", operation_id="containers-rename", summary="Rename a container (job)",
             status_code=202, response_model=Job, dependencies=WRITE, responses=job_responses(401, 403, 404))
async def rename_container(name: ContainerName, body: RenameBody, b: BackendDep,
                           jobs: JobStarterDep) -> JSONResponse:
    """Job `container.rename` (LXD renames stopped containers only); the result is the renamed `Container`."""

    async def precheck() -> None:
        await require_container(b, name)
        await require_free_name(b, body.name)

    return await jobs.start("container.rename", params={"name": name, "new_name": body.name},
                            resource=f"/v1/containers/{name}", remote=b.remote, project=b.project,
                            precheck=precheck, **_new_name_claim(b, body.name))


@router.post("/{name}/copy", operation_id="containers-copy", summary="Copy a container to a new one (job)",
             status_code=202, response_model=Job, dependencies=WRITE, responses=job_responses(401, 403, 404))
async def copy_container(name: ContainerName, body: CopyBody, request: Request, b: BackendDep,
                         jobs: JobStarterDep) -> JSONResponse:
    """Job `container.copy`: the copy keeps the source's profiles; `start` starts it. Result: the new
    `Container`. The policy applies to the source's config, devices and profiles: they are the copy's."""

    async def precheck() -> None:
        await require_container(b, name)
        src = await b.client.instances.get(name)
        await enforce_expanded(request, b, profiles=src.profiles, where="source.profiles",
                               layers=[Layer(config=src.config, devices=src.devices, lxd_written=True)])
        await require_free_name(b, body.name)

    return await jobs.start("container.copy", params={"name": name, "new_name": body.name, "start": body.start},
                            resource=f"/v1/containers/{body.name}", remote=b.remote, project=b.project,
                            precheck=precheck, **_new_name_claim(b, body.name))


@router.post("/{name}/publish", operation_id="containers-publish", summary="Publish a container as an image (job)",
             status_code=202, response_model=Job, dependencies=WRITE, responses=job_responses(401, 403, 404))
async def publish_container(name: ContainerName, request: Request, b: BackendDep, jobs: JobStarterDep,
                            _own: OwnImages, body: Annotated[PublishBody | None, Body()] = None) -> JSONResponse:
    """Job `container.publish` (the container must be stopped); result `{fingerprint, aliases, size}`. The
    caller must be allowed the container as it is (its image carries its files)."""
    opts = body or PublishBody()
    return await start_container_job(jobs, b, "container.publish", name, opts.model_dump(),
                                     then_check=lambda: enforce_container(request, b, name))


@router.get("/{name}/logs", operation_id="containers-logs", summary="A container's console log (needs `write`)",
            response_class=PlainTextResponse, dependencies=WRITE,
            responses={200: {"content": {"text/plain": {"example": "Starting init...\n"}}},
                       **problem_responses(401, 403, 404, 503)})
async def console_log(name: ContainerName, request: Request, b: BackendDep) -> Response:
    """The console log buffer, as text. It needs `write`, and the container as it is must be one the caller may
    use: a console shows what the container prints at boot, cloud-init's generated passwords and keys included."""
    await require_container(b, name)
    await enforce_container(request, b, name)
    try:
        text = await b.client.instances.console_log(name)
    except NotFound:
        raise ProblemError(404, f"container {name!r} not found", slug="container-not-found") from None
    except LXDError as exc:
        if "no such file or directory" not in exc.error:
            raise
        if not await b.client.instances.exists(name):
            raise ProblemError(404, f"container {name!r} not found", slug="container-not-found") from None
        text = ""  # LXD 5.0: the container has written nothing to its console yet (Incus answers "" itself)
    return PlainTextResponse(text)
