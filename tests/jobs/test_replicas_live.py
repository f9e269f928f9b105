"""Gateway processes (`python -m app`) sharing one PostgreSQL and the real LXD: when the process running a create
dies (SIGKILL) or is paused (SIGSTOP) past its lease, another running process takes the job over and settles it
from the container's state; a paused process, resumed, writes nothing more of it. Any process serves the stream of
a job another runs, and any cancels it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import websockets

from app.locallxd.daemon import DaemonInfo, free_port
from app.lxd import Client, NotFound
from tests.support.gateway import GatewayProcess, gateway_env, start_gateway
from tests.support.streams import iter_sse, read_sse

LEASE = 5.0
TAKEOVER_INTERVAL = LEASE / 3


@pytest.fixture
def replica_count() -> int:
    """How many gateway processes `replicas` starts (parametrize a test with `replica_count` for more)."""
    return 2


@pytest.fixture
def replicas(tmp_path: Path, lxd_daemon: DaemonInfo, postgres_url: str,
             replica_count: int) -> Iterator[list[GatewayProcess]]:
    """Gateway processes (two unless `replica_count` says) on one database, with a short lease."""
    started: list[GatewayProcess] = []
    try:
        for name in "abcdefgh"[:replica_count]:
            env = gateway_env(lxd_daemon.socket_path, tmp_path / name, free_port(), LXDGW_DATABASE_URL=postgres_url,
                              LXDGW_JOB_LEASE_SECONDS=str(LEASE), LXDGW_SHUTDOWN_GRACE_SECONDS="1")
            started.append(start_gateway(env, log=tmp_path / name / "gateway.log"))
        yield started
    finally:
        for g in started:
            if g.proc.poll() is None:
                os.kill(g.proc.pid, signal.SIGCONT)
                g.stop()


def create_on(gateway: GatewayProcess, name: str) -> str:
    r = httpx.post(f"{gateway.base}/v1/containers", json={"name": name, "image": {"alias": "busybox"}}, timeout=30)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def wait_for_operation(gateway: GatewayProcess, job_id: str, count: int = 1) -> None:
    """Until the job has recorded `count` LXD operations (1: the create itself, 2: the start)."""
    deadline = time.monotonic() + 60
    while True:
        job = httpx.get(f"{gateway.base}/v1/jobs/{job_id}", timeout=10).json()
        if len(job["lxd_operations"]) >= count:
            return
        assert job["status"] in ("queued", "running"), job
        assert time.monotonic() < deadline, job
        time.sleep(0.01)


def settled_on(gateway: GatewayProcess, job_id: str, timeout: float) -> tuple[dict[str, Any], float]:
    """The job once ended, read from `gateway`, and how long that took."""
    start = time.monotonic()
    while True:
        job = httpx.get(f"{gateway.base}/v1/jobs/{job_id}", timeout=10).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job, time.monotonic() - start
        assert job["status"] == "running", job
        assert time.monotonic() - start < timeout, f"not settled within {timeout}s: {job}"
        time.sleep(0.05)


def container_status(daemon: DaemonInfo, name: str) -> str | None:
    async def read() -> str | None:
        async with Client.unix(daemon.socket_path) as lxd:
            try:
                return str((await lxd.instances.get(name)).status)
            except NotFound:
                return None

    return asyncio.run(read())


def check_outcome(daemon: DaemonInfo, job: dict[str, Any], name: str) -> None:
    """Running and succeeded, or gone and failed naming why."""
    status = container_status(daemon, name)
    if job["status"] == "succeeded":
        assert status == "Running", (job, status)
    else:
        assert job["status"] == "failed" and status is None, (job, status)
        assert job["error"]["type"].endswith(("/rolled-back", "/gateway-restarted")), job
        assert "the gateway stopped" in job["error"]["detail"], job


def stored_row(url: str, job_id: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT status, owner_id, seq, finished_at, error::text, result::text, progress::text, "
                           "operations::text, checkpoints::text, cleanup::text FROM jobs WHERE id=%s",
                           (job_id,)).fetchone()
    assert row is not None
    return dict(zip(("status", "owner_id", "seq", "finished_at", "error", "result", "progress", "operations",
                     "checkpoints", "cleanup"), row, strict=True))


def job_lines(gateway: GatewayProcess, job_id: str) -> list[str]:
    """The messages of the gateway's log lines about the job."""
    found = []
    for line in gateway.output().splitlines():
        try:
            event = json.loads(line).get("event", "")
        except (ValueError, AttributeError):
            event = line
        if job_id in str(event):
            found.append(str(event))
    return found


