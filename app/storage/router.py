"""`/v1/storage-pools`: storage pools (list, create, delete), their custom volumes (list, create, delete) and the
volumes' snapshots (list, and the jobs `volume-snapshot.create`, `volume-snapshot.restore`,
`volume-snapshot.delete`)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.http.deps import Backend, BackendDep, OwnVolumes, delete_unused
from app.http.errors import ProblemError, problem_responses, refuse_existing
from app.http.etag import Admin, Reader, Writer
from app.http.pagination import Page, PageDep, page_of
from app.http.redact import redact_secret_config
from app.jobs import Job
from app.jobs.starter import JobStarter, JobStarterDep, job_responses
from app.storage.schemas import (
    PoolCreate,
    PoolName,
    PoolOut,
    VolumeCreate,
    VolumeName,
    VolumeOut,
    VolumeSnapshotCreate,
    VolumeSnapshotName,
    VolumeSnapshotOut,
)
from app.storage.service import create_pool, create_volume, volume_snapshots
from app.store.tokens import Scope
from app.tokens.guard import enforce_volume

router = APIRouter(prefix="/v1/storage-pools", tags=["storage"])


@router.get("", summary="List storage pools", response_model=Page[PoolOut], operation_id="storage-pools-list",
            responses=problem_responses(400, 401, 403, 404, 422, 503))
async def list_pools(backend: BackendDep, page: PageDep, _: Reader) -> Page[PoolOut]:
    """Values of config keys naming a password, secret or token are redacted for a read-only caller."""
    pools = [PoolOut.model_validate(p) for p in await backend.client.storage.list()]
    if not backend.principal.has(Scope.write):
        pools = [p.model_copy(update={"config": redact_secret_config(p.config)}) for p in pools]
    return page_of(pools, page, filters={"remote": backend.remote})


@router.post("", summary="Create a storage pool", status_code=201, response_model=PoolOut,
             operation_id="storage-pools-create", responses=problem_responses(401, 403, 404, 409, 422, 503))
async def create_storage_pool(body: PoolCreate, backend: BackendDep, response: Response, _: Admin) -> PoolOut:
    refuse_existing("storage pool", body.name, (p.name for p in await backend.client.storage.list()))
    await create_pool(backend.client, body.name, body.driver, body.config)
    response.headers["Location"] = f"/v1/storage-pools/{body.name}/volumes"
    return PoolOut.model_validate(await backend.client.storage.get(body.name))


@router.delete("/{pool}", summary="Delete a storage pool", status_code=204, operation_id="storage-pools-delete",
               responses=problem_responses(401, 403, 404, 409, 422, 503))
async def delete_pool(pool: PoolName, backend: BackendDep, _: Admin) -> Response:
    return await delete_unused("storage pool", pool, backend.client.storage.get, backend.client.storage.delete)


@router.get("/{pool}/volumes", summary="List the volumes of a pool", response_model=Page[VolumeOut],
            operation_id="storage-volumes-list", responses=problem_responses(400, 401, 403, 404, 422, 503))
async def list_volumes(pool: PoolName, backend: BackendDep, page: PageDep, _: Reader) -> Page[VolumeOut]:
    return page_of([VolumeOut.model_validate(v) for v in await backend.client.storage.volumes(pool)], page,
                   key=lambda v: f"{v.type}/{v.name}",
                   filters=backend.filters(pool=pool))


@router.post("/{pool}/volumes", summary="Create a custom volume", status_code=201, response_model=VolumeOut,
             operation_id="storage-volumes-create", responses=problem_responses(401, 403, 404, 409, 422, 503))
async def create_storage_volume(pool: PoolName, body: VolumeCreate, backend: BackendDep, request: Request,
                                response: Response, principal: Writer, _own: OwnVolumes) -> VolumeOut:
    enforce_volume(request, principal, body.config)
    await backend.client.storage.get(pool)  # 404 for a missing pool
    if body.name in {v.name for v in await backend.client.storage.volumes(pool, vtype="custom")}:
        raise ProblemError(409, f"volume {body.name!r} exists in pool {pool!r}", slug="exists")
    await create_volume(backend.client, pool, body.name, body.config)
    response.headers["Location"] = f"/v1/storage-pools/{pool}/volumes/{body.name}"
    return VolumeOut.model_validate(await backend.client.storage.volume(pool, body.name))


@router.delete("/{pool}/volumes/{volume}", summary="Delete a custom volume", status_code=204,
               operation_id="storage-volumes-delete", responses=problem_responses(401, 403, 404, 409, 422, 503))
async def delete_volume(pool: PoolName, volume: VolumeName, backend: BackendDep, _: Writer,
                        _own: OwnVolumes) -> Response:
    await backend.client.storage.delete_volume(pool, volume)
    return Response(status_code=204)


# ------------------------------------------------------------------------------------------------ volume snapshots


async def _snapshots(b: Backend, pool: str, volume: str) -> list[VolumeSnapshotOut]:
    """The volume's snapshots; 404 for an unknown pool or volume."""
    found = await volume_snapshots(b.client, pool, volume)
    if found is None:
        raise ProblemError(404, f"storage pool {pool!r} has no custom volume {volume!r}", slug="volume-not-found")
    return [VolumeSnapshotOut.model_validate(s, from_attributes=True) for s in found]


