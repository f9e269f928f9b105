"""Problems, request ids, probes and the offline Swagger page."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.locallxd.daemon import DaemonInfo
from app.main import create_app
from app.settings import RemoteSettings, Settings

PROBLEM = "application/problem+json"


async def test_unknown_route_is_a_404_problem(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/nope")
    assert r.status_code == 404
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["status"] == 404 and body["instance"] == "/v1/nope"
    assert body["type"].endswith("/not-found")
    assert body["request_id"] == r.headers["x-request-id"]


async def test_wrong_method_is_a_405_problem(client: httpx.AsyncClient) -> None:
    r = await client.post("/livez")
    assert r.status_code == 405
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["title"] == "Method not allowed"


async def test_request_id_is_echoed_or_made(client: httpx.AsyncClient) -> None:
    r = await client.get("/livez", headers={"X-Request-ID": "ci-run-42"})
    assert r.headers["x-request-id"] == "ci-run-42"
    r = await client.get("/livez", headers={"X-Request-ID": "bad id with spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])


async def test_unhandled_error_is_a_500_problem_without_a_trace(app: FastAPI) -> None:
    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        r = await c.get("/boom", headers={"X-Request-ID": "req-500"})
    assert r.status_code == 500
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["request_id"] == "req-500"
    assert "secret internals" not in r.text and "Traceback" not in r.text


async def test_validation_error_is_a_422_problem_with_errors(app: FastAPI) -> None:
    @app.get("/typed")
    async def typed(n: int) -> dict[str, int]:
        return {"n": n}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        r = await c.get("/typed", params={"n": "x"})
    assert r.status_code == 422
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["errors"][0]["field"] == "query.n"


async def test_readyz_ok_against_real_lxd(client: httpx.AsyncClient) -> None:
    r = await client.get("/readyz")
    assert r.status_code == 200, r.text
    assert {x["name"]: x["reachable"] for x in r.json()["remotes"]} == {"local": True, "tls": True}


async def test_readyz_names_the_unreachable_remote_and_fails_only_for_a_required_one(
        tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    remotes = [RemoteSettings(name="local", url=f"unix://{lxd_daemon.socket_path}", default=True),
               RemoteSettings(name="gone", url=f"unix://{tmp_path}/missing.socket")]
    for required, status in (([], 200), (["gone"], 503), (["local"], 200)):
        settings = Settings(_env_file=None, data_dir=tmp_path / str(status) / "-".join(required),  # type: ignore
                            auth_enabled=False, remotes=remotes, required_remotes=required)
        application = create_app(settings)
        async with LifespanManager(application), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=application), base_url="http://gw") as c:
            r = await c.get("/readyz")
            metrics = (await c.get("/metrics")).text
        assert r.status_code == status, (required, r.text)
        body = r.json()
        states = {x["name"]: x["reachable"] for x in body["remotes"]}
        assert states == {"local": True, "gone": False}, body
        if status == 503:
            assert r.headers["content-type"] == PROBLEM
            assert "'gone'" in body["detail"] and "'local'" not in body["detail"]
        else:
            assert body["status"] == "degraded"  # one dead remote does not take the gateway out of service
        assert 'lxdgw_remote_up{remote="gone"} 0.0' in metrics and 'lxdgw_remote_up{remote="local"} 1.0' in metrics
        assert 'lxdgw_remote_info{backend="lxd",clustered="false",remote="local"' in metrics


async def test_docs_served_from_local_assets(client: httpx.AsyncClient) -> None:
    r = await client.get("/docs")
    assert r.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", r.text) + re.findall(r"url: ?'([^']+)'", r.text)
    assert urls, r.text
    for url in urls:
        assert url.startswith("/"), f"{url} would leave the machine"
        asset = await client.get(url)
        assert asset.status_code == 200, url


@pytest.mark.parametrize("path", ["/livez", "/openapi.json"])
async def test_public_probes(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 200
