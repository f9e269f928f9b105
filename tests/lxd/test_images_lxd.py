"""Images against the real daemons: aliases, streamed uploads (unified and split), export, copy from the image
server (progress, alias repair, cancel while downloading), publish, delete."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import tarfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.locallxd.daemon import DaemonInfo, image_tarball
from app.locallxd.image import build_busybox_image
from app.lxd import Client, Conflict, LXDError, NotFound, OperationCancelled, Progress
from app.lxd.images import Image
from app.lxd.operations import Operation
from tests.support.cleanup import remove_instance, unique
from tests.support.relay import throttled_proxy


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture(scope="session")
def fresh_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A unified busybox image with a fingerprint no daemon has yet."""
    return build_busybox_image(tmp_path_factory.mktemp("img") / "fresh.tar.gz", description=unique("fresh"))


@pytest.fixture(scope="session")
async def padded_remote(remote: Client) -> AsyncIterator[Image]:
    """A ~40 MB public image on the image server under a unique alias, removed afterwards."""
    path = await asyncio.to_thread(image_tarball, None, 40)
    img = await remote.images.upload(path, aliases=[unique("padded")], public=True)
    assert isinstance(img, Image)
    try:
        yield img
    finally:
        with contextlib.suppress(LXDError):
            await remote.images.delete(img.fingerprint)


async def test_list_get_by_prefix_and_aliases(lxd: Client, lxd_daemon: DaemonInfo) -> None:
    fp = lxd_daemon.image_fingerprint
    assert fp in [i.fingerprint for i in await lxd.images.list()]
    img = await lxd.images.get(fp[:12])
    assert img.fingerprint == fp and "busybox" in img.alias_names and img.etag
    name = f"{unique('dir')}/with slash/and space"
    await lxd.images.create_alias(name, fp, description="nested")
    try:
        alias = await lxd.images.alias(name)
        assert (alias.name, alias.target, alias.description) == (name, fp, "nested")
        assert name in [a.name for a in await lxd.images.aliases()]
        assert (await lxd.images.get_by_alias(name)).fingerprint == fp
        with pytest.raises(Conflict):
            await lxd.images.create_alias(name, fp)
        await lxd.images.rename_alias(name, name + "2")
        name += "2"
        assert (await lxd.images.alias(name)).target == fp
    finally:
        await lxd.images.delete_alias(name)
    with pytest.raises(NotFound):
        await lxd.images.alias(name)


async def test_upload_unified_from_disk_export_and_delete(lxd: Client, fresh_image: Path,
                                                          tmp_path: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    alias = unique("up/unified")
    img = await lxd.images.upload(fresh_image, aliases=[alias], properties={"os": "busybox", "k": "a b"},
                                  on_progress=lambda sent, total: seen.append((sent, total)))
    assert isinstance(img, Image)
    size = fresh_image.stat().st_size
    try:
        assert img.fingerprint == sha256_file(fresh_image)
        assert alias in img.alias_names and img.properties["k"] == "a b"
        assert seen and seen[-1] == (size, size)
        # streamed export: the same bytes come back
        h = hashlib.sha256()
        async with lxd.images.export(img.fingerprint) as e:
            assert not e.multipart
            async for chunk in e.iter_bytes():
                h.update(chunk)
        assert h.hexdigest() == img.fingerprint
        files = await lxd.images.export_to(img.fingerprint, tmp_path / "out")
        assert len(files) == 1 and sha256_file(files[0]) == img.fingerprint
        img2 = await lxd.images.get(img.fingerprint)
        await lxd.images.patch(img.fingerprint, {"properties": {"os": "changed"}}, etag=img2.etag)
        assert (await lxd.images.get(img.fingerprint)).properties["os"] == "changed"  # merged
    finally:
        await lxd.images.delete(img.fingerprint)
    assert not await lxd.images.exists(img.fingerprint)
    with pytest.raises(NotFound):
        await lxd.images.alias(alias)


async def test_upload_from_async_iterator(lxd: Client, tmp_path: Path) -> None:
    path = build_busybox_image(tmp_path / "it.tar.gz", description=unique("iter"))
    data = path.read_bytes()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 100_000):
            yield data[i:i + 100_000]

    seen: list[int] = []
    img = await lxd.images.upload(chunks(), fingerprint=hashlib.sha256(data).hexdigest(),
                                  on_progress=lambda sent, total: seen.append(sent))
    assert isinstance(img, Image)
    try:
        assert img.fingerprint == hashlib.sha256(data).hexdigest() and seen[-1] == len(data)
    finally:
        await lxd.images.delete(img.fingerprint)


