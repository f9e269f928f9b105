"""Cursor pagination for collections the gateway sorts itself (LXD has no pagination).

Every collection answers `{items, next_cursor}`. The cursor is opaque: base64 of the last sort key and a digest of
the filters it was made for, so a cursor reused with other filters, or tampered with, is a 400 problem.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel, BeforeValidator, Field, SerializerFunctionWrapHandler, model_serializer

from app.http.errors import ProblemError

T = TypeVar("T")
MAX_LIMIT = 1000


class Unreachable(BaseModel):
    remote: str = Field(description="the remote that did not answer", examples=["lxd2"])
    problem: dict[str, Any] = Field(description="the problem that remote answered (a problem+json document)",
                                    examples=[{"type": "https://lxd-gateway.dev/problems/lxd-unavailable",
                                               "title": "Service unavailable", "status": 503,
                                               "detail": "remote 'lxd2' is unreachable"}])


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next page; null on the last page")
    unreachable: list[Unreachable] | None = Field(
        None, description="with `remote=*` only: the remotes that did not answer, each with its problem (their items "
        "are missing)", examples=[[]])

    # Unannotated on purpose: the JSON schema of the answer stays the fields' (an annotation would replace it).
    @model_serializer(mode="wrap")
    def _without_unset(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        out: dict[str, Any] = handler(self)
        if out.get("unreachable") is None:
            out.pop("unreachable", None)
        return out


class PageParams(BaseModel):
    limit: int
    cursor: str | None


CursorQuery = Annotated[str | None, BeforeValidator(lambda v: v or None),
                        Query(description="the `next_cursor` of the previous page (empty: the first page)")]
"""The `cursor` of a listing; an empty one is the same as none."""


def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="items per page (at most 1000)")] = 100,
    cursor: CursorQuery = None,
) -> PageParams:
    return PageParams(limit=limit, cursor=cursor)


PageDep = Annotated[PageParams, Depends(page_params)]


def _digest(filters: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(filters, sort_keys=True, default=str).encode()).hexdigest()[:16]


def encode_cursor(last_key: str, filters: Mapping[str, Any]) -> str:
    raw = json.dumps({"k": last_key, "f": _digest(filters)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, filters: Mapping[str, Any]) -> str:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        key, digest = data["k"], data["f"]
        if not isinstance(key, str) or not isinstance(digest, str):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise ProblemError(400, "malformed cursor: pass back the next_cursor of a previous page",
                           slug="bad-cursor") from None
    if digest != _digest(filters):
        raise ProblemError(400, "the cursor was made for other filters", slug="bad-cursor")
    return key


def paginate(items: Sequence[T], params: PageParams, *, key: Callable[[T], str],
             filters: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Sort by `key`, start after the cursor's key, cut at `limit`."""
    filters = filters or {}
    ordered = sorted(items, key=key)
    if params.cursor is not None:
        after = decode_cursor(params.cursor, filters)
        ordered = [i for i in ordered if key(i) > after]
    page = ordered[: params.limit]
    more = len(ordered) > params.limit
    return {"items": page, "next_cursor": encode_cursor(key(page[-1]), filters) if more and page else None}


def by_name(item: Any) -> str:
    """The usual sort key: the item's `name`."""
    return str(item.name)


def page_of(items: Iterable[T], params: PageParams, *, key: Callable[[T], str] = by_name,
            filters: Mapping[str, Any] | None = None) -> Page[T]:
    """`paginate` answering a `Page` (the route's `response_model` checks it): sorted by `key`, the `name` unless
    told otherwise."""
    return Page[T](**paginate(list(items), params, key=key, filters=filters))
