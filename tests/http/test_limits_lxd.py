"""Body size, rate and job limits answer problems before any work is done; CORS only when configured. Against a
real gateway process: a huge request head, slow heads and too many connections are refused at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager

from app.locallxd.daemon import DaemonInfo
from app.main import create_app
from app.store.tokens import Scope
from tests.support.app import make_settings
from tests.support.gateway import GatewayProcess, running_gateway


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
    from tests.jobs.test_router_live import EXTENSION

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


async def test_the_job_cap_holds_for_requests_asking_at_once(tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    from tests.jobs.test_router_live import EXTENSION

    async for c in _client(tmp_path, lxd_daemon, max_jobs_per_token=3, extensions=[EXTENSION]):
        answers = await asyncio.gather(*(c.post("/v1/test-jobs", json={"steps": 20, "interval": 0.1})
                                         for _ in range(12)))
        codes = [r.status_code for r in answers]
        assert codes.count(202) == 3 and codes.count(429) == 9, codes
        for r in answers:
            if r.status_code == 202:
                await c.delete(f"/v1/jobs/{r.json()['id']}")


async def test_without_authentication_the_rate_limit_is_per_address(tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    async for c in _client(tmp_path, lxd_daemon, auth_enabled=False, rate_limit="3/minute"):
        codes = [(await c.get("/v1/whoami")).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        assert (await c.get("/livez")).status_code == 200  # probes are never limited


# -- connections, against a real gateway process --------------------------------------------------------------------


class Watch:
    """`/livez` answered (status, seconds) and the gateway's RSS (KiB), sampled in a thread during an attack."""

    def __init__(self, gw: GatewayProcess) -> None:
        self.gw = gw
        self.answers: list[tuple[int, float]] = []
        self.rss: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.gw.base, timeout=10) as c:
            while not self._stop.is_set():
                self.rss.append(rss_kib(self.gw.proc.pid))
                t0 = time.monotonic()
                try:
                    status = c.get("/livez").status_code
                except httpx.HTTPError:
                    status = 0
                self.answers.append((status, time.monotonic() - t0))
                self._stop.wait(0.05)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def assert_livez_answered_within(self, seconds: float) -> None:
        assert len(self.answers) >= 3, self.answers
        assert all(status == 200 for status, _ in self.answers), self.answers
        assert max(t for _, t in self.answers) < seconds, self.answers


def rss_kib(pid: int) -> int:
    return int(next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if line.startswith("VmRSS:")))


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def read_answer(sock: socket.socket, timeout: float) -> bytes:
    """What the server sends until it closes the connection (a reset ends it too)."""
    sock.settimeout(timeout)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_a_64_mib_request_head_or_trailer_is_refused_at_once_and_costs_the_gateway_little(
        tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    attacks = {  # the start of a request whose head, or whose chunked body's trailer, is then padded
        "head": b"GET /v1/containers HTTP/1.1\r\nHost: gw\r\nX-Padding: ",
        "trailer": b"POST /v1/tokens HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX-Padding: ",
    }
    with running_gateway(lxd_daemon.socket_path, tmp_path, auth=True) as gw:
        for attack, start in attacks.items():
            before = rss_kib(gw.proc.pid)
            with Watch(gw) as watch, socket.create_connection(("127.0.0.1", gw.port)) as s:
                s.settimeout(10)
                t0 = time.monotonic()
                s.sendall(start)
                sent = 0
                with contextlib.suppress(OSError):  # the gateway closes the connection: a broken pipe or a reset
                    while sent < 64 * 2**20:
                        s.sendall(b"a" * 2**20)
                        sent += 2**20
                answer = read_answer(s, 5)
                refused_after = time.monotonic() - t0
                time.sleep(0.5)  # /livez is watched a little longer
            assert sent < 32 * 2**20, f"{attack}: the gateway kept reading"
            assert refused_after < 3, attack
            assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), (attack, answer[:200])
            if answer:
                assert b"application/problem+json" in answer and b"header-too-large" in answer
            watch.assert_livez_answered_within(1.0)
            assert max(watch.rss) - before < 32 * 1024, (attack, before, max(watch.rss))


