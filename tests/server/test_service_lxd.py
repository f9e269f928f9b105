"""§16 server scenarios against real daemons: facts, config merged under the ETag, the HTTPS listener and proxy
settings on a throwaway daemon (never on the shared one), projects."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from app.locallxd.daemon import free_port
from app.lxd import Client, LXDError
from app.server.proxies_service import configure_proxies
from app.server.service import enable_https_listener, update_server_config
from tests.support.lxd_clients import unique


async def test_s5_s6_server_facts(core_client: Client) -> None:
    facts = await core_client.server_info()
    assert facts.name_or_none and not facts.clustered and facts.version
    assert facts.host_arch and facts.host_arch in facts.supported_arches
    assert facts.storage_supported and facts.network_api
    assert facts.cluster_supported == ("clustering" in facts.extensions)


async def test_s9_update_server_config_merges(throwaway_client: Client) -> None:
    before = (await throwaway_client.config.get()).config
    await update_server_config(throwaway_client, {"images.remote_cache_expiry": "5"})
    after = (await throwaway_client.config.get()).config
    assert after["images.remote_cache_expiry"] == "5"
    assert {k: v for k, v in after.items() if k != "images.remote_cache_expiry"} == \
        {k: v for k, v in before.items() if k != "images.remote_cache_expiry"}


async def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError):
        _, w = await asyncio.open_connection("127.0.0.1", port)
        w.close()
        return True
    return False


async def test_s14_enable_https_listener_on_all_addresses(throwaway_client: Client) -> None:
    port = free_port()
    address = await enable_https_listener(throwaway_client, port=port)
    assert address in (f"[::]:{port}", f"0.0.0.0:{port}")
    assert (await throwaway_client.config.get()).config["core.https_address"] == address
    deadline = asyncio.get_running_loop().time() + 10
    while not await _port_open(port):
        assert asyncio.get_running_loop().time() < deadline, "the listener did not open"
        await asyncio.sleep(0.1)
    explicit = f"127.0.0.1:{free_port()}"
    assert await enable_https_listener(throwaway_client, explicit) == explicit


async def test_s14_refused_address_is_an_error(throwaway_client: Client) -> None:
    with pytest.raises(LXDError):
        await enable_https_listener(throwaway_client, "not an address:xx")


async def test_configure_proxies_sets_the_three_keys(throwaway_client: Client) -> None:
    env = {"http_proxy": "http://proxy.example:3128", "HTTPS_PROXY": "http://proxy.example:3129",
           "no_proxy": "localhost,127.0.0.1"}
    got = await configure_proxies(throwaway_client, env=env)
    assert got == {"core.proxy_http": "http://proxy.example:3128", "core.proxy_https": "http://proxy.example:3129",
                   "core.proxy_ignore_hosts": "localhost,127.0.0.1"}
    cfg = (await throwaway_client.config.get()).config
    assert {k: cfg[k] for k in got} == got
    cleared = await configure_proxies(throwaway_client, http="", https="", no_proxy="", env={})
    cfg = (await throwaway_client.config.get()).config
    assert cleared is not None and all(not cfg.get(k) for k in cleared)


async def test_configure_proxies_does_nothing_when_lxd_is_unreachable(tmp_path: object) -> None:
    async with Client.unix(f"{tmp_path}/no-such.socket") as c:
        assert await configure_proxies(c, http="http://p:1") is None


async def test_s8_with_project_scopes_later_calls(core_client: Client) -> None:
    project, profile = unique("lgwproj"), unique("lgwp")
    await core_client.projects.create(project)
    try:
        scoped = core_client.with_project(project)
        await scoped.profiles.create(profile)
        assert profile in await scoped.profiles.names()
        assert profile not in await core_client.profiles.names()
        await scoped.profiles.delete(profile)
    finally:
        await core_client.projects.delete(project)
