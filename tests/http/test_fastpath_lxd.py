"""The fast path of `GET /v1/containers/{name}` (app/http/fastpath.py) answers exactly what the framework's route
answers, for every kind of caller and request, on the real private LXD: the same status, body, and headers that
matter; and it is really taken (the requests it takes skip the framework's dependency resolution)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.http.fastpath import FastReads
from app.locallxd.daemon import DaemonInfo
from app.store.tokens import Scope
from tests.containers.support import poll, unique
from tests.support.app import model_in_sync
from tests.support.secured_gateway import Gateway, secured_gateway


def _fast_reads(app: Any) -> FastReads:
    layer = app.middleware_stack
    while not isinstance(layer, FastReads):
        layer = layer.app
    return layer


async def _has_ipv4(c: httpx.AsyncClient, name: str) -> bool:
    return any(a["family"] == "inet" for a in (await c.get(f"/v1/containers/{name}")).json()["addresses"])


def _comparable(r: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    body: Any = r.content
    if r.headers.get("content-type", "").startswith("application/"):
        body = json.loads(r.content) if r.content else None
        if isinstance(body, dict):
            body.pop("request_id", None)
    keep = {k: r.headers[k] for k in ("content-type", "etag", "x-gateway-cache", "www-authenticate", "allow")
            if k in r.headers}
    return r.status_code, body, keep


@pytest.fixture
async def gateway(tmp_path: Path, lxd_daemon: DaemonInfo) -> Any:
    async with secured_gateway(tmp_path, lxd_daemon, unique("tfp")) as gw:
        await model_in_sync(gw.app)
        yield gw


async def test_the_fast_path_answers_what_the_route_answers(gateway: Gateway) -> None:
    gw, name = gateway, gateway.container
    reader = gw.token("reader", Scope.read)
    writer = gw.token("writer", Scope.write)
    other_project = gw.token("p2-only", Scope.read, projects=["p2"])
    other_remote = gw.token("tls-only", Scope.read, remotes=["tls"])
    async with gw.http(gw.admin) as c:  # the container just started: its answer is stable once it has its address
        await poll(lambda: _has_ipv4(c, name), timeout=30)
        etag = (await c.get(f"/v1/containers/{name}")).headers["etag"]
    cases: list[tuple[str | None, str, dict[str, str]]] = [
        (gw.admin, f"/v1/containers/{name}", {}),
        (reader, f"/v1/containers/{name}", {}),
        (writer, f"/v1/containers/{name}?remote=local", {}),
        (reader, f"/v1/containers/{name}?remote=tls&project=default", {}),
        (reader, f"/v1/containers/{name}", {"If-None-Match": etag}),
        (reader, f"/v1/containers/{name}", {"If-None-Match": '"g0.0"'}),
        (reader, "/v1/containers/no-such-container", {}),
        (reader, f"/v1/containers/{name}?remote=nope", {}),
        (reader, f"/v1/containers/{name}?project=no-such-project", {}),
        (other_project, f"/v1/containers/{name}", {}),
        (other_remote, f"/v1/containers/{name}", {}),
        (None, f"/v1/containers/{name}", {}),
        ("lxdgw_not-a-token", f"/v1/containers/{name}", {}),
        (reader, "/v1/containers/9bad", {}),  # not the route's pattern: the framework answers (422)
        (reader, f"/v1/containers/{name}?remote=local&remote=tls", {}),  # repeated: the framework's way
        (reader, f"/v1/containers/{name}?project=bad/project", {}),
        (reader, f"/v1/containers/{name}?unknown=1", {}),
    ]
    fast = _fast_reads(gw.app)

    async def ask(enabled: bool, secret: str | None, path: str, headers: dict[str, str]) -> Any:
        fast.enabled = enabled
        try:
            async with gw.http(secret) as c:
                return _comparable(await c.get(path, headers=headers))
        finally:
            fast.enabled = True

    answers: dict[bool, list[tuple[int, Any, dict[str, str]]]] = {True: [], False: []}
    for secret, path, headers in cases:
        for _ in range(5):  # the container just started: an address arriving between the two reads changes both
            on, off = await ask(True, secret, path, headers), await ask(False, secret, path, headers)
            if on[2].get("etag") == off[2].get("etag"):
                break
        assert on == off, (path, on, off)
        answers[True].append(on)
        answers[False].append(off)
    statuses = [a[0] for a in answers[True]]
    assert statuses == [200, 200, 200, 200, 304, 200, 404, 404, 404, 403, 403, 401, 401, 422, 200, 422, 200]
    assert answers[True][0][2]["x-gateway-cache"] == "hit"


async def test_the_fast_path_is_taken_and_labelled_as_the_route(gateway: Gateway,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi import routing

    resolved = 0
    original = routing.solve_dependencies

    async def counting(*args: Any, **kw: Any) -> Any:
        nonlocal resolved
        resolved += 1
        return await original(*args, **kw)

    monkeypatch.setattr(routing, "solve_dependencies", counting)
    async with gw_http(gateway) as c:
        for _ in range(5):
            assert (await c.get(f"/v1/containers/{gateway.container}")).status_code == 200
        assert resolved == 0  # no dependency of the route was resolved by the framework
        assert (await c.get(f"/v1/containers/{gateway.container}?unknown=1")).status_code == 200
        assert resolved == 1
        metrics = (await c.get("/metrics")).text
    assert 'lxdgw_http_requests_total{method="GET",route="/v1/containers/{name}",status="200"} 6.0' in metrics


def gw_http(gw: Gateway) -> httpx.AsyncClient:
    return gw.http(gw.admin)
