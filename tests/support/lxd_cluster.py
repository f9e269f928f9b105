"""The test session's private 3-member LXD cluster (`lxd_cluster`), and the gateway in front of it.

The cluster starts once per session, when the first test asks for it, and is removed at the end (instances,
daemons, mounts, directories). When it cannot start, the tests that need it fail: they never skip. A test that
kills a member brings it back itself; `cluster` (per test) restarts any member still dead before the next test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.locallxd.cluster import ClusterInfo, LocalCluster
from app.locallxd.daemon import HarnessError, ensure_installed, image_tarball
from app.main import create_app
from app.settings import RemoteSettings, Settings
from tests.support.app import model_in_sync

CLUSTER_REMOTE = "cluster"


@pytest.fixture(scope="session")
def lxd_cluster() -> Iterator[LocalCluster]:
    try:
        ensure_installed()
        cluster = LocalCluster()
    except (HarnessError, OSError) as exc:
        pytest.fail(f"the private LXD cluster could not be started: {exc}", pytrace=False)
    try:
        cluster.start(image_tarball=image_tarball())
    except Exception as exc:  # whatever failed, the members that did start are removed
        cluster.stop()
        pytest.fail(f"the private LXD cluster could not be started: {exc!r}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster(lxd_cluster: LocalCluster) -> LocalCluster:
    """The session cluster with every member up."""
    lxd_cluster.revive()
    return lxd_cluster


def cluster_remote(info: ClusterInfo, name: str = CLUSTER_REMOTE, member: str = "m1", **kw: object) -> RemoteSettings:
    """The cluster as a gateway remote: HTTPS to one member with the trusted client certificate, the cluster
    certificate pinned."""
    return RemoteSettings(name=name, url=info.member(member).url, client_cert=Path(info.client_cert),
                          client_key=Path(info.client_key), server_cert=Path(info.server_cert), **kw)  # type: ignore[arg-type]


def cluster_settings(tmp_path: Path, info: ClusterInfo, **overrides: object) -> Settings:
    values: dict[str, object] = {"remotes": [cluster_remote(info, default=True)], "data_dir": tmp_path / "data",
                                 "auth_enabled": False}
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]


@pytest.fixture
async def cluster_app(tmp_path: Path, cluster: LocalCluster) -> AsyncIterator[FastAPI]:
    assert cluster.info is not None
    application = create_app(cluster_settings(tmp_path, cluster.info))
    async with LifespanManager(application):
        await model_in_sync(application)
        yield application


@pytest.fixture
async def cluster_client(cluster_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=cluster_app), base_url="http://gw",
                                 timeout=60) as c:
        yield c
