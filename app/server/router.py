"""`/v1/server`: what the LXD server is, its config (merged under its ETag), its HTTPS listener, its certificate,
and the proxies LXD itself uses for downloads."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Body, Response
from pydantic import BaseModel, Field

from app.http.deps import BackendDep, ConfigKey, IfMatch
from app.http.errors import ProblemError, problem_responses
from app.http.etag import Admin, Reader, edit, set_etag
from app.lxd.config import ServerConfig
from app.lxd.pem import fingerprint_of_pem
from app.server.proxies_service import configure_proxies
from app.server.service import enable_https_listener

router = APIRouter(prefix="/v1/server", tags=["server"])

PEM_EXAMPLE = "-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n"
FP_EXAMPLE = "2b1d8c7e9a4f3e6d5c4b3a29181706f5e4d3c2b1a0f9e8d7c6b5a49382716051"


class ServerOut(BaseModel):
    name: str = Field(description="the server (or cluster member) name; `none` for an unnamed standalone server",
                      examples=["none"])
    backend: str = Field(description="`lxd` or `incus`", examples=["lxd"])
    version: str = Field(description="the server version", examples=["5.0.2"])
    api_version: str = Field(description="the REST API version", examples=["1.0"])
    api_extensions: list[str] = Field(description="the API extensions the server offers",
                                      examples=[["storage", "network", "projects", "explicit_trust_token"]])
    host_arch: str = Field(description="the host architecture, normalised", examples=["amd64"])
    architectures: list[str] = Field(description="architectures instances can have, normalised",
                                     examples=[["amd64", "i386"]])
    clustered: bool = Field(description="whether the server is a cluster member", examples=[False])
    storage_supported: bool = Field(description="whether the server has the storage API", examples=[True])
    certificate_fingerprint: str = Field(description="sha256 of the server certificate", examples=[FP_EXAMPLE])
    kernel_version: str = Field("", description="the host kernel", examples=["6.1.0-18-amd64"])


class ConfigPatch(BaseModel):
    """A JSON merge patch of the server config: keys given are set, `null` unsets one, others are kept."""

    config: dict[ConfigKey, str | int | bool | None] = Field(
        description="server config keys (`core.*`, `images.*`, ...)",
        examples=[{"images.auto_update_interval": "12", "core.proxy_ignore_hosts": None}])


class ConfigOut(BaseModel):
    config: dict[str, Any] = Field(description="the server config after the change",
                                   examples=[{"images.auto_update_interval": "12"}])


class ListenerRequest(BaseModel):
    address: str | None = Field(None, description="`host[:port]` to listen on; default `[::]`, falling back to "
                                "`0.0.0.0` where the host has no IPv6", examples=["127.0.0.1:8443"])


class ListenerOut(BaseModel):
    address: str = Field(description="the `core.https_address` now set", examples=["[::]"])


class ServerCertificate(BaseModel):
    certificate: str = Field(description="the server certificate, PEM", examples=[PEM_EXAMPLE])
    fingerprint: str = Field(description="lowercase hex sha256 of its DER", examples=[FP_EXAMPLE])


class Proxies(BaseModel):
    http: str | None = Field(None, description="`core.proxy_http`; absent: the gateway's `http_proxy`; `\"\"` "
                             "clears it", examples=["http://proxy.internal:3128"])
    https: str | None = Field(None, description="`core.proxy_https`; absent: the gateway's `https_proxy`",
                              examples=["http://proxy.internal:3128"])
    no_proxy: str | None = Field(None, description="`core.proxy_ignore_hosts`; absent: the gateway's `no_proxy`",
                                 examples=["localhost,10.0.0.0/8"])


class ProxiesOut(BaseModel):
    http: str = Field(description="`core.proxy_http` as set", examples=["http://proxy.internal:3128"])
    https: str = Field(description="`core.proxy_https` as set", examples=["http://proxy.internal:3128"])
    no_proxy: str = Field(description="`core.proxy_ignore_hosts` as set", examples=["localhost,10.0.0.0/8"])


@router.get("", summary="What the LXD server is", response_model=ServerOut, operation_id="server-get",
            description="The `ETag` covers the server config (pass it as `If-Match` to `PATCH /v1/server/config`).",
            responses=problem_responses(401, 403, 404, 422, 503))
async def get_server(backend: BackendDep, response: Response, _: Reader) -> ServerOut:
    info = await backend.client.server_info(refresh=True)
    facts = info
    set_etag(response, (await backend.client.config.get()).etag)
    env = info.environment
    return ServerOut(name=facts.name_or_none, backend=env.server or "lxd", version=facts.version,
                     api_version=info.api_version, api_extensions=sorted(facts.extensions),
                     host_arch=facts.host_arch, architectures=list(facts.supported_arches), clustered=facts.clustered,
                     storage_supported=facts.storage_supported,
                     certificate_fingerprint=env.certificate_fingerprint or (
                         fingerprint_of_pem(env.certificate) if env.certificate else ""),
                     kernel_version=env.kernel_version)


@router.patch("/config", summary="Merge keys into the server config", response_model=ConfigOut,
              operation_id="server-config-patch", responses=problem_responses(401, 403, 404, 412, 422, 503))
async def patch_config(backend: BackendDep, response: Response, _: Admin, if_match: IfMatch = None,
                       body: ConfigPatch = Body(media_type="application/merge-patch+json")) -> ConfigOut:

    async def write(current: ServerConfig) -> None:
        merged = {k: v for k, v in current.config.items()}
        for key, value in body.config.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = str(value).lower() if isinstance(value, bool) else str(value)
        await backend.client.config.replace(merged, etag=current.etag)

    await edit((backend.remote, "server-config"), if_match, "the server config", backend.client.config.get, write)
    after = await backend.client.config.get()
    set_etag(response, after.etag)
    return ConfigOut(config=after.config)


@router.post("/https-listener", summary="Make LXD listen on HTTPS", response_model=ListenerOut,
             operation_id="server-https-listener", responses=problem_responses(401, 403, 404, 409, 422, 503))
async def https_listener(backend: BackendDep, _: Admin,
                         body: ListenerRequest = Body(default_factory=ListenerRequest)) -> ListenerOut:
    address = await enable_https_listener(backend.client, body.address)
    return ListenerOut(address=address)


@router.get("/certificate", summary="The server's certificate and fingerprint", response_model=ServerCertificate,
            operation_id="server-certificate", responses=problem_responses(401, 403, 404, 422, 503))
async def server_certificate(backend: BackendDep, _: Reader) -> ServerCertificate:
    pem = await backend.client.server.certificate()
    if not pem:
        raise ProblemError(502, "the server did not show its certificate to the gateway", slug="lxd-error")
    return ServerCertificate(certificate=pem, fingerprint=fingerprint_of_pem(pem))


@router.put("/proxies", summary="Set the proxies LXD uses for its own downloads", response_model=ProxiesOut,
            operation_id="server-proxies", responses=problem_responses(401, 403, 404, 422, 503))
async def set_proxies(body: Proxies, backend: BackendDep, _: Admin) -> ProxiesOut:
    config = await configure_proxies(backend.client, http=body.http, https=body.https, no_proxy=body.no_proxy,
                                     env=os.environ)
    if config is None:
        raise ProblemError(503, f"remote {backend.remote!r} is unreachable", slug="lxd-unavailable")
    return ProxiesOut(http=config["core.proxy_http"], https=config["core.proxy_https"],
                      no_proxy=config["core.proxy_ignore_hosts"])
