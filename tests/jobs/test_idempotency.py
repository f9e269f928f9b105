"""Idempotency keys: fingerprints, one job for concurrent replays, conflicts, release after a refusal."""

from __future__ import annotations

import asyncio

import pytest

from app.jobs.idempotency import Idempotency, IdempotencyConflict, Replay, Reservation, fingerprint
from app.jobs.store import JobStore


def test_fingerprint_ignores_wait_key_order_and_whitespace() -> None:
    a = fingerprint("POST", "/v1/containers", [("remote", "local"), ("wait", "5")], b'{"b": 1, "a": [1, 2]}')
    b = fingerprint("post", "/v1/containers", [("remote", "local")], b'{"a":[1,2],"b":1}')
    assert a == b
    assert a != fingerprint("POST", "/v1/containers", [("remote", "tls")], b'{"a":[1,2],"b":1}')
    assert a != fingerprint("POST", "/v1/containers", [("remote", "local")], b'{"a":[1,2],"b":2}')
    up1 = fingerprint("POST", "/v1/images/upload", [], None, content_sha256="AB12")
    assert up1 == fingerprint("POST", "/v1/images/upload", [], None, content_sha256="ab12")


async def test_concurrent_same_key_one_owner(store: JobStore) -> None:
    idem = Idempotency(store, owner_id="me")

    async def request() -> str:
        outcome = await idem.begin("tok", "key-1", "fp")
        if isinstance(outcome, Reservation):
            await asyncio.sleep(0.05)  # accepting the request takes a while
            await idem.complete(outcome, "job-1")
            return "owner"
        assert isinstance(outcome, Replay)
        return outcome.job_id

    results = await asyncio.gather(*(request() for _ in range(50)))
    assert results.count("owner") == 1 and results.count("job-1") == 49
    again = await idem.begin("tok", "key-1", "fp")
    assert again == Replay("job-1")
    with pytest.raises(IdempotencyConflict):
        await idem.begin("tok", "key-1", "other")
    assert isinstance(await idem.begin("another-token", "key-1", "other"), Reservation)


async def test_refused_first_request_frees_the_key(store: JobStore) -> None:
    idem = Idempotency(store, owner_id="me")
    first = await idem.begin("tok", "k", "fp")
    assert isinstance(first, Reservation)
    waiter = asyncio.create_task(idem.begin("tok", "k", "fp"))
    await asyncio.sleep(0.01)
    await idem.release(first)
    second = await waiter
    assert isinstance(second, Reservation)  # the waiting replay now owns the key


async def test_reservation_of_a_dead_process_is_taken_over(store: JobStore) -> None:
    dead = Idempotency(store, owner_id="dead")
    assert isinstance(await dead.begin("tok", "k", "fp"), Reservation)  # never completed
    alive = Idempotency(store, owner_id="alive")
    assert isinstance(await alive.begin("tok", "k", "fp"), Reservation)


async def test_a_key_whose_release_could_not_be_stored_is_reserved_again(store: JobStore) -> None:
    idem = Idempotency(store, owner_id="me")
    first = await idem.begin("tok", "key-3", "fp")
    assert isinstance(first, Reservation)
    idem._settle("tok", "key-3", None)  # refused, but the release never reached the store (a full disk)
    again = await idem.begin("tok", "key-3", "fp")
    assert again == Reservation("tok", "key-3", "fp")
    await idem.complete(again, "job-3")
    assert await idem.begin("tok", "key-3", "fp") == Replay("job-3")