@pytest.mark.parametrize("operations", [1, 2], ids=["during-create", "during-start"])
def test_a_replica_killed_mid_create_leaves_the_job_to_another(
        replicas: list[GatewayProcess], lxd_daemon: DaemonInfo, postgres_url: str, operations: int) -> None:
    a, b = replicas
    name = f"kill-{uuid.uuid4().hex[:8]}"
    job_id = create_on(a, name)
    on_b: list[dict[str, Any]] = []  # a stream open on the replica that takes the job over
    subscribed = threading.Event()
    reader = threading.Thread(target=_sse_into, args=(b, job_id, on_b, subscribed), daemon=True)
    reader.start()
    assert subscribed.wait(10)
    wait_for_operation(a, job_id, operations)
    a.kill()
    killed = time.monotonic()
    job, _ = settled_on(b, job_id, LEASE + TAKEOVER_INTERVAL + 30)
    took = time.monotonic() - killed
    print(f"\ntakeover after SIGKILL: settled by the other replica {took:.2f}s after the kill "
          f"(lease {LEASE:g}s, claims every {TAKEOVER_INTERVAL:.2f}s; killed after {operations} LXD operations): "
          f"{job['status']}")
    assert took < LEASE + TAKEOVER_INTERVAL + 10
    check_outcome(lxd_daemon, job, name)
    assert any("took over" in line for line in job_lines(b, job_id))
    reader.join(30)
    ids = [e["id"] for e in on_b]
    assert on_b[-1]["event"] == "end" and on_b[-1]["data"]["job"]["status"] == job["status"], on_b
    assert ids == sorted(set(ids)) and ids[-1] == stored_row(postgres_url, job_id)["seq"], on_b


def test_a_paused_replica_stops_before_another_takes_its_job_and_writes_nothing_after(
        replicas: list[GatewayProcess], lxd_daemon: DaemonInfo, postgres_url: str) -> None:
    a, b = replicas
    name = f"pause-{uuid.uuid4().hex[:8]}"
    job_id = create_on(a, name)
    on_a: list[dict[str, Any]] = []  # a stream open on a: it goes on with the other replica's messages
    subscribed = threading.Event()
    reader = threading.Thread(target=_sse_into, args=(a, job_id, on_a, subscribed), daemon=True)
    reader.start()
    assert subscribed.wait(10)
    wait_for_operation(a, job_id)
    owner_a = stored_row(postgres_url, job_id)["owner_id"]
    os.kill(a.proc.pid, signal.SIGSTOP)
    paused = time.monotonic()
    try:
        job, _ = settled_on(b, job_id, LEASE + TAKEOVER_INTERVAL + 30)
        took = time.monotonic() - paused
        settled = stored_row(postgres_url, job_id)
        print(f"\ntakeover after SIGSTOP: settled by the other replica {took:.2f}s after the pause: {job['status']}")
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    assert settled["owner_id"] != owner_a  # the other replica's now
    check_outcome(lxd_daemon, job, name)
    time.sleep(LEASE)  # a runs again: its renewals, fencing and the create it was in resume
    assert stored_row(postgres_url, job_id) == settled  # untouched by a
    assert httpx.get(f"{a.base}/livez", timeout=10).status_code == 200
    seen_on_a = httpx.get(f"{a.base}/v1/jobs/{job_id}", timeout=10).json()
    assert seen_on_a["status"] == job["status"]  # a answers from the store: the other replica's outcome
    lines = job_lines(a, job_id)
    assert any("abandoned" in line for line in lines), lines
    assert not any(f"(container.create) {end}" in line for line in lines
                   for end in ("succeeded", "failed", "cancelled")), lines
    assert container_status(lxd_daemon, name) == (None if job["status"] == "failed" else "Running")
    reader.join(30)
    assert on_a and on_a[0]["event"] == "snapshot" and on_a[-1]["event"] == "end", on_a
    assert on_a[-1]["id"] == settled["seq"] and on_a[-1]["data"]["job"]["status"] == job["status"], on_a
    recovering = [e for e in on_a if e["event"] == "progress" and e["data"]["data"]["stage"] == "recovering"]
    assert recovering, on_a  # the takeover's messages, seen on the process that gave the job up


def test_a_cancel_sent_to_another_replica_stops_the_job_where_it_runs(
        replicas: list[GatewayProcess], lxd_daemon: DaemonInfo) -> None:
    a, b = replicas
    name = f"cancel-{uuid.uuid4().hex[:8]}"
    r = httpx.post(f"{a.base}/v1/containers", params={"wait": 120},
                   json={"name": name, "image": {"alias": "busybox"}}, timeout=130)
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    try:
        r = httpx.post(f"{a.base}/v1/containers/{name}/exec", json={"command": ["sleep", "60"]}, timeout=30)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        deadline = time.monotonic() + 30
        while httpx.get(f"{b.base}/v1/jobs/{job_id}", timeout=10).json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
        asked = time.monotonic()
        r = httpx.delete(f"{b.base}/v1/jobs/{job_id}", params={"wait": 30}, timeout=40)
        took = time.monotonic() - asked
        print(f"\ncancel through the other replica: ended {took:.2f}s after the DELETE")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "cancelled", r.text
        assert took < 10
        again = httpx.delete(f"{b.base}/v1/jobs/{job_id}", timeout=10)
        assert again.status_code == 409, again.text
        assert any("cancel asked through another gateway process" in line for line in job_lines(a, job_id))
    finally:
        httpx.delete(f"{a.base}/v1/containers/{name}", params={"force": "true", "wait": 60}, timeout=70)