def _split(unified: Path, dest: Path) -> tuple[Path, Path]:
    """Turn a unified image into a metadata tarball and a rootfs tarball."""
    meta, root = dest / "meta.tar.gz", dest / "rootfs.tar.gz"
    with tarfile.open(unified) as src, tarfile.open(meta, "w:gz") as m, tarfile.open(root, "w:gz") as r:
        for member in src.getmembers():
            f = src.extractfile(member) if member.isfile() else None
            data = f.read() if f else None
            if member.name == "metadata.yaml":
                m.addfile(member, io.BytesIO(data or b""))
            elif member.name.startswith("rootfs/"):
                member.name = member.name[len("rootfs/"):]
                r.addfile(member, io.BytesIO(data) if data is not None else None)
    return meta, root


async def test_split_upload_launch_and_split_export(lxd: Client, tmp_path: Path) -> None:
    unified = build_busybox_image(tmp_path / "u.tar.gz", description=unique("split"))
    meta, root = _split(unified, tmp_path)
    seen: list[tuple[int, int | None]] = []
    img = await lxd.images.upload(meta, rootfs=root, on_progress=lambda s, t: seen.append((s, t)))
    assert isinstance(img, Image)
    name = unique("split")
    try:
        want = hashlib.sha256(meta.read_bytes() + root.read_bytes()).hexdigest()
        assert img.fingerprint == want
        total = meta.stat().st_size + root.stat().st_size
        assert seen[-1] == (total, total)
        await lxd.instances.create(name, fingerprint=img.fingerprint, start=True)
        assert (await lxd.instances.state(name)).status == "Running"
        files = await lxd.images.export_to(img.fingerprint, tmp_path / "out")
        assert [f.read_bytes() for f in files] == [meta.read_bytes(), root.read_bytes()]
    finally:
        await remove_instance(lxd, name)
        await lxd.images.delete(img.fingerprint)


async def test_copy_of_an_image_already_here_keeps_the_requested_alias(lxd: Client, image_server: DaemonInfo,
                                                                       lxd_daemon: DaemonInfo) -> None:
    alias = unique("copied/busybox")
    cert = Path(image_server.server_cert).read_text()  # self-signed: LXD must be told which cert to expect
    img = await lxd.images.copy(server=image_server.https_url, alias="busybox", certificate=cert, aliases=[alias])
    assert isinstance(img, Image)
    try:
        assert img.fingerprint == lxd_daemon.image_fingerprint  # LXD found it locally: no download
        assert (await lxd.images.alias(alias)).target == img.fingerprint
        assert "busybox" in img.alias_names and alias in img.alias_names
    finally:
        await lxd.images.delete_alias(alias)


async def test_copy_from_remote_with_certificate_and_progress(lxd: Client, image_server: DaemonInfo,
                                                              padded_remote: Image) -> None:
    cert = Path(image_server.server_cert).read_text()
    alias = unique("copied/padded")
    seen: list[Progress] = []
    img = await lxd.images.copy(server=image_server.https_url, fingerprint=padded_remote.fingerprint[:16],
                                certificate=cert, aliases=[alias], on_progress=seen.append)
    assert isinstance(img, Image)
    try:
        assert img.fingerprint == padded_remote.fingerprint and alias in img.alias_names
        assert any(p.stage == "download" or "download" in p.text for p in seen), seen
        assert img.update_source is not None and img.update_source.protocol == "lxd"
    finally:
        await lxd.images.delete(img.fingerprint)


async def test_copy_is_cancelled_while_downloading(lxd: Client, image_server: DaemonInfo,
                                                   padded_remote: Image) -> None:
    async with throttled_proxy(image_server.https_port, 8 * 1024 * 1024) as port:  # ~5 s for the image
        op = await lxd.images.copy(server=f"https://127.0.0.1:{port}", alias=padded_remote.alias_names[0],
                                   wait=False, certificate=Path(image_server.server_cert).read_text())
        assert isinstance(op, Operation)
        deadline = time.monotonic() + 30
        progress = op.progress()
        async for p in progress:
            if op.state.may_cancel and p.text:
                break
            assert time.monotonic() < deadline
        await progress.aclose()  # type: ignore[attr-defined]
        await op.cancel()
        with pytest.raises(OperationCancelled):
            await op.wait(30)
    assert not await lxd.images.exists(padded_remote.fingerprint)


async def test_publish_instance_and_snapshot(lxd: Client) -> None:
    name = unique("pub")
    await lxd.instances.create(name, image="busybox")
    made: list[str] = []
    try:
        img = await lxd.images.publish(name, aliases=[unique("pub/inst")], properties={"from": "instance"})
        assert isinstance(img, Image)
        made.append(img.fingerprint)
        assert img.properties.get("from") == "instance" and img.alias_names
        await lxd.instances.create_snapshot(name, "s1")
        snap = await lxd.images.publish(name, snapshot="s1", compression_algorithm="none")
        assert isinstance(snap, Image)
        made.append(snap.fingerprint)
        assert snap.size > 0
    finally:
        await remove_instance(lxd, name)
        for fp in made:
            await lxd.images.delete(fp)
