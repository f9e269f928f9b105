"""Body size, rate and job limits answer problems before any work is done; CORS only when configured."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager

from app.core.tokens import Scope
from app.harness.daemon import DaemonInfo
from app.main import create_app
from tests.api.conftest import make_settings


async def _client(tmp_path: Path, daemon: DaemonInfo, **overrides: object) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(tmp_path, daemon, **overrides))
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                       base_url="http://gw") as c:
        c.app = app  # type: ignore[attr-defined]
        yield c


async def test_body_too_large_is_413(tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    async for c in _client(tmp_path, lxd_daemon, max_body_bytes=2048):
        big = {"name": "x", "scopes": ["read"], "pad": "a" * 5000}
        r = await c.post("/v1/tokens", json=big)
        assert r.status_code == 413
        assert r.headers["content-type"] == "application/problem+json"

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while it streams
            for _ in range(10):
                yield b"x" * 1024

        r = await c.post("/v1/tokens", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert c.app.state.tokens.list() == []  # type: ignore[attr-defined]


async def test_rate_limit_is_429_with_retry_after(tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    async for c in _client(tmp_path, lxd_daemon, auth_enabled=True, rate_limit="3/minute"):
        _, secret = c.app.state.tokens.create("busy", [Scope.read])  # type: ignore[attr-defined]
        _, other = c.app.state.tokens.create("calm", [Scope.read])  # type: ignore[attr-defined]
        codes = [(await c.get("/v1/whoami", headers={"Authorization": f"Bearer {secret}"})).status_code
                 for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = await c.get("/v1/whoami", headers={"Authorization": f"Bearer {secret}"})
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60
        assert r.headers["content-type"] == "application/problem+json"
        # the limit is per token
        assert (await c.get("/v1/whoami", headers={"Authorization": f"Bearer {other}"})).status_code == 200


async def test_cors_only_for_configured_origins(tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    async for c in _client(tmp_path, lxd_daemon):
        r = await c.get("/livez", headers={"Origin": "https://dash.example"})
        assert "access-control-allow-origin" not in r.headers
    async for c in _client(tmp_path, lxd_daemon, cors_origins=["https://dash.example"]):
        r = await c.get("/livez", headers={"Origin": "https://dash.example"})
        assert r.headers["access-control-allow-origin"] == "https://dash.example"
        r = await c.get("/livez", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


async def test_unfinished_jobs_per_token_are_limited(tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    from tests.api.test_jobs import EXTENSION

    async for c in _client(tmp_path, lxd_daemon, max_jobs_per_token=2, extensions=[EXTENSION]):
        body = {"steps": 20, "interval": 0.1}
        assert [(await c.post("/v1/test-jobs", json=body)).status_code for _ in range(2)] == [202, 202]
        r = await c.post("/v1/test-jobs", json=body)
        assert r.status_code == 429 and r.headers["retry-after"] == "5"
        assert r.json()["type"].endswith("/too-many-jobs")
        jobs = (await c.get("/v1/jobs")).json()["items"]
        assert len(jobs) == 2
        for job in jobs:
            await c.delete(f"/v1/jobs/{job['id']}")


async def test_without_authentication_the_rate_limit_is_per_address(tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    async for c in _client(tmp_path, lxd_daemon, auth_enabled=False, rate_limit="3/minute"):
        codes = [(await c.get("/v1/whoami")).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        assert (await c.get("/livez")).status_code == 200  # probes are never limited