async def _sse_of(http: httpx.AsyncClient, gateway: GatewayProcess, job_id: str,
                  last_event_id: int | None = None) -> list[dict[str, Any]]:
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    async with http.stream("GET", f"{gateway.base}/v1/jobs/{job_id}/events", headers=headers, timeout=120) as r:
        assert r.status_code == 200, await r.aread()
        events, _ = await read_sse(r)
    return events


def _sse_into(gateway: GatewayProcess, job_id: str, events: list[dict[str, Any]], first: threading.Event) -> None:
    """Read the job's SSE stream into `events` (`first` is set once the snapshot came), until it ends."""
    with httpx.stream("GET", f"{gateway.base}/v1/jobs/{job_id}/events", timeout=120) as r:
        for event in iter_sse(r):
            events.append(event)
            first.set()


async def _ws_of(gateway: GatewayProcess, job_id: str) -> tuple[list[dict[str, Any]], int | None]:
    messages = []
    async with websockets.connect(f"{gateway.ws_base}/v1/jobs/{job_id}/ws") as ws:
        async for raw in ws:
            messages.append(json.loads(raw))
        return messages, ws.close_code


@pytest.mark.parametrize("replica_count", [3])
async def test_a_create_on_one_replica_is_streamed_from_another_and_cancelled_from_a_third(
        replicas: list[GatewayProcess], lxd_daemon: DaemonInfo, postgres_url: str) -> None:
    a, b, c = replicas
    name = f"stream-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(f"{a.base}/v1/containers", json={"name": name, "image": {"alias": "busybox"}})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        sse = asyncio.create_task(_sse_of(http, b, job_id))
        ws = asyncio.create_task(_ws_of(b, job_id))
        deadline = time.monotonic() + 60
        while not (job := (await http.get(f"{b.base}/v1/jobs/{job_id}")).json())["lxd_operations"]:
            assert job["status"] in ("queued", "running") and time.monotonic() < deadline, job
            await asyncio.sleep(0.01)
        asked = time.monotonic()
        r = await http.delete(f"{c.base}/v1/jobs/{job_id}")
        assert r.status_code == 202, r.text
        events = await asyncio.wait_for(sse, 90)
        took = time.monotonic() - asked
        messages, close_code = await asyncio.wait_for(ws, 30)
        resumed_after = next(e["id"] for e in events if e["event"] == "status" and
                             (e["data"].get("data") or {}).get("cancel_requested"))
        resumed = await _sse_of(http, b, job_id, last_event_id=resumed_after)
    print(f"\nstream on another replica: `end` {took:.2f}s after the cancel sent to a third; "
          f"{len(events)} events: {[e['event'] for e in events]}")
    stored = stored_row(postgres_url, job_id)
    ids = [e["id"] for e in events]
    assert ids == sorted(set(ids))  # in order, never one twice
    assert events[0]["event"] == "snapshot"
    assert any(e["event"] == "status" and e["data"]["data"] == {"cancel_requested": True} for e in events), events
    assert any(e["event"] == "progress" and e["data"]["data"]["stage"] == "rolling back" for e in events), events
    end = events[-1]
    assert end["event"] == "end" and end["data"]["job"]["status"] == "cancelled", end
    assert end["id"] == stored["seq"] and stored["status"] == "cancelled"
    assert end["data"]["job"]["cleanup"] is not None and end["data"]["job"]["cleanup"]["status"] == "done", end
    # the websocket on the same replica: the same messages, with the same seq, then `end` and 1000
    assert close_code == 1000 and messages[-1]["type"] == "end" and messages[-1]["seq"] == end["id"]
    after = max(messages[0]["seq"], events[0]["id"])
    assert [(m["type"], m["seq"]) for m in messages if m["seq"] > after] == \
        [(e["event"], e["id"]) for e in events if e["id"] > after]
    # a reader resuming after the cancel on that replica gets the rest, `end` last
    assert resumed[-1]["event"] == "end" and resumed[-1]["id"] == end["id"]
    assert all(e["id"] > resumed_after for e in resumed)
    assert await asyncio.to_thread(container_status, lxd_daemon, name) is None  # rolled back
