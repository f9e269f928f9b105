"""`/v1/cluster/members`: the members of a clustered remote, as LXD sees them (status, roles, message)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.http.deps import BackendDep
from app.http.errors import ProblemError, problem_responses
from app.http.etag import Reader
from app.http.pagination import Page, PageDep, page_of
from app.lxd.cluster import ClusterMember

router = APIRouter(prefix="/v1/cluster", tags=["server"])


class ClusterMemberOut(BaseModel):
    name: str = Field(description="the member's name (what `?target=` takes)", examples=["m1"])
    url: str = Field(description="the member's cluster address", examples=["https://10.0.0.11:8443"])
    roles: list[str] = Field(description="its roles in the cluster", examples=[["database-leader", "database"]])
    status: str = Field(description="`Online`, `Offline`, `Evacuated`, `Blocked`...", examples=["Online"])
    message: str = Field(description="LXD's word on its status", examples=["Fully operational"])
    remote: str = Field(description="the gateway remote the cluster is reached through", examples=["local"])
    database: bool = Field(False, description="whether it holds a copy of the cluster database", examples=[True])
    architecture: str = Field("", description="its architecture, as LXD names it", examples=["x86_64"])
    failure_domain: str = Field("", description="its failure domain", examples=["default"])
    groups: list[str] = Field(default_factory=list, description="the cluster groups it belongs to",
                              examples=[["default"]])
    description: str = Field("", description="free text", examples=[""])

    @classmethod
    def of(cls, m: ClusterMember, remote: str) -> ClusterMemberOut:
        return cls(name=m.server_name, url=m.url, roles=list(m.roles), status=m.status, message=m.message,
                   remote=remote, database=m.database, architecture=m.architecture,
                   failure_domain=m.failure_domain, groups=list(m.groups), description=m.description)


@router.get("/members", summary="List the members of a clustered remote", response_model=Page[ClusterMemberOut],
            operation_id="cluster-members-list",
            description="A remote that is not a cluster answers 409 `not-clustered`.",
            responses=problem_responses(400, 401, 403, 404, 409, 422, 503))
async def list_members(backend: BackendDep, page: PageDep, _: Reader) -> Page[ClusterMemberOut]:
    members = await backend.client.cluster.members()
    if not members:
        raise ProblemError(409, f"remote {backend.remote!r} is not a cluster: it has no members to list",
                           slug="not-clustered")
    return page_of([ClusterMemberOut.of(m, backend.remote) for m in members], page,
                   filters={"remote": backend.remote})
