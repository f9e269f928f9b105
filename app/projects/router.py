"""`/v1/projects`: the LXD projects of a remote (pick one with `?project=` on every resource route)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.http.deps import BackendDep
from app.http.errors import problem_responses
from app.http.etag import Reader
from app.http.pagination import Page, PageDep, page_of
from app.http.schemas import used_by_field
from app.lxd.projects import Project

router = APIRouter(prefix="/v1/projects", tags=["projects"])


class ProjectOut(BaseModel):
    name: str = Field(description="the project's name", examples=["default"])
    description: str = Field("", description="free text", examples=["Default LXD project"])
    config: dict[str, str] = Field(default_factory=dict, description="the project's config (features, limits)",
                                   examples=[{"features.images": "true", "features.profiles": "true"}])
    used_by: list[str] = used_by_field("/1.0/instances/web1", "LXD URLs of what is in it")

    @classmethod
    def of(cls, p: Project) -> ProjectOut:
        return cls.model_validate(p, from_attributes=True)


@router.get("", summary="List the remote's LXD projects", response_model=Page[ProjectOut],
            operation_id="projects-list", responses=problem_responses(400, 401, 403, 404, 422, 503))
async def list_projects(backend: BackendDep, page: PageDep, _: Reader) -> Page[ProjectOut]:
    projects = await backend.client.projects.list()
    return page_of([ProjectOut.of(p) for p in projects if backend.principal.allows_project(p.name)], page,
                   filters={"remote": backend.remote})
