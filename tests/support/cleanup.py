"""What the integration tests share: unique names and removing what a test made on the private LXD."""

from __future__ import annotations

import contextlib
import uuid

from app.lxd import Client, LXDError


def unique(prefix: str = "t", length: int = 10) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:length]}"


async def remove_instance(client: Client, name: str) -> None:
    """Force-stop and delete an instance; a missing one is fine."""
    with contextlib.suppress(LXDError):
        await client.instances.set_state(name, "stop", force=True)
    with contextlib.suppress(LXDError):
        await client.instances.delete(name)
