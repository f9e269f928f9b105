"""deploy/nginx/lxd-gateway-replicas.conf in a real nginx in front of three gateway processes (`python -m app`) on one
PostgreSQL database: requests are spread over the three, keep being answered when two replicas stop, and a job's
Server-Sent Events and websocket messages pass through as they happen (nothing buffered until the end)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from app.locallxd.daemon import ensure_binary, free_port
from tests.support.gateway import GatewayProcess, running_gateway

ROOT = Path(__file__).resolve().parents[2]
EXTENSION = '["tests.jobs.extension_sleep"]'


@contextlib.contextmanager
def nginx_in_front(tmp_path: Path, ports: list[int]) -> Iterator[str]:
    """nginx with the replicas' config, its upstreams the given loopback ports; yields its base URL."""
    nginx = ensure_binary("nginx", "nginx-light")
    listen = free_port()
    site = (ROOT / "deploy" / "nginx" / "lxd-gateway-replicas.conf").read_text()
    site = re.sub(r"gateway-(\d):8080", lambda m: f"127.0.0.1:{ports[int(m[1]) - 1]}", site)
    site = site.replace("listen 8080;", f"listen 127.0.0.1:{listen};")
    temp = tmp_path / "temp"
    temp.mkdir(parents=True)
    temp.chmod(0o777)  # nginx's workers run as another user when the tests run as root
    (tmp_path / "site.conf").write_text(site)
    paths = "".join(f"  {kind}_temp_path {temp}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi",
                                                                           "scgi"))
    (tmp_path / "nginx.conf").write_text(
        f"daemon off;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n  access_log off;\n{paths}  include {tmp_path}/site.conf;\n}}\n")
    proc = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{listen}"
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, (tmp_path / "error.log").read_text(errors="replace")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/livez", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "nginx did not answer"
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def answered_jobs_lists(gateway: GatewayProcess) -> float:
    """How many `GET /v1/jobs` this replica answered 200, from its own metrics."""
    text = httpx.get(f"{gateway.base}/metrics", timeout=10).text
    return sum(float(m[1]) for m in re.finditer(
        r'^lxdgw_http_requests_total\{(?=[^}]*route="/v1/jobs")(?=[^}]*method="GET")(?=[^}]*status="200")[^}]*\} '
        r"(\S+)$", text, re.M))


@pytest.fixture
def replicas(tmp_path: Path, postgres_url: str) -> Iterator[list[GatewayProcess]]:
    """Three gateway processes on one database (no LXD: the jobs here are the test extension's)."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(running_gateway(str(tmp_path / "no-lxd.sock"), tmp_path / name,
                                                   LXDGW_DATABASE_URL=postgres_url, LXDGW_EXTENSIONS=EXTENSION,
                                                   LXDGW_RATE_LIMIT="", LXDGW_SHUTDOWN_GRACE_SECONDS="1"))
               for name in ("r1", "r2", "r3")]


async def test_nginx_spreads_requests_over_three_replicas_and_streams_jobs_as_they_run(
        tmp_path: Path, replicas: list[GatewayProcess]) -> None:
    with nginx_in_front(tmp_path / "nginx", [g.port for g in replicas]) as base:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            for _ in range(30):
                assert (await http.get("/v1/jobs", params={"limit": 5})).status_code == 200
            counts = [answered_jobs_lists(g) for g in replicas]
            assert sum(counts) == 30 and all(c > 0 for c in counts), counts

            for gateway in replicas[1:]:  # two replicas go away: the one left answers everything
                gateway.stop()
            for _ in range(20):
                assert (await http.get("/v1/jobs", params={"limit": 5})).status_code == 200

            # a job's messages through nginx as they happen: 10 steps of 0.3 s
            async with websockets.connect(f"{base.replace('http', 'ws', 1)}/v1/jobs/ws") as ws:
                r = await http.post("/v1/test-jobs", json={"steps": 10, "interval": 0.3})
                assert r.status_code == 202, r.text
                job_id = r.json()["id"]
                seen: list[tuple[str, float]] = []
                async with http.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
                    assert stream.status_code == 200
                    assert stream.headers["content-type"].startswith("text/event-stream")
                    async for line in stream.aiter_lines():
                        if line.startswith("event: "):
                            seen.append((line.removeprefix("event: "), time.monotonic()))
                            if line == "event: end":
                                break
                ws_types: list[str] = []
                async with asyncio.timeout(10):
                    while "end" not in ws_types:
                        message = json.loads(await ws.recv())
                        if message.get("job", {}).get("id") == job_id:
                            ws_types.append(message["type"])
    kinds = [k for k, _ in seen]
    assert kinds[-1] == "end" and kinds.count("progress") >= 5, kinds
    first_progress = next(t for k, t in seen if k == "progress")
    assert seen[-1][1] - first_progress > 1.5, seen  # the first steps arrived long before the end
    assert "progress" in ws_types and ws_types[-1] == "end", ws_types
