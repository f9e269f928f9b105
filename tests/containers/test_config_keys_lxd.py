"""Config and device keys are checked before LXD sees them (LXD answers some bad keys with a 500)."""

from __future__ import annotations

import httpx
import pytest

BAD = "\U001076a0J\u3085"


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/v1/storage-pools/default/volumes", {"name": "v1", "config": {BAD: "x"}}),
    ("POST", "/v1/storage-pools", {"name": "p1", "driver": "dir", "config": {"bad key": "x"}}),
    ("POST", "/v1/networks", {"name": "n1", "config": {BAD: "x"}}),
    ("POST", "/v1/profiles", {"name": "p1", "config": {BAD: "x"}}),
    ("POST", "/v1/profiles", {"name": "p1", "devices": {"bad name!": {"type": "nic"}}}),
    ("PATCH", "/v1/profiles/default", {"config": {BAD: "1"}}),
    ("PATCH", "/v1/server/config", {"config": {BAD: "1"}}),
])
async def test_bad_keys_are_422(client: httpx.AsyncClient, method: str, path: str, body: dict[str, object]) -> None:
    r = await client.request(method, path, json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["errors"]


async def test_alias_with_any_character_gets_an_encoded_location(client: httpx.AsyncClient,
                                                                 lxd_daemon: object) -> None:
    name = "déjà/vu-\U0002c8b0"
    target = lxd_daemon.image_fingerprint  # type: ignore[attr-defined]
    r = await client.post("/v1/images/aliases", json={"name": name, "target": target})
    try:
        assert r.status_code == 201, r.text
        assert r.headers["location"] == "/v1/images/aliases/d%C3%A9j%C3%A0/vu-%F0%AC%A2%B0"
    finally:
        await client.delete(f"/v1/images/aliases/{name}")


async def test_ambiguous_certificate_prefix_is_400(client: httpx.AsyncClient) -> None:
    made = [(await client.post("/v1/certificates/generate", json={"name": f"amb{i}", "trust": True})).json()
            for i in range(17)]  # 17 fingerprints: two share a first hex digit
    try:
        firsts = [m["fingerprint"][0] for m in made]
        shared = next(c for c in firsts if firsts.count(c) > 1)
        r = await client.get(f"/v1/certificates/{shared}")
        assert r.status_code == 400, r.text
        assert r.json()["lxd_error"].startswith("More than one")
    finally:
        for m in made:
            await client.delete(f"/v1/certificates/{m['fingerprint']}")
