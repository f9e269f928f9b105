"""The parts of bench/reads.py that need no LXD: the load generator (its response parsing, and whole runs against a
loopback server), the percentile, the cache tally, and the event-stream watch the freshness measure uses."""

from __future__ import annotations

import asyncio
import json
import statistics
from collections.abc import AsyncIterator

import httptools
import httpx
import pytest

from bench.reads import CacheTally, ResponseReader, Watch, containers_in, get_request, load, percentile, sse_events, tcp


def response(status: int = 200, body: bytes = b'{"name":"c1"}', cache: str | None = None) -> bytes:
    head = f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
    if cache is not None:
        head += f"X-Gateway-Cache: {cache}\r\n"
    return head.encode() + b"\r\n" + body


# ---------------------------------------------------------------------------------------------- response parsing


def test_reader_counts_status_and_cache_header_of_a_whole_response() -> None:
    reader = ResponseReader()
    assert reader.feed(response(cache="hit")) == 1
    assert reader.statuses == {200: 1}
    assert reader.cache.counts == {"hit": 1}


def test_reader_counts_a_missing_cache_header_as_none() -> None:
    reader = ResponseReader()
    reader.feed(response())
    assert reader.cache.counts == {"none": 1}


def test_reader_completes_a_response_split_across_reads_only_at_its_last_byte() -> None:
    reader = ResponseReader()
    data = response(cache="miss", body=b"x" * 1000)
    done = [reader.feed(data[i:i + 7]) for i in range(0, len(data), 7)]
    assert sum(done) == 1 and done[-1] == 1
    assert reader.cache.counts == {"miss": 1}


def test_reader_parses_keep_alive_responses_one_after_another_and_in_one_read() -> None:
    reader = ResponseReader()
    assert reader.feed(response(cache="hit")) == 1
    assert reader.feed(response(404, b"{}", cache="Bypass") + response(cache="hit")) == 2
    assert reader.statuses == {200: 2, 404: 1}
    assert reader.cache.counts == {"hit": 2, "bypass": 1}
    assert reader.completed == 3


def test_reader_parses_chunked_bodies() -> None:
    reader = ResponseReader()
    chunked = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-gateway-cache: miss\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    assert reader.feed(chunked[:40]) == 0
    assert reader.feed(chunked[40:]) == 1
    assert reader.cache.counts == {"miss": 1}


def test_reader_header_does_not_leak_into_the_next_response() -> None:
    reader = ResponseReader()
    reader.feed(response(cache="hit") + response())
    assert reader.cache.counts == {"hit": 1, "none": 1}


def test_reader_rejects_what_is_not_http() -> None:
    with pytest.raises(httptools.HttpParserError):
        ResponseReader().feed(b"SSH-2.0-OpenSSH\r\n\r\n")


def test_get_request_is_a_complete_keep_alive_head() -> None:
    req = get_request("/v1/containers/c1", host="lxd")
    assert req.startswith(b"GET /v1/containers/c1 HTTP/1.1\r\nHost: lxd\r\n")
    assert req.endswith(b"\r\n\r\n") and b"close" not in req.lower()


# ---------------------------------------------------------------------------------------------- percentile


def test_percentile_interpolates_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 25) == pytest.approx(1.75)


def test_percentile_of_a_hundred_values() -> None:
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 50) == statistics.median(values)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0


def test_percentile_refuses_no_values_and_out_of_range() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


# ---------------------------------------------------------------------------------------------- tally, SSE


def test_cache_tally_summary_in_fixed_order_with_other_values_named() -> None:
    tally = CacheTally()
    for value in ("hit", "HIT ", None, "", "miss", "stale"):
        tally.add(value)
    other = CacheTally()
    other.add("bypass")
    tally.merge(other)
    assert tally.summary() == "2 / 1 / 1 / 2 (other: stale 1)"
    assert tally.total() == 7


