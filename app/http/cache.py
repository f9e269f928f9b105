"""Answers of reads that may come from the read model: where they came from, how old they are, and the gateway's
own ETag over the whole answer (LXD's does not change when a status or an address does), with `If-None-Match`.

    X-Gateway-Cache: hit | miss | bypass     hit: the model in sync; miss: the model was still loading it;
                                             bypass: read live (Cache-Control: no-cache, or the model not in sync)
    Age: seconds since LXD gave what is shown
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from starlette.requests import HTTPConnection
from starlette.responses import Response

from app.http.etag import bare_etag
from app.mirror import etag_of, render

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
    if status_code == 200 and not_modified(conn, etag):
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

