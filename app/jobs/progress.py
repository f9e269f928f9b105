"""What the LXD-backed core services share: progress reporting, server facts, If-Match headers.

Every service function takes an `app.lxd.Client` (already bound to the project it acts in) and plain values;
none reads settings or HTTP objects. Progress is reported through an async callable with the job runner's
signature, `await progress(stage, percent, message)`, so a job can pass its own `ctx.progress`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from app.lxd.servers import ServerFacts

if TYPE_CHECKING:
    from app.lxd.client import Client

ProgressFn = Callable[[str | None, int | None, str | None], Awaitable[None]]
"""`await progress(stage, percent, message)`; percent is None when unknown."""

CancelCheck = Callable[[], object]
"""Called between steps: a truthy answer (or an exception it raises) stops the work and rolls it back."""

PROVISIONING = "allocating"


async def report(progress: ProgressFn | None, stage: str | None, percent: int | None, message: str | None) -> None:
    """Hand one progress update to `progress` when there is one."""
    if progress is not None:
        await progress(stage, percent, message)


def if_match(etag: str | None) -> dict[str, str] | None:
    """The If-Match header for an ETag; none for an empty one."""
    return {"If-Match": f'"{etag}"'} if etag else None


async def server_facts(client: Client, *, refresh: bool = False) -> ServerFacts:
    """Name, cluster state, certificate, host and supported architectures, version and API extensions."""
    info = await client.server_info(refresh=refresh)
    return ServerFacts.from_server_info(info.model_dump())


async def host_arch(client: Client) -> str:
    """The server's normalised kernel architecture (amd64, arm64, ...)."""
    return (await server_facts(client)).host_arch


async def storage_supported(client: Client) -> bool:
    return (await server_facts(client)).storage_supported


async def cluster_supported(client: Client) -> bool:
    return (await server_facts(client)).cluster_supported
