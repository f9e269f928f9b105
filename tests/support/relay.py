"""A slow link for tests: a TCP relay on loopback that forwards a server's bytes at a fixed rate.

TLS passes through untouched, so a client still sees (and pins) the real server's certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


@contextlib.asynccontextmanager
async def throttled_proxy(port: int, bytes_per_s: int) -> AsyncIterator[int]:
    """A relay to 127.0.0.1:`port` that sends the server's bytes at `bytes_per_s`; yields the relay's port."""
    tasks: set[asyncio.Task[None]] = set()

    async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, rate: int | None) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await r.read(16384):
                w.write(data)
                await w.drain()
                if rate:
                    await asyncio.sleep(len(data) / rate)
        w.close()

    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sr, sw = await asyncio.open_connection("127.0.0.1", port)
        for t in (pipe(cr, sw, None), pipe(sr, cw, bytes_per_s)):
            task = asyncio.ensure_future(t)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
