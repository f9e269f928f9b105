"""`/v1/remotes`: the LXD/Incus endpoints the gateway talks to; add one by URL and trust token, remove one.

Adding a remote: the gateway makes a client certificate for it, checks that the server at the URL presents the
certificate the token names (nothing is sent otherwise), enrols with the token, pins the server by its
fingerprint, keeps the remote in the data directory (it is loaded again at start-up) and serves it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, Field

from app.http.errors import ProblemError, problem_responses
from app.http.etag import Admin, Reader
from app.http.pagination import Page, PageDep, page_of
from app.lxd.certificates import FingerprintMismatch, InvalidToken, TrustToken, enrol
from app.lxd.errors import Forbidden, LXDError, LXDUnavailable
from app.lxd.pem import Certificate
from app.lxd.registry import RemoteRegistry, RemoteSpec, UnknownRemote
from app.store.remotes import RemoteStore

if TYPE_CHECKING:
    from app.mirror import Mirror

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/remotes", tags=["remotes"])

REMOTE_NAME = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$"
RemoteName = Annotated[str, Path(pattern=REMOTE_NAME, description="the remote's name", examples=["lxd2"])]
CHECK_TIMEOUT = 2.0


class RemoteMember(BaseModel):
    name: str = Field(description="the member's name (pass as `?target=`)", examples=["node1"])
    status: str = Field(description="as the cluster says: `Online`, `Offline`, `Evacuated`...", examples=["Online"])
    message: str = Field(description="what the cluster says of its state", examples=["Fully operational"])


class RemoteOut(BaseModel):
    name: str = Field(description="the name to pass as `?remote=`", examples=["local"])
    url: str = Field(description="`unix:///path` or `https://host:port`", examples=["unix:///var/lib/lxd/unix.socket"])
    protocol: str = Field(description="`unix` or `https`", examples=["unix"])
    default: bool = Field(description="used when a request names no remote", examples=[True])
    project: str = Field(description="the default project on it", examples=["default"])
    reachable: bool = Field(description="whether its server endpoint answered just now", examples=[True])
    backend: str | None = Field(description="`lxd` or `incus` (null when unreachable)", examples=["lxd"])
    version: str | None = Field(description="the server version (null when unreachable)", examples=["5.0.2"])
    clustered: bool | None = Field(None, description="whether it is a cluster (null when unreachable)",
                                   examples=[False])
    members: list[RemoteMember] | None = Field(
        None, description="a cluster's members and their state (null when unreachable or not clustered)",
        examples=[[{"name": "node1", "status": "Online", "message": "Fully operational"}]])
    error: str | None = Field(None, description="why it is unreachable (the last error)", examples=[None])
    added_at_run_time: bool = Field(description="added through this API (removable), not configured in settings",
                                    examples=[False])


class RemoteAdd(BaseModel):
    name: str = Field(pattern=REMOTE_NAME, description="the name to give the remote", examples=["lxd2"])
    url: str | None = Field(None, description="`https://host[:port]` of the server (default: the first address "
                            "in the token that presents the token's certificate)", examples=["https://10.0.0.5:8443"])
    token: str = Field(min_length=8, description="a trust token issued by the server (`lxc config trust add`, or "
                       "`POST /v1/certificates/tokens` of another gateway)", examples=["eyJjbGllbnRfbmFtZSI6..."])
    project: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
                         description="the default project on it", examples=["default"])


def _registry(request: Request) -> RemoteRegistry:
    return request.app.state.remotes  # type: ignore[no-any-return]


def _store(request: Request) -> RemoteStore:
    return request.app.state.remote_store  # type: ignore[no-any-return]


async def follow_remotes(registry: RemoteRegistry, mirror: Mirror, configured: set[str], added: list[RemoteSpec],
                         dropped: list[str]) -> None:
    """Serve the remotes another gateway process added to the shared database (or changed), stop serving those it
    removed; remotes configured in settings win over a run-time one of the same name."""
    for name in dropped:
        if name in configured:
            continue
        with contextlib.suppress(Exception):
            await mirror.drop(name)
        await registry.remove(name)
    for spec in added:
        if spec.name in configured:
            log.warning("remote %r added at run time is shadowed by a configured remote of the same name", spec.name)
            continue
        with contextlib.suppress(UnknownRemote):
            if registry.spec(spec.name) == spec:
                continue
            with contextlib.suppress(Exception):
                await mirror.drop(spec.name)
            await registry.remove(spec.name)
        registry.add(spec)


async def _describe(registry: RemoteRegistry, spec: RemoteSpec, default: str, persisted: set[str]) -> RemoteOut:
    error = await registry.check(spec.name, timeout=CHECK_TIMEOUT)
    info = None
    members: list[RemoteMember] | None = None
    if error is None:
        client = registry.get(spec.name)
        try:
            info = await asyncio.wait_for(client.server_info(), CHECK_TIMEOUT)
            if info.environment.server_clustered:
                members = [RemoteMember(name=m.server_name, status=m.status, message=m.message)
                           for m in await asyncio.wait_for(client.cluster.members(), CHECK_TIMEOUT)]
        except Exception as exc:  # gone again since the check
            error = str(exc) or type(exc).__name__
    return RemoteOut(name=spec.name, url=spec.url, protocol=spec.protocol, default=spec.name == default,
                     project=spec.project, reachable=error is None,
                     backend=(info.environment.server or "lxd") if info else None,
                     version=info.environment.server_version if info else None,
                     clustered=info.environment.server_clustered if info else None, members=members, error=error,
                     added_at_run_time=spec.name in persisted)


@router.get("", summary="List the remotes, each checked for reachability", response_model=Page[RemoteOut],
            operation_id="remotes-list", responses=problem_responses(400, 401, 403, 422))
async def list_remotes(request: Request, page: PageDep, principal: Reader) -> Page[RemoteOut]:
    registry = _registry(request)
    persisted = _store(request).names()
    specs = [s for s in registry.specs() if principal.allows_remote(s.name)]
    items = await asyncio.gather(*(_describe(registry, s, registry.default_name, persisted) for s in specs))
    return page_of(items, page)


@router.post("", summary="Add a remote by URL and trust token", status_code=201, response_model=RemoteOut,
             operation_id="remotes-add",
             description="403 `fingerprint-mismatch` when the server presents another certificate than the token "
                         "names (nothing is sent to it); 403 `trust-token-refused` when the server refuses the "
                         "token; 503 when no address answers.",
             responses=problem_responses(401, 403, 409, 422, 503))
async def add_remote(body: RemoteAdd, request: Request, response: Response, _: Admin) -> RemoteOut:
    registry = _registry(request)
    store = _store(request)
    if not getattr(store, "can_save", True):
        raise ProblemError(503, "remotes added at run time need LXDGW_SECRET_KEY (or LXDGW_SECRET_KEY_FILE) with a "
                           "shared database: their private keys are stored encrypted with it",
                           slug="secret-key-missing")
    try:
        registry.spec(body.name)
    except UnknownRemote:
        pass
    else:
        raise ProblemError(409, f"a remote named {body.name!r} exists", slug="exists")
    try:
        token = TrustToken.decode(body.token)
    except InvalidToken as exc:
        raise ProblemError(422, f"not a trust token: {exc.error}", slug="validation",
                           errors=[{"field": "body.token", "message": "not a trust token"}]) from None
    cert = Certificate.generate(f"lxd-gateway-{body.name}", common_name=f"lxd-gateway-{body.name}")
    cert_path, key_path = await asyncio.to_thread(store.write_identity, body.name, cert)
    try:
        try:
            enrolment = await enrol(token, client_cert=cert_path, client_key=key_path, address=body.url)
        except FingerprintMismatch as exc:
            raise ProblemError(403, exc.error, slug="fingerprint-mismatch") from None
        except InvalidToken as exc:
            raise ProblemError(422, exc.error, slug="validation") from None
        except Forbidden as exc:
            raise ProblemError(403, "the server refused the trust token", slug="trust-token-refused",
                               lxd_error=exc.error) from None
        except LXDUnavailable as exc:
            raise ProblemError(503, f"the server cannot be reached: {exc.error}", slug="lxd-unavailable") from None
        except LXDError as exc:
            raise ProblemError(403, "the server refused the trust token", slug="trust-token-refused",
                               lxd_error=exc.error) from None
        await asyncio.to_thread(store.write_server_cert, body.name, enrolment.server_cert_pem)
        spec = RemoteSpec(name=body.name, url=enrolment.url, client_cert=cert_path, client_key=key_path,
                          server_cert=None, server_fingerprint=enrolment.server_fingerprint, project=body.project)
        await asyncio.to_thread(store.save, spec)
    except BaseException:
        await asyncio.to_thread(store.remove, body.name)
        raise
    log.info("remote %s added (%s, server %s)", body.name, enrolment.url, enrolment.server_fingerprint)
    registry.add(spec)
    response.headers["Location"] = f"/v1/remotes/{body.name}"
    return await _describe(registry, spec, registry.default_name, {body.name})


@router.delete("/{name}", summary="Remove a remote added at run time", status_code=204,
               operation_id="remotes-delete",
               description="The gateway also asks the server to forget its certificate (best effort). Remotes "
                           "configured in settings cannot be removed here (409).",
               responses=problem_responses(401, 403, 404, 409, 422))
async def delete_remote(name: RemoteName, request: Request, _: Admin) -> Response:
    registry = _registry(request)
    store = _store(request)
    try:
        spec = registry.spec(name)
    except UnknownRemote:
        raise ProblemError(404, f"no remote named {name!r}", slug="unknown-remote") from None
    if name not in store.names():
        raise ProblemError(409, f"remote {name!r} is configured in settings; change the settings to remove it",
                           slug="configured-remote")
    if spec.client_cert:
        with contextlib.suppress(Exception):
            fingerprint = Certificate.from_pem(await asyncio.to_thread(_read, spec.client_cert)).fingerprint()
            await asyncio.wait_for(registry.get(name).certificates.delete(fingerprint), CHECK_TIMEOUT * 2)
    await request.app.state.mirror.drop(name)
    await registry.remove(name)
    await asyncio.to_thread(store.remove, name)
    return Response(status_code=204)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
