"""`/v1/networks`: LXD networks (list, create, delete) and giving a bridge IPv4."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Request, Response
from pydantic import BaseModel, Field

from app.http.auth import Principal
from app.http.deps import BackendDep, Config, delete_unused
from app.http.errors import problem_responses, refuse_existing
from app.http.etag import Admin, Reader
from app.http.pagination import Page, PageDep, page_of
from app.http.redact import redact_secret_config
from app.http.schemas import used_by_field
from app.lxd.networks import Network
from app.networks.service import ensure_ipv4
from app.store.tokens import Scope

router = APIRouter(prefix="/v1/networks", tags=["networks"])

NETWORK_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$"
NetworkName = Annotated[str, Path(pattern=NETWORK_NAME, description="the network's name (at most 15 characters: "
                                  "it names a host interface)", examples=["lxdbr0"])]


class NetworkOut(BaseModel):
    name: str = Field(description="the network's name", examples=["lxdbr0"])
    type: str = Field(description="`bridge`, `macvlan`, `physical`, `ovn`, ...", examples=["bridge"])
    managed: bool = Field(description="whether LXD manages it (false: a host interface LXD only sees)",
                          examples=[True])
    description: str = Field("", description="free text", examples=[""])
    status: str = Field("", description="`Created`, `Pending`, ...", examples=["Created"])
    config: dict[str, str] = Field(default_factory=dict, description="the network's config",
                                   examples=[{"ipv4.address": "10.158.42.1/24", "ipv4.nat": "true"}])
    used_by: list[str] = used_by_field("/1.0/profiles/default")

    @classmethod
    def of(cls, n: Network, reader: Principal | None = None) -> NetworkOut:
        """The network; for a `reader` without `write`, secret config values (`bgp.peers.*.password`) are
        redacted."""
        config = n.config if reader is None or reader.has(Scope.write) else redact_secret_config(n.config)
        return cls(name=n.name, type=n.type, managed=n.managed, description=n.description, status=n.status,
                   config=config, used_by=n.used_by)


class NetworkCreate(BaseModel):
    name: str = Field(pattern=NETWORK_NAME, description="at most 15 characters", examples=["br-apps"])
    type: str = Field("bridge", pattern=r"^[a-z-]+$", description="`bridge`, `macvlan`, `sriov`, `ovn`, `physical`",
                      examples=["bridge"])
    config: Config = Field(default_factory=dict, description="the network's config",
                           examples=[{"ipv4.address": "auto", "ipv4.nat": "true", "ipv6.address": "none"}])
    description: str = Field("", description="free text", examples=["application bridge"])


class EnsureIPv4(BaseModel):
    nat: bool | None = Field(None, description="NAT for the new IPv4 (default: the `bridge_nat` setting)",
                             examples=[True])
    address: str = Field("auto", pattern=r"^(auto|[0-9.]+/[0-9]{1,2})$",
                         description="`auto` (LXD picks a free subnet) or the bridge's address in CIDR form",
                         examples=["auto"])


class IPv4Ensured(BaseModel):
    changed: bool = Field(description="whether IPv4 was turned on (false: the network had it)", examples=[True])
    network: NetworkOut = Field(description="the network after the change")


@router.get("", summary="List networks", response_model=Page[NetworkOut], operation_id="networks-list",
            responses=problem_responses(400, 401, 403, 404, 422, 503))
async def list_networks(backend: BackendDep, page: PageDep, reader: Reader) -> Page[NetworkOut]:
    return page_of([NetworkOut.of(n, reader) for n in await backend.client.networks.list()], page,
                   filters=backend.filters())


@router.post("", summary="Create a network", status_code=201, response_model=NetworkOut,
             operation_id="networks-create", responses=problem_responses(401, 403, 404, 409, 422, 503))
async def create_network(body: NetworkCreate, backend: BackendDep, response: Response, _: Admin) -> NetworkOut:
    refuse_existing("network", body.name, (n.name for n in await backend.client.networks.list()))
    await backend.client.networks.create(body.name, type=body.type, config=body.config,
                                         description=body.description)
    response.headers["Location"] = f"/v1/networks/{body.name}"
    return NetworkOut.of(await backend.client.networks.get(body.name))


@router.delete("/{name}", summary="Delete a network", status_code=204, operation_id="networks-delete",
               responses=problem_responses(401, 403, 404, 409, 422, 503))
async def delete_network(name: NetworkName, backend: BackendDep, _: Admin) -> Response:
    return await delete_unused("network", name, backend.client.networks.get, backend.client.networks.delete)


@router.post("/{name}/ensure-ipv4", summary="Give a network IPv4 (auto address, NAT) when it has none",
             response_model=IPv4Ensured, operation_id="networks-ensure-ipv4",
             responses=problem_responses(401, 403, 404, 412, 422, 503))
async def ensure_network_ipv4(name: NetworkName, backend: BackendDep, request: Request, _: Admin,
                              body: EnsureIPv4 = Body(default_factory=EnsureIPv4)) -> IPv4Ensured:
    nat = request.app.state.settings.bridge_nat if body.nat is None else body.nat
    changed = await ensure_ipv4(backend.client, name, nat=nat, address=body.address)
    return IPv4Ensured(changed=changed, network=NetworkOut.of(await backend.client.networks.get(name)))