async def _require_snapshot(b: Backend, pool: str, volume: str, snap: str) -> None:
    if snap not in {s.name for s in await _snapshots(b, pool, volume)}:
        raise ProblemError(404, f"volume {volume!r} in pool {pool!r} has no snapshot {snap!r}",
                           slug="snapshot-not-found")


async def _start_on_snapshot(kind: str, b: Backend, jobs: JobStarter, pool: str, volume: str, snap: str, *,
                             resource: str) -> JSONResponse:
    """Start job `kind` on an existing snapshot (404 when the pool, the volume or the snapshot is missing)."""

    async def precheck() -> None:
        await _require_snapshot(b, pool, volume, snap)

    return await jobs.start(kind, params={"pool": pool, "volume": volume, "snapshot": snap}, resource=resource,
                            remote=b.remote, project=b.project, precheck=precheck)


def _snapshot_path(pool: str, volume: str, snap: str = "") -> str:
    return f"/v1/storage-pools/{pool}/volumes/{volume}/snapshots" + (f"/{snap}" if snap else "")


@router.get("/{pool}/volumes/{volume}/snapshots", summary="List the snapshots of a custom volume",
            response_model=Page[VolumeSnapshotOut], operation_id="storage-volume-snapshots-list",
            responses=problem_responses(400, 401, 403, 404, 422, 503))
async def list_volume_snapshots(pool: PoolName, volume: VolumeName, backend: BackendDep, page: PageDep,
                                _: Reader) -> Page[VolumeSnapshotOut]:
    """Snapshots sorted by name."""
    return page_of(await _snapshots(backend, pool, volume), page,
                   filters=backend.filters(pool=pool, volume=volume))


@router.post("/{pool}/volumes/{volume}/snapshots", summary="Take a snapshot of a custom volume (job "
             "volume-snapshot.create)", status_code=202, response_model=Job,
             operation_id="storage-volume-snapshots-create", responses=job_responses(401, 403, 404, 409, 422))
async def create_volume_snapshot(pool: PoolName, volume: VolumeName, body: VolumeSnapshotCreate,
                                 backend: BackendDep, jobs: JobStarterDep, _: Writer, _own: OwnVolumes) -> JSONResponse:
    """409 when the volume already has a snapshot of that name."""

    async def precheck() -> None:
        if body.name in {s.name for s in await _snapshots(backend, pool, volume)}:
            raise ProblemError(409, f"volume {volume!r} in pool {pool!r} already has a snapshot {body.name!r}",
                               slug="snapshot-exists")

    return await jobs.start("volume-snapshot.create", params={"pool": pool, "volume": volume, "snapshot": body.name},
                            resource=_snapshot_path(pool, volume, body.name), remote=backend.remote,
                            project=backend.project, precheck=precheck)


@router.post("/{pool}/volumes/{volume}/snapshots/{snap}/restore", summary="Restore a custom volume to a snapshot "
             "(job volume-snapshot.restore)", status_code=202, response_model=Job,
             operation_id="storage-volume-snapshots-restore", responses=job_responses(401, 403, 404, 422))
async def restore_volume_snapshot(pool: PoolName, volume: VolumeName, snap: VolumeSnapshotName,
                                  backend: BackendDep, jobs: JobStarterDep,
                                  _: Writer, _own: OwnVolumes) -> JSONResponse:
    """The volume gets the snapshot's content back. LXD restores a volume only while no running instance uses
    it: the job fails otherwise."""
    return await _start_on_snapshot("volume-snapshot.restore", backend, jobs, pool, volume, snap,
                                    resource=f"/v1/storage-pools/{pool}/volumes/{volume}")


@router.delete("/{pool}/volumes/{volume}/snapshots/{snap}", summary="Delete a snapshot of a custom volume (job "
               "volume-snapshot.delete)", status_code=202, response_model=Job,
               operation_id="storage-volume-snapshots-delete", responses=job_responses(401, 403, 404, 422))
async def delete_volume_snapshot(pool: PoolName, volume: VolumeName, snap: VolumeSnapshotName,
                                 backend: BackendDep, jobs: JobStarterDep, _: Writer, _own: OwnVolumes) -> JSONResponse:
    return await _start_on_snapshot("volume-snapshot.delete", backend, jobs, pool, volume, snap,
                                    resource=_snapshot_path(pool, volume, snap))
