"""`/v1/storage-pools`: storage pools (list, create, delete) and their custom volumes (list, create, delete)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, Field

from app.http.deps import BackendDep, Config, OwnVolumes
from app.http.errors import ProblemError, problem_responses
from app.http.etag import Admin, Reader, Writer
from app.http.pagination import Page, PageDep, paginate
from app.http.redact import redact_secret_config
from app.lxd.storage import StoragePool, StorageVolume
from app.storage.service import create_pool, create_volume
from app.store.tokens import Scope
from app.tokens.guard import enforce_volume

router = APIRouter(prefix="/v1/storage-pools", tags=["storage"])

STORAGE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
PoolName = Annotated[str, Path(pattern=STORAGE_NAME, description="the pool's name", examples=["default"])]
VolumeName = Annotated[str, Path(pattern=STORAGE_NAME, description="the custom volume's name", examples=["data"])]


class PoolOut(BaseModel):
    name: str = Field(description="the pool's name", examples=["default"])
    driver: str = Field(description="`dir`, `btrfs`, `zfs`, `lvm`, `ceph`, ...", examples=["dir"])
    description: str = Field("", description="free text", examples=[""])
    status: str = Field("", description="`Created`, `Pending`, ...", examples=["Created"])
    config: dict[str, str] = Field(default_factory=dict, description="the pool's config",
                                   examples=[{"source": "/var/lib/lxd/storage-pools/default"}])
    used_by: list[str] = Field(default_factory=list, description="LXD URLs of what uses it",
                               examples=[["/1.0/profiles/default"]])

    @classmethod
    def of(cls, p: StoragePool, *, secrets: bool = True) -> PoolOut:
        """`secrets=False` (a read-only caller): values of keys naming a password, secret or token are redacted."""
        return cls(name=p.name, driver=p.driver, description=p.description, status=p.status,
                   config=p.config if secrets else redact_secret_config(p.config), used_by=p.used_by)


class PoolCreate(BaseModel):
    name: str = Field(pattern=STORAGE_NAME, description="the pool's name", examples=["fast"])
    driver: str = Field(pattern=r"^[a-z]+$", description="`dir`, `btrfs`, `zfs`, `lvm`, `ceph`, ...",
                        examples=["dir"])
    config: Config = Field(default_factory=dict, description="driver config", examples=[{}])
    description: str = Field("", description="free text", examples=["SSD pool"])


class VolumeOut(BaseModel):
    name: str = Field(description="the volume's name", examples=["data"])
    type: str = Field(description="`custom`, `container`, `virtual-machine` or `image`", examples=["custom"])
    content_type: str = Field(description="`filesystem` or `block`", examples=["filesystem"])
    description: str = Field("", description="free text", examples=[""])
    config: dict[str, str] = Field(default_factory=dict, description="the volume's config", examples=[{}])
    location: str = Field("", description="cluster member holding it", examples=["none"])
    used_by: list[str] = Field(default_factory=list, description="LXD URLs of what uses it",
                               examples=[["/1.0/instances/web1"]])

    @classmethod
    def of(cls, v: StorageVolume) -> VolumeOut:
        return cls(name=v.name, type=v.type, content_type=v.content_type, description=v.description,
                   config=v.config, location=v.location, used_by=v.used_by)


class VolumeCreate(BaseModel):
    name: str = Field(pattern=STORAGE_NAME, description="the custom volume's name", examples=["data"])
    config: Config = Field(default_factory=dict, description="volume config", examples=[{"size": "1GiB"}])


@router.get("", summary="List storage pools", response_model=Page[PoolOut], operation_id="storage-pools-list",
            responses=problem_responses(400, 401, 403, 404, 422, 503))
async def list_pools(backend: BackendDep, page: PageDep, _: Reader) -> Any:
    pools = await backend.client.storage.list()
    secrets = backend.principal.has(Scope.write)
    return paginate([PoolOut.of(p, secrets=secrets) for p in pools], page, key=lambda p: p.name,
                    filters={"remote": backend.remote})


@router.post("", summary="Create a storage pool", status_code=201, response_model=PoolOut,
             operation_id="storage-pools-create", responses=problem_responses(401, 403, 404, 409, 422, 503))
async def create_storage_pool(body: PoolCreate, backend: BackendDep, response: Response, _: Admin) -> Any:
    if body.name in {p.name for p in await backend.client.storage.list()}:
        raise ProblemError(409, f"storage pool {body.name!r} exists", slug="exists")
    await create_pool(backend.client, body.name, body.driver, body.config)
    response.headers["Location"] = f"/v1/storage-pools/{body.name}/volumes"
    return PoolOut.of(await backend.client.storage.get(body.name))


@router.delete("/{pool}", summary="Delete a storage pool", status_code=204, operation_id="storage-pools-delete",
               responses=problem_responses(401, 403, 404, 409, 422, 503))
async def delete_pool(pool: PoolName, backend: BackendDep, _: Admin) -> Response:
    current = await backend.client.storage.get(pool)
    if current.used_by:
        raise ProblemError(409, f"storage pool {pool!r} is in use", slug="in-use", used_by=current.used_by)
    await backend.client.storage.delete(pool)
    return Response(status_code=204)


@router.get("/{pool}/volumes", summary="List the volumes of a pool", response_model=Page[VolumeOut],
            operation_id="storage-volumes-list", responses=problem_responses(400, 401, 403, 404, 422, 503))
async def list_volumes(pool: PoolName, backend: BackendDep, page: PageDep, _: Reader) -> Any:
    volumes = await backend.client.storage.volumes(pool)
    return paginate([VolumeOut.of(v) for v in volumes], page, key=lambda v: f"{v.type}/{v.name}",
                    filters={"remote": backend.remote, "project": backend.project, "pool": pool})


@router.post("/{pool}/volumes", summary="Create a custom volume", status_code=201, response_model=VolumeOut,
             operation_id="storage-volumes-create", responses=problem_responses(401, 403, 404, 409, 422, 503))
async def create_storage_volume(pool: PoolName, body: VolumeCreate, backend: BackendDep,
                                _own: OwnVolumes, request: Request,
                                response: Response, principal: Writer) -> Any:
    enforce_volume(request, principal, body.config)
    await backend.client.storage.get(pool)  # 404 for a missing pool
    if body.name in {v.name for v in await backend.client.storage.volumes(pool, vtype="custom")}:
        raise ProblemError(409, f"volume {body.name!r} exists in pool {pool!r}", slug="exists")
    await create_volume(backend.client, pool, body.name, body.config)
    response.headers["Location"] = f"/v1/storage-pools/{pool}/volumes/{body.name}"
    return VolumeOut.of(await backend.client.storage.volume(pool, body.name))


@router.delete("/{pool}/volumes/{volume}", summary="Delete a custom volume", status_code=204,
               operation_id="storage-volumes-delete", responses=problem_responses(401, 403, 404, 409, 422, 503))
async def delete_volume(pool: PoolName, volume: VolumeName, backend: BackendDep,
                        _own: OwnVolumes, _: Writer) -> Response:
    await backend.client.storage.delete_volume(pool, volume)
    return Response(status_code=204)
