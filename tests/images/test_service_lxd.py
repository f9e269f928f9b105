"""§16 image scenarios against real daemons: local alias hit without contacting the image server (proved by
stopping it), sources searched in order, a copy under the local alias with progress, an unknown series."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.images.search import SeriesError
from app.images.service import ImageRemote, connect_image_remote, find_image, local_images
from app.locallxd.daemon import DaemonInfo, free_port
from app.lxd import Client, LXDError
from app.lxd.events import EventBus
from app.lxd.servers import ConnectionArgs, ServerSpec
from tests.support.lxd_clients import Throwaway, unique


def lxd_source(name: str, info: DaemonInfo) -> ServerSpec:
    return ServerSpec(host=info.https_url, name=name, protocol="lxd",
                      connection=ConnectionArgs(server_cert=Path(info.server_cert).read_text()))


class Recording:
    """A connector that records which image servers were contacted."""

    def __init__(self) -> None:
        self.contacted: list[str] = []

    async def __call__(self, spec: ServerSpec) -> ImageRemote:
        self.contacted.append(spec.name)
        return await connect_image_remote(spec)


@pytest.fixture(scope="module")
def padded_remote() -> Iterator[Throwaway]:
    """A throwaway image server with a 16 MB public image (big enough for LXD to report download progress)."""
    t = Throwaway(pad_mb=16, public_image=True)
    try:
        t.start()
        yield t
    finally:
        t.stop()


async def _drop_alias(client: Client, alias: str, *, image_too: bool = False) -> None:
    with contextlib.suppress(LXDError):
        fp = (await client.images.alias(alias)).target
        await client.images.delete_alias(alias)
        if image_too:
            await client.images.delete(fp)


async def test_s19_s21_s16_copy_with_local_alias_and_progress_then_local_hit_without_the_remote(
        core_client: Client, padded_remote: Throwaway) -> None:
    assert padded_remote.info is not None
    template = unique("lgwimg") + "/{series}/{arch}"
    source = lxd_source("padded", padded_remote.info)
    arch = (await core_client.server_info()).environment.architectures[0]
    remote_alias = "busybox"
    updates: list[tuple[str | None, int | None, str | None]] = []

    async def progress(stage: str | None, percent: int | None, message: str | None) -> None:
        updates.append((stage, percent, message))

    local_alias = template.format(series="busybox", arch=arch)
    try:
        found = await find_image(core_client, alias=remote_alias, local_alias=local_alias, sources=[source],
                                 copy_local=True, progress=progress)
        assert found.local and found.fingerprint == padded_remote.info.image_fingerprint
        assert (await core_client.images.alias(local_alias)).target == found.fingerprint
        assert updates[0] == ("allocating", None, "acquiring LXD image")
        retrieving = [u for u in updates if (u[2] or "").startswith("Retrieving image: ")]
        assert retrieving, updates
        assert all(u[2] == f"Retrieving image: {u[1]}%" for u in retrieving if u[1] is not None)

        padded_remote.stop()  # from here on, any contact with the image server would fail
        recording = Recording()
        again = await find_image(core_client, alias=remote_alias, local_alias=local_alias, sources=[source],
                                 copy_local=True, connect=recording)
        assert again.local and again.fingerprint == found.fingerprint
        assert recording.contacted == []
    finally:
        await _drop_alias(core_client, local_alias, image_too=True)


async def test_s16_series_alias_hit_never_contacts_a_stopped_remote(core_client: Client,
                                                                     lxd_daemon: DaemonInfo) -> None:
    stopped = Throwaway(public_image=True)
    info = stopped.start()
    source = lxd_source("stopped", info)
    stopped.stop()
    arch = "amd64"
    template = unique("lgwimg") + "/{series}/{arch}"
    alias = template.format(series="xenial", arch=arch)
    await core_client.images.create_alias(alias, lxd_daemon.image_fingerprint)
    try:
        recording = Recording()
        found = await find_image(core_client, series="xenial", arch=arch, sources=[source], copy_local=True,
                                 alias_template=template, connect=recording)
        assert found.local and found.fingerprint == lxd_daemon.image_fingerprint and found.alias == alias
        assert recording.contacted == []
    finally:
        await _drop_alias(core_client, alias)


async def test_s18_sources_in_order_first_miss_second_hit_third_untouched(
        core_client: Client, lxd_daemon: DaemonInfo, image_server: DaemonInfo) -> None:
    # The main daemon's busybox is private: as a public image server it has no such alias.
    first = lxd_source("private-one", lxd_daemon)
    second = lxd_source("public-one", image_server)
    third = ServerSpec(host=f"https://127.0.0.1:{free_port()}", name="never", protocol="lxd")
    recording = Recording()
    found = await find_image(core_client, alias="busybox", local_alias=unique("lgwnone"),
                             sources=[first, second, third], connect=recording)
    assert not found.local and found.server == second
    assert found.fingerprint == image_server.image_fingerprint
    assert recording.contacted == ["private-one", "public-one"]


async def test_s19_copy_of_an_image_already_present_still_gets_the_local_alias(
        core_client: Client, image_server: DaemonInfo) -> None:
    # Both daemons hold the same busybox image: the copy finds it present and the alias must still appear.
    local_alias = unique("lgwimg") + "/busybox"
    try:
        found = await find_image(core_client, alias="busybox", local_alias=local_alias,
                                 sources=[lxd_source("public-one", image_server)], copy_local=True)
        assert found.local and found.server is None
        assert (await core_client.images.alias(local_alias)).target == image_server.image_fingerprint
    finally:
        await _drop_alias(core_client, local_alias)


async def test_s17_unknown_series_after_the_local_lookup(core_client: Client) -> None:
    with pytest.raises(SeriesError, match='series: "pldlinux"'):
        await find_image(core_client, series="pldlinux", arch="amd64", sources=[])


async def test_no_source_has_it_reports_the_connection_error(core_client: Client) -> None:
    dead = ServerSpec(host=f"https://127.0.0.1:{free_port()}", name="dead", protocol="lxd")
    with pytest.raises(LXDError, match="cannot reach LXD"):
        await find_image(core_client, alias=unique("nothing"), sources=[dead])


# -- what a burst of creates keeps: image descriptions, never which image an alias names -------------------------


@pytest.fixture
async def second_image(core_client: Client) -> AsyncIterator[str]:
    """A second local image (published from a busybox container): its fingerprint."""
    name = unique("pub")
    await core_client.instances.create(name, image="busybox")
    try:
        image = await core_client.images.publish(name)
        fingerprint = image.fingerprint  # type: ignore[union-attr]
    finally:
        await core_client.instances.delete(name)
    try:
        yield fingerprint
    finally:
        with contextlib.suppress(LXDError):
            await core_client.images.delete(fingerprint)


@contextlib.asynccontextmanager
async def settled_stream(client: Client) -> AsyncIterator[EventBus]:
    """The client's events stream, up long enough for what it carries to be trusted, held for the block."""
    bus = client.events.bus()
    with bus.hold():
        assert await bus.ensure_connected()
        await asyncio.sleep(bus.settle + 0.2)
        yield bus


