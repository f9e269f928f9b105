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
