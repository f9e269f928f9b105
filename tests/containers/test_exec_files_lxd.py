"""Exec jobs and files through ASGI against the real private LXD: captured output, exit codes, the output cap,
the timeout, cancel kills the process; upload, download, directory listing, delete."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import httpx
import pytest

from app.locallxd.daemon import DaemonInfo
from app.lxd.client import Client
from tests.containers.support import create, job_ends, poll, remove_all, unique

pytestmark = pytest.mark.backends()  # every test here runs on LXD and on Incus


PROBLEM = "application/problem+json"


@pytest.fixture
async def running(client: httpx.AsyncClient, lxd_daemon: DaemonInfo) -> AsyncIterator[str]:
    prefix = unique("tex")
    name = f"{prefix}-a"
    await create(client, name)
    yield name
    await remove_all(lxd_daemon.socket_path, prefix)


async def run(client: httpx.AsyncClient, name: str, **body: object) -> dict:
    r = await client.post(f"/v1/containers/{name}/exec", json=body, params={"wait": 60})
    return await job_ends(client, r)


async def test_exec_output_exit_code_cap_and_timeout(client: httpx.AsyncClient, running: str) -> None:
    job = await run(client, running, command=["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert job["status"] == "succeeded" and job["kind"] == "container.exec", job
    assert job["result"] == {"exit_code": 3, "stdout": "out\n", "stderr": "err\n", "truncated": False}
    assert job["lxd_operations"] and job["lxd_operations"][0]["remote"] == "local"

    job = await run(client, running, command=["cat"], stdin="fed through stdin", environment={"X": "1"})
    assert job["result"]["stdout"] == "fed through stdin"
    job = await run(client, running, command=["sh", "-c", "echo $GREETING; pwd"], environment={"GREETING": "hi"},
                    cwd="/tmp")
    assert job["result"]["stdout"] == "hi\n/tmp\n"

    job = await run(client, running, command=["sh", "-c", "yes | head -c 100000"], max_output_bytes=1000)
    assert job["status"] == "succeeded" and job["result"]["truncated"] is True
    assert len(job["result"]["stdout"]) == 1000

    job = await run(client, running, command=["sh", "-c", "echo started; sleep 30"], timeout=1)
    assert job["status"] == "failed", job
    assert job["error"]["type"].endswith("/exec-timeout") and job["result"]["stdout"] == "started\n", job


async def test_cancelling_a_long_exec_kills_the_process(client: httpx.AsyncClient, running: str) -> None:
    r = await client.post(f"/v1/containers/{running}/exec", json={"command": ["sleep", "4242"]})
    job = r.json()
    assert r.status_code == 202 and r.headers["location"] == f"/v1/jobs/{job['id']}"

    async def sleeping() -> bool:
        ps = await run(client, running, command=["ps"])
        return "sleep 4242" in ps["result"]["stdout"]

    await poll(sleeping, timeout=20)
    r = await client.delete(f"/v1/jobs/{job['id']}", params={"wait": 30})
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    ps = await run(client, running, command=["ps"])
    assert "sleep 4242" not in ps["result"]["stdout"]


async def test_files_upload_download_listing_delete(client: httpx.AsyncClient, running: str) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB of every byte value
    r = await client.put(f"/v1/containers/{running}/files", params={"path": "/root/blob.bin"}, content=data,
                         headers={"Content-Type": "application/octet-stream", "X-File-Mode": "0600",
                                  "X-File-Uid": "0", "X-File-Gid": "0"})
    assert r.status_code == 200, r.text
    assert r.json() == {"path": "/root/blob.bin", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    r = await client.get(f"/v1/containers/{running}/files", params={"path": "/root/blob.bin"})
    assert r.status_code == 200 and r.content == data
    assert r.headers["x-file-mode"] == "0600" and r.headers["x-file-type"] == "file"
    assert r.headers["content-type"] == "application/octet-stream"

    listing = (await client.get(f"/v1/containers/{running}/files", params={"path": "/root"})).json()
    assert {"name": "blob.bin", "path": "/root/blob.bin"} in listing["items"] and listing["next_cursor"] is None
    page = (await client.get(f"/v1/containers/{running}/files", params={"path": "/etc", "limit": 2})).json()
    assert len(page["items"]) == 2 and page["next_cursor"]

    r = await client.delete(f"/v1/containers/{running}/files", params={"path": "/root/blob.bin"})
    assert r.status_code == 204
    r = await client.get(f"/v1/containers/{running}/files", params={"path": "/root/blob.bin"})
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
    r = await client.get(f"/v1/containers/{running}/files", params={"path": "relative"})
    assert r.status_code == 422
    r = await client.get("/v1/containers/tex-none/files", params={"path": "/etc"})
    assert r.status_code == 404 and r.json()["type"].endswith("/container-not-found")


async def test_deleting_the_root_directory_or_a_mount_point_is_a_client_error_not_502(
        client: httpx.AsyncClient, running: str) -> None:
    for root in ("/", "//", "/.", "/proc/.."):
        r = await client.delete(f"/v1/containers/{running}/files", params={"path": root})
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, (root, r.text)
    r = await client.delete(f"/v1/containers/{running}/files", params={"path": "/proc"})  # a busy mount point
    assert r.status_code == 409 and r.json()["type"].endswith("/file-in-use"), r.text
    r = await client.get(f"/v1/containers/{running}/files", params={"path": "/proc"})
    assert r.status_code == 200  # still there


async def test_file_requests_racing_the_containers_deletion_get_404_or_409_not_502(
        client: httpx.AsyncClient, lxd_daemon: DaemonInfo) -> None:
    """While a container is stopped and deleted LXD fails file calls with errors of its own (a reset connection,
    "Instance storage pool not found"): the caller hears the container went away or stopped."""
    prefix = unique("tfr")
    answers: list[httpx.Response] = []
    try:
        for round_ in range(3):
            name = f"{prefix}-{round_}"
            await create(client, name)
            async with Client.unix(lxd_daemon.socket_path) as lxd:

                async def hammer(name: str = name) -> None:
                    for i in range(300):
                        r = await client.delete(f"/v1/containers/{name}/files", params={"path": f"/etc/x{i}"})
                        answers.append(r)
                        if r.status_code == 404 and r.json()["type"].endswith("/container-not-found"):
                            return

                async def remove(lxd: Client = lxd, name: str = name) -> None:
                    await lxd.instances.set_state(name, "stop", force=True)
                    await lxd.instances.delete(name)

                await asyncio.gather(hammer(), remove())
    finally:
        await remove_all(lxd_daemon.socket_path, prefix)
    bad = [r.text[:200] for r in answers if r.status_code not in (404, 409)]
    assert not bad, bad
    assert all(r.headers["content-type"].startswith(PROBLEM) for r in answers)
