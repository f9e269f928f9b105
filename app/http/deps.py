"""Dependencies shared by the resource routers: backend selection, names, If-Match.

`Backend` resolves `?remote=` and `?project=` (404 for an unknown remote, 403 outside the token's limits) and
hands the router the LXD client for that remote and project.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Query, Response
from pydantic import AfterValidator, StringConstraints
from starlette.requests import HTTPConnection

from app.http.auth import Principal, current_principal
from app.http.errors import ProblemError, refuse_in_use
from app.lxd.client import Client
from app.lxd.errors import NotFound
from app.lxd.registry import RemoteRegistry, RemoteSpec, UnknownRemote
from app.mirror import Mirror

NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9-]{0,61}[A-Za-z0-9]$|^[A-Za-z]$"
NAME_RE = re.compile(NAME_PATTERN)
NAME_RULE = ("1-63 characters: letters, digits and hyphens, not starting with a digit or hyphen, "
             "not ending with a hyphen")
PROJECT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
CONFIG_KEY_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,254}$"
DEVICE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"

# Keys of LXD config maps and device maps, checked before LXD sees them (LXD answers some bad keys with a 500).
ConfigKey = Annotated[str, StringConstraints(pattern=CONFIG_KEY_PATTERN)]
DeviceName = Annotated[str, StringConstraints(pattern=DEVICE_NAME_PATTERN)]
Config = dict[ConfigKey, str]
Device = dict[ConfigKey, str]
Devices = dict[DeviceName, Device]


def alias_name_error(name: str) -> str | None:
    """Why `name` cannot be an alias, or None. LXD puts the name in its URL path and normalises it, so a `.` or
    `..` segment (or an empty one) would address another object than the alias."""
    if any(seg in ("", ".", "..") for seg in name.split("/")):
        return "an alias name cannot be '.' or '..', nor hold a '.', '..' or empty segment between '/'"
    return None


def _alias_name(name: str) -> str:
    if error := alias_name_error(name):
        raise ValueError(error)
    return name


AliasName = Annotated[str, AfterValidator(_alias_name)]


def valid_name(name: str) -> bool:
    return bool(NAME_RE.match(name))


@dataclass(frozen=True)
class Backend:
    """The LXD endpoint and project a request acts on."""

    remote: str
    project: str
    spec: RemoteSpec
    client: Client
    principal: Principal
    mirror: Mirror
    """The read model (with `LXDGW_READ_MODEL=false` it reads LXD every time)."""

    def filters(self, **more: str) -> dict[str, str]:
        """What a list of this remote and project was made for (a page cursor carries it): `remote`, `project`
        and `more`."""
        return {"remote": self.remote, "project": self.project, **more}


async def backend(
    conn: HTTPConnection,
    principal: Annotated[Principal, Depends(current_principal)],
    remote: Annotated[str | None, Query(description="a configured remote; default: the default remote. "
                                        "On list routes, `*` lists across every remote the token may use",
                                        examples=["local"])] = None,
    project: Annotated[str, Query(pattern=PROJECT_PATTERN, description="the LXD project",
                                  examples=["default"])] = "default",
) -> Backend:
    registry: RemoteRegistry = conn.app.state.remotes
    try:
        spec = registry.spec(remote)
    except UnknownRemote:
        raise ProblemError(404, f"no remote named {remote!r}", slug="unknown-remote") from None
    if not principal.allows_remote(spec.name):
        raise ProblemError(403, f"this token may not use remote {spec.name!r}")
    if not principal.allows_project(project):
        raise ProblemError(403, f"this token may not use project {project!r}")
    state = conn.scope.setdefault("state", {})
    state["remote"], state["project"] = spec.name, project  # named in problems about this remote, and audited
    client = registry.get(spec.name)
    if project != client.project:
        client = client.with_project(project)
    return Backend(remote=spec.name, project=project, spec=spec, client=client, principal=principal,
                   mirror=conn.app.state.mirror)


BackendDep = Annotated[Backend, Depends(backend)]

ContainerName = Annotated[str, Path(pattern=NAME_PATTERN, description=NAME_RULE, examples=["web1"])]

IfMatch = Annotated[str | None, Header(alias="If-Match", description="the ETag from a previous GET; 412 when it "
                                       "no longer matches", examples=['"3f2a..."'])]


def _own(feature: str) -> object:
    """A dependency: 403 when the caller is limited to projects that exclude `default`, and the request's project
    shares `feature` (`profiles`, `images`, `storage.volumes`) with `default` (LXD's `features.<feature>` off): a
    change there would land in `default`."""

    async def own(b: BackendDep) -> None:
        limited = b.principal.projects
        if limited is None or b.project == "default" or "default" in limited:
            return
        try:
            project = await b.client.projects.get(b.project)
        except NotFound:
            return  # the route answers 404 for the project
        if project.config.get(f"features.{feature}", "false").lower() != "true":
            raise ProblemError(403, f"project {b.project!r} shares its {feature} with project 'default', which this "
                               "token may not change", slug="shared-with-default")

    own.__name__ = f"own_{feature.replace('.', '_')}"
    return Depends(own)


OwnProfiles = Annotated[None, _own("profiles")]
OwnImages = Annotated[None, _own("images")]
OwnVolumes = Annotated[None, _own("storage.volumes")]


async def delete_unused(what: str, name: str, get: Callable[[str], Awaitable[Any]],
                        delete: Callable[[str], Awaitable[Any]]) -> Response:
    """Delete `what` `name` unless something uses it (409 `in-use` naming what does); 204."""
    refuse_in_use(what, name, (await get(name)).used_by)
    await delete(name)
    return Response(status_code=204)
