"""What the resource modules (images, profiles, storage, networks, projects, certificates, cluster) share: a model
base that reads LXD's `null` lists and maps as empty, and the If-Match and `target=` helpers."""

from __future__ import annotations

from typing import Any

from pydantic import model_validator

from app.lxd.models import LXDModel


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
