"""Answers of reads that may come from the read model: where they came from, how old they are, and the gateway's
own ETag over the whole answer (LXD's does not change when a status or an address does), with `If-None-Match`.

    X-Gateway-Cache: hit | miss | bypass     hit: the model in sync; miss: the model was still loading it;
                                             bypass: read live (Cache-Control: no-cache, or the model not in sync)
    Age: seconds since LXD gave what is shown
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from starlette.requests import HTTPConnection
from starlette.responses import Response

from app.http.errors import ProblemError
from app.http.etag import bare_etag
from app.http.pagination import PageParams, paginate
from app.lxd.client import Client
from app.mirror import Lookup, Mirror, Record, Shaped, etag_of, render

CACHE_HEADER = "X-Gateway-Cache"
CACHE_HEADERS = {
    CACHE_HEADER: {"description": "`hit` (from the gateway's model of LXD, in sync), `miss` (the model was still "
                                  "loading: read live), `bypass` (read live: `Cache-Control: no-cache`, or the "
                                  "model not in sync)", "schema": {"type": "string", "enum": ["hit", "miss",
                                                                                            "bypass"]}},
    "Age": {"description": "seconds since LXD gave what is shown", "schema": {"type": "integer"}},
    "ETag": {"description": "the gateway's ETag over the whole answer: `If-None-Match` answers 304 while it "
                            "holds; `If-Match` on a write compares against it", "schema": {"type": "string"}},
}


def wants_live(conn: HTTPConnection) -> bool:
    """Whether the caller asked for a live read (`Cache-Control: no-cache` or `no-store`, `Pragma: no-cache`)."""
    cc = conn.headers.get("cache-control", "").lower()
    return "no-cache" in cc or "no-store" in cc or "max-age=0" in cc or \
        conn.headers.get("pragma", "").lower() == "no-cache"


def not_modified(conn: HTTPConnection, etag: str) -> bool:
    """Whether the caller's `If-None-Match` names `etag` (or is `*`)."""
    inm = conn.headers.get("if-none-match")
    if not inm:
        return False
    if inm.strip() == "*":
        return True
    return bare_etag(etag) in {bare_etag(v) for v in inm.split(",")}


def cached_response(conn: HTTPConnection, body: bytes, etag: str, *, source: str, age: int = 0,
                    status_code: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """`body` (JSON) with its ETag and where it came from; 304 when the caller has it already."""
    h = {"ETag": etag, CACHE_HEADER: source, "Age": str(max(0, age)), **(headers or {})}
    if status_code == 200 and conn.scope.get("method") in ("GET", "HEAD") and not_modified(conn, etag):
        return Response(status_code=304, headers=h)
    return Response(body, status_code=status_code, media_type="application/json", headers=h)


def page_body(items: Iterable[bytes], next_cursor: str | None) -> bytes:
    """A `{items, next_cursor}` page from items rendered already."""
    cursor = render(next_cursor)[0]
    return b'{"items":[' + b",".join(items) + b'],"next_cursor":' + cursor + b"}"


def page_response(conn: HTTPConnection, items: Iterable[bytes], next_cursor: str | None, *, source: str,
                  age: int = 0) -> Response:
    body = page_body(items, next_cursor)
    return cached_response(conn, body, etag_of(body), source=source, age=age)



# -- reads through the model, shared by the routers of mirrored collections -----------------------------------------

View = Callable[[Record], tuple[Shaped, bytes, str]]
"""How a record is shown to the caller of a request (their variant: redacted or not), rendered with its ETag."""


async def read_one(conn: HTTPConnection, mirror: Mirror, remote: str, project: str, kind: str, key: str, *,
                   client: Client, missing: ProblemError, live: bool = False) -> Lookup:
    """`key` through the read model (`Cache-Control: no-cache` or `live`: from LXD); `missing` when there is none."""
    lk = await mirror.lookup(remote, project, kind, key, client=client, live=live or wants_live(conn))
    if lk.record is None:
        raise missing
    return lk


def answer(conn: HTTPConnection, lk: Lookup, view: View, status_code: int = 200,
           headers: Mapping[str, str] | None = None) -> Response:
    """One object read with `read_one`, as the caller may see it."""
    assert lk.record is not None
    _, body, etag = view(lk.record)
    return cached_response(conn, body, etag, source=lk.source, age=lk.age, status_code=status_code,
                           headers=headers)


async def read_page(conn: HTTPConnection, mirror: Mirror, remote: str, project: str, kind: str, *, client: Client,
                    view: View, page: PageParams, filters: Mapping[str, Any],
                    keep: Callable[[list[Shaped]], list[Shaped]] | None = None,
                    key: Callable[[Shaped], str] = lambda d: str(d.get("name"))) -> Response:
    """A page of the collection through the read model, filtered by `keep`, sorted by `key`, with an ETag over
    the page."""
    listing = await mirror.listing(remote, project, kind, client=client, live=wants_live(conn))
    views = [view(r) for r in listing.records]
    if keep is not None:
        kept = {id(d) for d in keep([v[0] for v in views])}
        views = [v for v in views if id(v[0]) in kept]
    page_ = paginate(views, page, key=lambda v: key(v[0]), filters=filters)
    return page_response(conn, [v[1] for v in page_["items"]], page_["next_cursor"], source=listing.source,
                         age=listing.age)
