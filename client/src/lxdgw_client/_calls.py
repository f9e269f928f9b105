"""The requests of the client, built once for both the sync and the async client: each builder returns a `Call`
(method, path, query, body, headers, and how to read the answer) that either client sends."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from lxdgw_client.models import Container, Image, Job, Page, Written

R = TypeVar("R")

ImageArg = str | Mapping[str, Any]


def seg(value: str) -> str:
    """A path segment, percent-encoded (a container named `a/b` must not reach another route)."""
    return quote(value, safe="")


def new_key() -> str:
    """A fresh Idempotency-Key: every request that starts a job carries one, so a retry never starts a second."""
    return uuid.uuid4().hex


def job_of(response: httpx.Response) -> Job:
    return Job.model_validate(response.json())


def container_of(response: httpx.Response) -> Container:
    return Container.model_validate(response.json())


def containers_of(response: httpx.Response) -> Page[Container]:
    return Page[Container].model_validate(response.json())


def jobs_of(response: httpx.Response) -> Page[Job]:
    return Page[Job].model_validate(response.json())


def image_of(response: httpx.Response) -> Image:
    return Image.model_validate(response.json())


def images_of(response: httpx.Response) -> Page[Image]:
    return Page[Image].model_validate(response.json())


def written_of(response: httpx.Response) -> Written:
    return Written.model_validate(response.json())


def nothing(response: httpx.Response) -> None:
    return None


@dataclass
class Call(Generic[R]):
    method: str
    path: str
    parse: Callable[[httpx.Response], R]
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Scope:
    """The remote and project of a request (None: the client's default, then the gateway's)."""

    remote: str | None = None
    project: str | None = None

    def params(self, remote: str | None, project: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if (r := remote or self.remote) is not None:
            out["remote"] = r
        if (p := project or self.project) is not None:
            out["project"] = p
        return out


def job_call(method: str, path: str, params: dict[str, Any], body: Any, wait: int,
             idempotency_key: str | None) -> Call[Job]:
    """A request that starts a job: with an Idempotency-Key (a new one unless given) and `wait` when not 0."""
    if wait:
        params = {**params, "wait": int(wait)}
    return Call(method, path, job_of, params=params, json=body,
                headers={"Idempotency-Key": idempotency_key or new_key()})


def clean(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body without the fields left unset (None), so the gateway's defaults apply."""
    return {k: v for k, v in body.items() if v is not None}


def image_ref(image: ImageArg) -> dict[str, Any]:
    """`busybox` means the alias `busybox`; a mapping is passed as it is (`{fingerprint}`, `{series, arch}`...)."""
    return {"alias": image} if isinstance(image, str) else dict(image)


# -- containers --------------------------------------------------------------------------------------------------

def containers_list(scope: Scope, *, prefix: str | None, status: Sequence[str] | None, alive: bool | None,
                    limit: int | None, cursor: str | None, remote: str | None,
                    project: str | None) -> Call[Page[Container]]:
    params = scope.params(remote, project) | clean({"prefix": prefix, "limit": limit, "cursor": cursor})
    if status:
        params["status"] = list(status)
    if alive is not None:
        params["alive"] = "true" if alive else "false"
    return Call("GET", "/v1/containers", containers_of, params=params)


def containers_get(scope: Scope, name: str, *, remote: str | None, project: str | None) -> Call[Container]:
    return Call("GET", f"/v1/containers/{seg(name)}", container_of, params=scope.params(remote, project))


def containers_create(scope: Scope, name: str, image: ImageArg, *, profiles: Sequence[str] | None,
                      config: Mapping[str, str] | None, devices: Mapping[str, Mapping[str, str]] | None,
                      start: bool, extra: Mapping[str, Any] | None, target: str | None, wait: int,
                      idempotency_key: str | None, remote: str | None, project: str | None) -> Call[Job]:
    body: dict[str, Any] = {"name": name, "image": image_ref(image)}
    body |= clean({"profiles": list(profiles) if profiles is not None else None,
                   "config": dict(config) if config else None,
                   "devices": {k: dict(v) for k, v in devices.items()} if devices else None})
    if not start:
        body["start"] = False
    body |= dict(extra or {})
    params = scope.params(remote, project) | clean({"target": target})
    return job_call("POST", "/v1/containers", params, body, wait, idempotency_key)


def containers_delete(scope: Scope, name: str, *, wait: int, idempotency_key: str | None, remote: str | None,
                      project: str | None) -> Call[Job]:
    return job_call("DELETE", f"/v1/containers/{seg(name)}", scope.params(remote, project), None, wait,
                    idempotency_key)


def containers_action(scope: Scope, name: str, action: str, *, force: bool | None, timeout: int | None, wait: int,
                      idempotency_key: str | None, remote: str | None, project: str | None) -> Call[Job]:
    body = clean({"force": force, "timeout": timeout})
    return job_call("POST", f"/v1/containers/{seg(name)}/{action}", scope.params(remote, project), body, wait,
                    idempotency_key)


