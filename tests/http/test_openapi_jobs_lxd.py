"""The jobs the gateway answers, against the real private daemon, validate against the committed document's `Job`
union: each kind's `params` and `result`, a failed job's `error` and partial result, listings without output
(`output_omitted`), the times as RFC 3339."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from jsonschema import Draft7Validator, Draft202012Validator

from app.locallxd.daemon import DaemonInfo
from app.locallxd.image import build_busybox_image
from app.main import create_app
from app.settings import ImageSourceSettings
from tests.containers.support import create, job_ends, remove_all, unique
from tests.support.app import make_settings

OPENAPI = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"
ASYNCAPI = OPENAPI.with_name("asyncapi.json")


@pytest.fixture(scope="module")
def job_validator() -> Draft202012Validator:
    document = json.loads(OPENAPI.read_text())
    return Draft202012Validator({**document, "$ref": "#/components/schemas/Job"},
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def check(validator: Draft202012Validator, job: dict[str, Any]) -> dict[str, Any]:
    errors = [f"{list(e.absolute_path)}: {e.message[:300]}" for e in validator.iter_errors(job)]
    assert not errors, (job["kind"], errors)
    return job


async def check_sse(client: httpx.AsyncClient, job_id: str) -> None:
    """The job's Server-Sent Events (an ended job: `snapshot`, then `end`) fit the AsyncAPI document's
    `JobMessage`."""
    document = json.loads(ASYNCAPI.read_text())
    validator = Draft7Validator({**document, "$ref": "#/components/schemas/JobMessage"},
                                format_checker=Draft7Validator.FORMAT_CHECKER)
    r = await client.get(f"/v1/jobs/{job_id}/events")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.text
    events = [dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
              for block in r.text.split("\n\n") if block.strip() and not block.startswith(":")]
    assert [e["event"] for e in events] == ["snapshot", "end"], events
    for event in events:
        message = json.loads(event["data"])
        assert message["type"] == event["event"] and str(message["seq"]) == event["id"]
        errors = [f"{list(e.absolute_path)}: {e.message[:300]}" for e in validator.iter_errors(message)]
        assert not errors, errors


async def test_every_job_answered_fits_its_kind_in_the_document(
        client: httpx.AsyncClient, lxd_daemon: DaemonInfo, job_validator: Draft202012Validator) -> None:
    prefix = unique("toa")
    name = f"{prefix}-a"
    pool = f"lgw-{secrets.token_hex(3)}"
    seen: dict[str, dict[str, Any]] = {}

    async def run(r: httpx.Response) -> dict[str, Any]:
        job = check(job_validator, await job_ends(client, r))
        full = check(job_validator, (await client.get(f"/v1/jobs/{job['id']}")).json())
        assert full["params"] is not None, full
        seen[job["kind"]] = full
        return full

    try:
        check(job_validator, await create(client, name))
        created = (await client.get("/v1/jobs", params={"kind": "container.create", "limit": 1})).json()["items"][0]
        seen["container.create"] = check(job_validator, (await client.get(f"/v1/jobs/{created['id']}")).json())
        assert seen["container.create"]["result"]["image"]["fingerprint"]

        job = await run(await client.post(f"/v1/containers/{name}/exec", params={"wait": 60},
                                          json={"command": ["sh", "-c", "echo out; echo err >&2"]}))
        assert job["result"]["stdout"] == "out\n"
        await check_sse(client, job["id"])
        failed = await job_ends(client, await client.post(
            f"/v1/containers/{name}/exec", params={"wait": 60}, json={"command": ["sleep", "30"], "timeout": 1}))
        assert failed["status"] == "failed" and failed["error"]["status"] == 504, failed
        check(job_validator, failed)

        await run(await client.post(f"/v1/containers/{name}/snapshots", params={"wait": 60},
                                    json={"name": "s1"}))
        await run(await client.post(f"/v1/containers/{name}/stop", params={"wait": 60}, json={"force": True}))
        await run(await client.post(f"/v1/containers/{name}/snapshots/s1/restore", params={"wait": 60}))
        await run(await client.delete(f"/v1/containers/{name}/snapshots/s1", params={"wait": 60}))
        await run(await client.post(f"/v1/containers/{name}/rename", params={"wait": 60},
                                    json={"name": f"{prefix}-b"}))
        await run(await client.post(f"/v1/containers/{prefix}-b/copy", params={"wait": 60},
                                    json={"name": f"{prefix}-c"}))
        await run(await client.post(f"/v1/containers/{prefix}-c/start", params={"wait": 60}, json={}))
        await run(await client.delete(f"/v1/containers/{prefix}-c", params={"wait": 60}))
        await run(await client.post("/v1/containers/remove", params={"wait": 60}, json={"names": [f"{prefix}-b"]}))

        assert (await client.post("/v1/storage-pools", json={"name": pool, "driver": "dir"})).status_code == 201
        volumes = f"/v1/storage-pools/{pool}/volumes"
        assert (await client.post(volumes, json={"name": "v1"})).status_code == 201
        await run(await client.post(f"{volumes}/v1/snapshots", params={"wait": 60}, json={"name": "n1"}))
        await run(await client.post(f"{volumes}/v1/snapshots/n1/restore", params={"wait": 60}))
        await run(await client.delete(f"{volumes}/v1/snapshots/n1", params={"wait": 60}))

        listed = (await client.get("/v1/jobs", params={"limit": 100})).json()["items"]
        for job in listed:
            check(job_validator, job)
        execs = [j for j in listed if j["kind"] == "container.exec" and j["status"] == "succeeded"]
        assert execs and execs[0]["result"].get("output_omitted") is True and "stdout" not in execs[0]["result"]
        assert {"container.create", "container.exec", "container.stop", "container.start", "container.rename",
                "container.copy", "container.delete", "container.remove-many", "snapshot.create",
                "snapshot.restore", "snapshot.delete", "volume-snapshot.create", "volume-snapshot.restore",
                "volume-snapshot.delete"} <= set(seen)
    finally:
        await remove_all(lxd_daemon.socket_path, prefix)
        await client.delete(f"/v1/storage-pools/{pool}/volumes/v1")
        await client.delete(f"/v1/storage-pools/{pool}")


async def test_image_jobs_fit_their_kinds_in_the_document(
        client: httpx.AsyncClient, tmp_path: Path, job_validator: Draft202012Validator) -> None:
    tarball = build_busybox_image(tmp_path / "oa.tar.gz", description="lgw openapi")
    alias = f"lgw/oa/{secrets.token_hex(3)}"
    r = await client.post("/v1/images/upload", params={"aliases": [alias], "wait": 60}, content=tarball.read_bytes(),
                          headers={"Content-Type": "application/octet-stream"})
    imported = check(job_validator, await job_ends(client, r))
    assert imported["kind"] == "image.import" and imported["status"] == "succeeded", imported
    fingerprint = imported["result"]["fingerprint"]
    try:
        check(job_validator, (await client.get(f"/v1/jobs/{imported['id']}")).json())
        found = check(job_validator, await job_ends(client, await client.post(
            "/v1/images/find", params={"wait": 60}, json={"alias": alias})))
        assert found["status"] == "succeeded" and found["result"]["local"] is True, found
        check(job_validator, (await client.get(f"/v1/jobs/{found['id']}")).json())
    finally:
        deleted = check(job_validator, await job_ends(client, await client.delete(
            f"/v1/images/{fingerprint}", params={"wait": 60})))
    assert deleted["status"] == "succeeded" and deleted["result"] == {"fingerprint": fingerprint, "deleted": True}
    check(job_validator, (await client.get(f"/v1/jobs/{deleted['id']}")).json())


async def test_image_copy_and_a_failed_find_fit_the_document(
        tmp_path: Path, lxd_daemon: DaemonInfo, image_server: DaemonInfo,
        job_validator: Draft202012Validator) -> None:
    source = ImageSourceSettings(name="lgw-oa", url=image_server.https_url, protocol=image_server.backend,
                                 certificate=Path(image_server.server_cert))
    app = create_app(make_settings(tmp_path, lxd_daemon, image_sources=[source]))
    alias = f"lgw/oa/{secrets.token_hex(3)}"
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                       base_url="http://gw") as c:
        try:
            copied = check(job_validator, await job_ends(c, await c.post(
                "/v1/images", params={"wait": 120},
                json={"source": {"image_source": "lgw-oa", "alias": "busybox"}, "aliases": [alias]})))
            assert copied["kind"] == "image.copy" and copied["status"] == "succeeded", copied
            check(job_validator, (await c.get(f"/v1/jobs/{copied['id']}")).json())
        finally:
            await c.delete(f"/v1/images/aliases/{alias}")
        failed = check(job_validator, await job_ends(c, await c.post(
            "/v1/images/find", params={"wait": 60}, json={"alias": f"lgw/none/{secrets.token_hex(3)}"})))
        assert failed["status"] == "failed" and failed["error"]["sources"] == ["lgw-oa"], failed
