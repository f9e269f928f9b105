"""`/metrics` moves as the API is used, labelled by route template."""

from __future__ import annotations

import httpx


async def test_request_counters_move_by_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/livez")
    await client.get("/v1/nope/123")
    await client.get("/v1/tokens/someone")  # a templated route
    r = await client.get("/metrics")
    assert r.status_code == 200
    text = r.text
    assert 'lxdgw_http_requests_total{method="GET",route="/livez",status="200"}' in text
    assert 'route="unmatched",status="404"' in text
    assert 'route="/v1/tokens/{name}"' in text
    assert "/v1/nope/123" not in text
    assert "lxdgw_http_request_duration_seconds_bucket" in text


async def test_lxd_job_and_stream_metrics_move(tmp_path, lxd_daemon) -> None:  # type: ignore[no-untyped-def]
    from asgi_lifespan import LifespanManager

    from app.main import create_app
    from tests.jobs.test_router_live import EXTENSION
    from tests.support.app import make_settings

    app = create_app(make_settings(tmp_path, lxd_daemon, extensions=[EXTENSION]))
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                       base_url="http://gw") as c:
        assert (await c.get("/v1/containers")).status_code == 200
        assert (await c.get("/v1/containers", params={"remote": "tls"})).status_code == 200
        r = await c.post("/v1/test-jobs", params={"wait": 30}, json={"steps": 1, "interval": 0.01})
        assert r.json()["status"] == "succeeded"
        failing = await c.post("/v1/test-jobs", params={"wait": 30}, json={"steps": 1, "interval": 0.01,
                                                                             "fail": True})
        assert failing.json()["status"] == "failed"
        text = (await c.get("/metrics")).text
    assert 'lxdgw_lxd_requests_total{method="GET",outcome="ok",remote="local"}' in text
    assert 'lxdgw_lxd_requests_total{method="GET",outcome="ok",remote="tls"}' in text
    assert 'lxdgw_lxd_request_duration_seconds_count{method="GET",remote="local"}' in text
    assert 'lxdgw_jobs_total{kind="test.sleep",status="succeeded"} 1.0' in text
    assert 'lxdgw_jobs_total{kind="test.sleep",status="failed"} 1.0' in text
    assert 'lxdgw_job_duration_seconds_count{kind="test.sleep"} 2.0' in text
    assert 'lxdgw_websocket_subscribers{stream="jobs"} 0.0' in text
    assert 'lxdgw_lxd_events_reconnects_total{remote="local"}' in text
