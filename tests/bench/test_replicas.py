"""The parts of bench/replicas.py that need no LXD: connections spread over the replicas in turn, and the rate."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from bench.reads import load
from bench.replicas import per_minute, round_robin


async def test_round_robin_spreads_the_connections_and_their_requests_over_the_replicas() -> None:
    connections: Counter[int] = Counter()
    requests: Counter[int] = Counter()

    async def serve(index: int) -> tuple[asyncio.Server, int]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections[index] += 1
            try:
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    requests[index] += 1
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return server, server.sockets[0].getsockname()[1]

    servers = [await serve(i) for i in range(3)]
    try:
        result = await load(round_robin([port for _, port in servers]), "/v1/jobs?limit=20", connections=12,
                            total=600)
    finally:
        for server, _ in servers:
            server.close()
            await server.wait_closed()
    assert result.requests == 600 and result.failed == 0 and not result.errors
    assert connections == {0: 4, 1: 4, 2: 4}
    assert sum(requests.values()) == 600 and min(requests.values()) > 0


def test_per_minute() -> None:
    assert per_minute(24, 6.0) == pytest.approx(240.0)
    assert per_minute(24, 0.0) == 0.0
