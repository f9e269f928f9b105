"""Files in a running container, over every transport."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from app.lxd import Client, NotFound

pytestmark = pytest.mark.backends()  # the client's calls run on LXD and on Incus (X-Incus-* headers)


async def test_put_get_stat_modes(client: Client, running: str) -> None:
    await client.files.put(running, "/tmp/f1", b"hello", mode=0o640, uid=12, gid=34)
    info = await client.files.stat(running, "/tmp/f1")
    assert (info.type, info.mode, info.uid, info.gid, info.size) == ("file", "0640", 12, 34, 5)
    await client.files.put(running, "/tmp/f1", b" world", append=True)
    assert await client.files.read(running, "/tmp/f1") == b"hello world"
    await client.files.put(running, "/tmp/f2", b"x", mode="755")
    assert (await client.files.stat(running, "/tmp/f2")).mode == "0755"
    ls = await client.exec.run(running, ["stat", "-c", "%a %u %g", "/tmp/f1"])
    assert ls.stdout_text.split() == ["640", "12", "34"]


async def test_streamed_put_and_get(client: Client, running: str) -> None:
    blob = os.urandom(3 * 1024 * 1024 + 17)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(blob), 65536):
            yield blob[i:i + 65536]

    await client.files.put(running, "/tmp/stream.bin", chunks())
    got = bytearray()
    async with client.files.open(running, "/tmp/stream.bin") as f:
        assert f.info.type == "file"
        async for chunk in f.iter_bytes():
            got += chunk
    assert bytes(got) == blob


async def test_directories_symlinks_delete(client: Client, running: str) -> None:
    await client.files.mkdir(running, "/tmp/d1", mode=0o700)
    await client.files.put(running, "/tmp/d1/a", b"1")
    await client.files.symlink(running, "/tmp/d1/link", "/tmp/d1/a")
    assert sorted(await client.files.listdir(running, "/tmp/d1")) == ["a", "link"]
    assert (await client.files.stat(running, "/tmp/d1")).type == "directory"
    assert (await client.files.stat(running, "/tmp/d1/link")).type == "symlink"
    await client.files.delete(running, "/tmp/d1/link")
    await client.files.delete(running, "/tmp/d1/a")
    assert await client.files.listdir(running, "/tmp/d1") == []
    with pytest.raises(NotFound):
        await client.files.read(running, "/tmp/d1/a")
