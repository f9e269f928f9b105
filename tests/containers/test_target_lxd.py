"""`?target=` on create reaches LXD (a standalone LXD refuses it, which proves it was passed through)."""

from __future__ import annotations

import uuid

import httpx


async def test_target_is_passed_to_lxd(client: httpx.AsyncClient) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    r = await client.post("/v1/containers", params={"target": "node9", "wait": 60},
                          json={"name": name, "image": {"alias": "busybox"}})
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["status"] == "failed"
    assert "Target only allowed when clustered" in (job["error"].get("lxd_error") or job["error"]["detail"])
    assert (await client.get(f"/v1/containers/{name}")).status_code == 404


async def test_malformed_target_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/containers", params={"target": "bad target!"},
                          json={"name": "x1", "image": {"alias": "busybox"}})
    assert r.status_code == 422
