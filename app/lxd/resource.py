"""What the resource modules (images, profiles, storage, networks, projects, certificates, cluster) share: a model
base that reads LXD's `null` lists and maps as empty, the sub-API base, paths, and the If-Match, `target=`, list
and request-body helpers."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from pydantic import model_validator

from app.lxd.errors import NotFound
from app.lxd.models import LXDModel

if TYPE_CHECKING:
    from app.lxd.client import Client

M = TypeVar("M", bound=LXDModel)


class SubAPI:
    """A part of the client (`client.images`, `client.profiles`, ...): it sends its requests through `_client`."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def _all(self, path: str, model: type[M]) -> list[M]:
        """Every object of a server-wide collection (no project), read in one request (`recursion=1`)."""
        env = await self._client.request("GET", path, params={"recursion": 1}, scoped=False)
        return [model.model_validate(o) for o in env.metadata or []]


def object_path(collection: str, name: str) -> str:
    """The URL path of one object of an LXD collection (`"profiles"`, `"storage-pools"`, ...), name quoted."""
    return f"/1.0/{collection}/{quote(name, safe='')}"


async def found(read: Awaitable[Any]) -> bool:
    """Whether the object `read` fetches exists: its `NotFound` means no, any other error is raised."""
    try:
        await read
    except NotFound:
        return False
    return True


def given(**fields: Any) -> dict[str, Any]:
    """The fields that are set: None, "" and empty collections (and False) are left out of a request body."""
    return {k: v for k, v in fields.items() if v}


def list_params(*, filter: str | None = None, all_projects: bool = False, recursion: int = 1,
                **extra: Any) -> dict[str, Any]:
    """The query of a collection read: `recursion`, an optional `filter`, `all-projects`, and the `extra` given."""
    params: dict[str, Any] = {"recursion": recursion, **given(filter=filter)}
    if all_projects:
        params["all-projects"] = "true"
    return params | given(**extra)


class Resource(LXDModel):
    """An API object; a `null` where a field has a non-None default (LXD sends `"used_by": null`) reads as that
    default."""

    @model_validator(mode="before")
    @classmethod
    def _nulls_to_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items()
                    if v is not None or k not in cls.model_fields or cls.model_fields[k].is_required()
                    or cls.model_fields[k].get_default(call_default_factory=True) is None}
        return data


def if_match(etag: str | None) -> dict[str, str] | None:
    """The If-Match header for an ETag (LXD compares it without the quotes)."""
    return {"If-Match": f'"{etag}"'} if etag else None


def with_target(target: str | None, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Query parameters plus `target=` (a cluster member, or `@group`) when given."""
    out = dict(params or {})
    if target:
        out["target"] = target
    return out or None