def containers_exec(scope: Scope, name: str, command: Sequence[str], *, environment: Mapping[str, str] | None,
                    cwd: str | None, user: int | None, group: int | None, stdin: str | None,
                    timeout: float | None, max_output_bytes: int | None, wait: int, idempotency_key: str | None,
                    remote: str | None, project: str | None) -> Call[Job]:
    body = {"command": list(command)} | clean({
        "environment": dict(environment) if environment else None, "cwd": cwd, "user": user, "group": group,
        "stdin": stdin, "timeout": timeout, "max_output_bytes": max_output_bytes})
    return job_call("POST", f"/v1/containers/{seg(name)}/exec", scope.params(remote, project), body, wait,
                    idempotency_key)


def files_params(scope: Scope, path: str, remote: str | None, project: str | None) -> dict[str, Any]:
    return scope.params(remote, project) | {"path": path}


def file_headers(mode: str | int | None, uid: int | None, gid: int | None) -> dict[str, str]:
    headers = {"Content-Type": "application/octet-stream"}
    if mode is not None:
        headers["X-File-Mode"] = mode if isinstance(mode, str) else f"{mode:04o}"
    if uid is not None:
        headers["X-File-Uid"] = str(uid)
    if gid is not None:
        headers["X-File-Gid"] = str(gid)
    return headers


def files_delete(scope: Scope, name: str, path: str, *, remote: str | None, project: str | None) -> Call[None]:
    return Call("DELETE", f"/v1/containers/{seg(name)}/files", nothing, params=files_params(scope, path, remote,
                                                                                           project))


# -- jobs ----------------------------------------------------------------------------------------------------------

def jobs_list(*, status: str | None, kind: str | None, resource: str | None, limit: int | None,
              cursor: str | None, remote: str | None, project: str | None) -> Call[Page[Job]]:
    params = clean({"status": status, "kind": kind, "resource": resource, "limit": limit, "cursor": cursor,
                    "remote": remote, "project": project})
    return Call("GET", "/v1/jobs", jobs_of, params=params)


def jobs_get(job_id: str, *, wait: int = 0) -> Call[Job]:
    return Call("GET", f"/v1/jobs/{seg(job_id)}", job_of, params={"wait": int(wait)} if wait else {})


def jobs_cancel(job_id: str, *, wait: int) -> Call[Job]:
    return Call("DELETE", f"/v1/jobs/{seg(job_id)}", job_of, params={"wait": int(wait)} if wait else {})


def job_id_of(job: Job | str) -> str:
    return job if isinstance(job, str) else job.id


# -- images --------------------------------------------------------------------------------------------------------

def images_list(scope: Scope, *, limit: int | None, cursor: str | None, remote: str | None,
                project: str | None) -> Call[Page[Image]]:
    return Call("GET", "/v1/images", images_of,
                params=scope.params(remote, project) | clean({"limit": limit, "cursor": cursor}))


def images_get(scope: Scope, fingerprint: str, *, remote: str | None, project: str | None) -> Call[Image]:
    return Call("GET", f"/v1/images/{seg(fingerprint)}", image_of, params=scope.params(remote, project))


def images_find(scope: Scope, *, alias: str | None, series: str | None, arch: str | None,
                sources: Sequence[str] | None, copy_local: bool, local_alias: str | None, wait: int,
                idempotency_key: str | None, remote: str | None, project: str | None) -> Call[Job]:
    if (alias is None) == (series is None):
        raise ValueError("give exactly one of alias and series")
    body = clean({"alias": alias, "series": series, "arch": arch, "local_alias": local_alias,
                  "sources": list(sources) if sources is not None else None})
    if copy_local:
        body["copy_local"] = True
    return job_call("POST", "/v1/images/find", scope.params(remote, project), body, wait, idempotency_key)


def images_copy(scope: Scope, *, image_source: str | None, server: str | None, alias: str | None,
                fingerprint: str | None, protocol: str | None, aliases: Sequence[str] | None, auto_update: bool,
                public: bool, wait: int, idempotency_key: str | None, remote: str | None,
                project: str | None) -> Call[Job]:
    if (image_source is None) == (server is None):
        raise ValueError("give exactly one of image_source and server")
    if (alias is None) == (fingerprint is None):
        raise ValueError("give exactly one of alias and fingerprint")
    source = clean({"image_source": image_source, "server": server, "alias": alias, "fingerprint": fingerprint,
                    "protocol": protocol})
    body: dict[str, Any] = {"source": source, "aliases": list(aliases or [])}
    if auto_update:
        body["auto_update"] = True
    if public:
        body["public"] = True
    return job_call("POST", "/v1/images", scope.params(remote, project), body, wait, idempotency_key)