async def test_slowloris_connections_are_closed_after_the_header_timeout(tmp_path: Path,
                                                                         lxd_daemon: DaemonInfo) -> None:
    with running_gateway(lxd_daemon.socket_path, tmp_path, LXDGW_HEADER_TIMEOUT_SECONDS="2") as gw:
        head = b"GET /livez HTTP/1.1\r\nHost: gw\r\nX-Slow: " + b"a" * 2000

        async def loris() -> tuple[float, bytes]:
            """Sends the head a byte every 50 ms; (seconds until the gateway answered or closed, the answer)."""
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            t0 = time.monotonic()
            try:
                for byte in head:
                    with contextlib.suppress(ConnectionError):
                        writer.write(bytes([byte]))
                        await writer.drain()
                    try:
                        answer = await asyncio.wait_for(reader.read(65536), 0.05)
                    except TimeoutError:
                        continue
                    except ConnectionError:
                        answer = b""
                    return time.monotonic() - t0, answer
                return time.monotonic() - t0, b"the whole head was sent"
            finally:
                writer.close()

        with Watch(gw) as watch:
            async with asyncio.timeout(30):
                results = await asyncio.gather(*(loris() for _ in range(100)))
        watch.assert_livez_answered_within(1.0)
        assert all(1.8 < seconds < 3.5 for seconds, _ in results), sorted(s for s, _ in results)
        assert all(answer.startswith(b"HTTP/1.1 408 ") for _, answer in results), {a[:60] for _, a in results}
        assert b"request-timeout" in results[0][1]

        # the time a request's body takes, or its handling, is not the head's: a body sent over 3 s is answered
        body = json.dumps({"name": "slow", "target": "not-a-fingerprint"}).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"POST /v1/images/aliases HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        for i in range(0, len(body), len(body) // 6 + 1):
            writer.write(body[i:i + len(body) // 6 + 1])
            await writer.drain()
            await asyncio.sleep(0.5)
        answer = await asyncio.wait_for(reader.read(65536), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 422 "), answer[:200]

        # the head time starts again with each request of a keep-alive connection, and pipelined requests pass
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        get = b"GET /livez HTTP/1.1\r\nHost: gw\r\n\r\n"
        for _ in range(3):  # 3 s on one connection, 1.5 s between requests
            writer.write(get)
            assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 200 ")
            await reader.readuntil(b"}")
            await asyncio.sleep(1.5)
        writer.write(get + get)
        for _ in range(2):
            assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 200 ")
            await reader.readuntil(b"}")
        writer.close()


def test_connections_past_the_cap_are_refused_at_once_and_the_gateway_recovers(tmp_path: Path,
                                                                              lxd_daemon: DaemonInfo) -> None:
    with running_gateway(lxd_daemon.socket_path, tmp_path, LXDGW_MAX_CONNECTIONS="50",
                         LXDGW_HEADER_TIMEOUT_SECONDS="60") as gw:
        pid = gw.proc.pid
        fds = open_fds(pid)
        held = [socket.create_connection(("127.0.0.1", gw.port)) for _ in range(50)]
        try:
            for s in held:
                s.sendall(b"GET /livez HTTP/1.1\r\n")  # half a request each
            deadline = time.monotonic() + 10
            while open_fds(pid) < fds + 50 and time.monotonic() < deadline:
                time.sleep(0.05)
            refused = []
            for _ in range(20):
                with socket.create_connection(("127.0.0.1", gw.port)) as s:
                    t0 = time.monotonic()
                    answer = read_answer(s, 5)
                    refused.append((time.monotonic() - t0, answer))
            assert all(seconds < 1 for seconds, _ in refused), [s for s, _ in refused]
            assert all(a.startswith(b"HTTP/1.1 503 ") and b"too-many-connections" in a for _, a in refused)
            r = httpx.get(f"{gw.base}/livez", timeout=5)  # a probe is one more connection: refused, not stalled
            assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
            assert r.headers["retry-after"] == "1"
            assert open_fds(pid) <= fds + 50 + 2  # the refused ones were closed
        finally:
            for s in held:
                s.close()
        deadline = time.monotonic() + 10
        while open_fds(pid) > fds + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert open_fds(pid) <= fds + 2
        assert httpx.get(f"{gw.base}/livez", timeout=5).status_code == 200