def test_sse_events_split_at_blank_lines_and_join_data_lines() -> None:
    lines = [": keep-alive", "", "event: modified", "id: 7", "data: {\"a\":", "data: 1}", "",
             "data: x", "", "event: deleted", ""]
    assert sse_events(lines) == [("modified", '{"a":\n1}'), ("message", "x")]


def test_containers_in_one_resource_a_list_or_a_resync() -> None:
    c = {"name": "c1", "config": {"user.n": "1"}}
    assert containers_in(c) == [c]
    assert containers_in([c, 3]) == [c]
    assert containers_in({"items": [c]}) == [c]
    assert containers_in({"type": "modified", "resource": c}) == [c]
    assert containers_in(json.loads("null")) == []


# ---------------------------------------------------------------------------------------------- load generator


async def serve_fixed(answers_per_connection: int | None = None) -> tuple[asyncio.Server, int]:
    """A loopback server answering every request head with one fixed response (the path echoed in the body);
    with `answers_per_connection`, it closes a connection after that many answers."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered = 0
        try:
            while answers_per_connection is None or answered < answers_per_connection:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1]
                writer.write(response(cache="hit", body=path))
                answered += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_load_sends_exactly_the_total_over_its_connections() -> None:
    server, port = await serve_fixed()
    async with server:
        result = await load(tcp("127.0.0.1", port), "/x", connections=20, total=205)
    assert result.requests == 205
    assert result.statuses == {200: 205} and result.failed == 0
    assert result.cache.counts == {"hit": 205}
    assert not result.errors
    assert result.seconds > 0 and result.rate > 0


async def test_load_stops_sending_at_its_deadline() -> None:
    server, port = await serve_fixed()
    async with server:
        result = await load(tcp("127.0.0.1", port), "/x", connections=4, total=10**9, seconds=0.2)
    assert 0 < result.requests < 10**9
    assert result.failed == 0
    assert result.seconds < 5


async def test_load_counts_connections_closed_before_the_answer_and_ends() -> None:
    server, port = await serve_fixed(answers_per_connection=1)
    async with server:
        result = await load(tcp("127.0.0.1", port), "/x", connections=5, total=50)
    assert result.statuses == {200: 5}
    assert result.errors == {"closed before the answer": 5}
    assert result.failed == 5


# ---------------------------------------------------------------------------------------------- watch


def gateway_transport(stream: bool, events: list[bytes]) -> httpx.MockTransport:
    async def body() -> AsyncIterator[bytes]:
        for chunk in events:
            await asyncio.sleep(0.01)
            yield chunk
        await asyncio.sleep(30)

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params.get("watch") == "true"
        if stream:
            return httpx.Response(200, headers={"content-type": "text/event-stream", "x-gateway-cache": "hit"},
                                  content=body())
        return httpx.Response(200, json={"items": [], "next_cursor": None})

    return httpx.MockTransport(handler)


async def test_watch_sees_each_value_of_the_container_from_the_stream() -> None:
    mine = json.dumps({"name": "c1", "config": {"user.n": "1"}}).encode()
    other = json.dumps({"name": "c2", "config": {"user.n": "2"}}).encode()
    events = [b"event: modified\ndata: " + other + b"\n\n", b"event: modified\ndata: " + mine[:10],
              mine[10:] + b"\n\n"]
    tally = CacheTally()
    async with httpx.AsyncClient(transport=gateway_transport(True, events), base_url="http://gw") as http:
        watch = Watch(http, "c1", tally)
        async with watch.open() as streaming:
            assert streaming
            await watch.wait_for("1", timeout=5)
            assert "2" not in watch.seen
    assert tally.counts == {"hit": 1}


async def test_watch_falls_back_when_the_answer_is_not_an_event_stream() -> None:
    tally = CacheTally()
    http = httpx.AsyncClient(transport=gateway_transport(False, []), base_url="http://gw")
    async with http, Watch(http, "c1", tally).open() as streaming:
        assert not streaming
    assert tally.counts == {"none": 1}
