"""The model of a standalone LXD never reads cluster members (the remote's facts say it is no cluster)."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from app.mirror import remote as remote_mod
from tests.containers.support import counting


async def test_the_model_of_a_standalone_remote_never_polls_cluster_members(app: FastAPI) -> None:
    rm = app.state.mirror.remotes["local"]
    async with counting(app.state.remotes.get("local")) as log:
        await asyncio.sleep(remote_mod.MEMBER_POLL * 1.5)
    assert rm.synced and rm.clustered is False, app.state.mirror.stats()
    assert not [c for c in log.calls if c[1].startswith("/1.0/cluster")], log.calls
    assert app.state.mirror.stats()["local"]["member_polls"] == 0