def counting_image_reads(client: Client, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    reads: list[str] = []
    get = client.images.get

    async def counted(fingerprint: str, **kw: Any) -> Any:
        reads.append(fingerprint)
        return await get(fingerprint, **kw)

    monkeypatch.setattr(client.images, "get", counted)
    return reads


async def test_an_alias_moved_behind_the_gateways_back_is_seen_by_the_next_lookup(
        core_client: Client, lxd_daemon: DaemonInfo, second_image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    alias = unique("moved")
    first = lxd_daemon.image_fingerprint
    await core_client.images.create_alias(alias, first)
    try:
        async with settled_stream(core_client):
            reads = counting_image_reads(core_client, monkeypatch)
            assert (await find_image(core_client, alias=alias)).fingerprint == first
            assert (await find_image(core_client, alias=alias)).fingerprint == first
            assert reads == [first], "the image's description is read once"
            async with Client.unix(lxd_daemon.socket_path) as elsewhere:  # not through this client
                await elsewhere.images.update_alias(alias, second_image)
            found = await find_image(core_client, alias=alias)  # at once: no wait for LXD's event
            assert found.fingerprint == second_image and found.info is not None
            assert found.info["fingerprint"] == second_image
    finally:
        await _drop_alias(core_client, alias)


async def test_an_image_event_drops_the_kept_description(
        core_client: Client, lxd_daemon: DaemonInfo, second_image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    alias = unique("described")
    await core_client.images.create_alias(alias, second_image)
    try:
        async with settled_stream(core_client) as bus:
            reads = counting_image_reads(core_client, monkeypatch)
            await find_image(core_client, alias=alias)
            kept = local_images(core_client)
            assert kept is not None and kept[1].get(bus, second_image) is not None
            async with Client.unix(lxd_daemon.socket_path) as elsewhere:
                await elsewhere.images.patch(second_image, {"properties": {"description": "changed"}})
            async with asyncio.timeout(5):  # LXD's `image-updated` event
                while kept[1].get(bus, second_image) is not None:
                    await asyncio.sleep(0.01)
            found = await find_image(core_client, alias=alias)
            assert reads == [second_image, second_image]
            assert found.info is not None and found.info["properties"]["description"] == "changed"
    finally:
        await _drop_alias(core_client, alias)


async def test_nothing_is_kept_without_a_settled_stream(lxd_daemon: DaemonInfo,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    async with Client.unix(lxd_daemon.socket_path) as fresh:
        reads = counting_image_reads(fresh, monkeypatch)
        assert fresh.events.bus().settled_connection() is None  # no stream yet
        for _ in range(2):
            assert (await find_image(fresh, alias="busybox")).fingerprint == lxd_daemon.image_fingerprint
        assert len(reads) == 2
