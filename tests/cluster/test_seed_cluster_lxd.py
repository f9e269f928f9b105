"""The seed's cluster scenarios (juju-container-lxd-behaviour.md, scenarios 5, 7 and 44), on the real 3-member
cluster rather than the fake: a cluster member's name and facts, a client bound to a member (and a member that is
not one, its error passed on as LXD words it), and a profile without NIC refused on a cluster instead of given a
bridge."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from app.lxd import Client
from app.lxd.errors import LXDError
from app.networks.decisions import NoNicError
from app.networks.service import verify_network_device
from tests.cluster.conftest import MEMBERS
from tests.containers.support import unique


async def test_s5_a_members_name_and_facts(cluster_client: httpx.AsyncClient, m1: Client) -> None:
    r = await cluster_client.get("/v1/server")
    assert r.status_code == 200, r.text
    server = r.json()
    assert server["clustered"] is True and server["name"] == "m1"  # the member the gateway talks to
    facts = await m1.server_info()
    assert facts.clustered and facts.name_or_none == "m1"


async def test_s7_a_client_bound_to_a_member_and_one_that_is_not(m1: Client) -> None:
    for member in MEMBERS:
        deadline = time.monotonic() + 60
        while True:
            try:
                facts = await m1.with_target(member).server_info()
                break
            except LXDError as exc:  # a member restarted by an earlier test: LXD reconnects its members' events
                assert "Missing event connection" in exc.error and time.monotonic() < deadline, exc.error
                await asyncio.sleep(0.5)
        assert facts.clustered and facts.environment.server_name == member  # each member answers for itself
    with pytest.raises(LXDError) as err:
        await m1.with_target("not-a-member").server_info()
    assert "not-a-member" in err.value.error or "not found" in err.value.error.lower(), err.value.error


async def test_s44_a_profile_without_nic_is_refused_on_a_cluster(cluster_client: httpx.AsyncClient,
                                                                  m1: Client) -> None:
    """On a standalone server the gateway would create a bridge and give the profile a NIC; on a cluster it refuses,
    naming the profile, and changes nothing."""
    name = unique("tnn")
    await m1.profiles.create(name, devices={})
    try:
        with pytest.raises(NoNicError, match=rf'^profile "{name}" does not have any devices configured with type '
                                             r'"nic"$'):
            await verify_network_device(m1, name)
        r = await cluster_client.post(f"/v1/profiles/{name}/verify-network")
        assert r.status_code >= 400 and r.headers["content-type"] == "application/problem+json", r.text
        assert 'does not have any devices configured with type "nic"' in r.json()["detail"], r.text
        assert (await m1.profiles.get(name)).devices == {}  # nothing was added
    finally:
        await m1.profiles.delete(name)
