"""The README's curl examples for images, profiles, certificates, server, remotes, storage, networks and projects
run verbatim against a real gateway process (`python -m app`, as `make run` starts it) in front of a throwaway
private LXD; the remote example adds the second daemon with a real trust token."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.locallxd.daemon import DaemonInfo, LocalDaemon, image_tarball
from app.lxd.client import Client
from tests.support.gateway import running_gateway

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Images, profiles, certificates, server, remotes, storage, networks, projects"


def readme_blocks() -> list[tuple[str, str]]:
    """(heading, script) of every `sh` block of the section, in order."""
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    section = text[start:end]
    blocks = []
    heading = ""
    for m in re.finditer(r"^### ([^\n]+)$|^```sh\n(.*?)^```", section, re.M | re.S):
        if m.group(1):
            heading = m.group(1)
        else:
            blocks.append((heading, m.group(2)))
    return blocks


def test_the_section_has_a_block_per_resource() -> None:
    assert {h for h, _ in readme_blocks()} == {"Images", "Profiles", "Certificates", "Server", "Remotes", "Storage",
                                               "Networks", "Projects"}


@pytest.fixture(scope="module")
def own_daemon() -> Iterator[DaemonInfo]:
    daemon = LocalDaemon()
    try:
        daemon.start()
        yield daemon.prepare(image_tarball=image_tarball())
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def gateway(own_daemon: DaemonInfo, image_server: DaemonInfo, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[str]:
    data = tmp_path_factory.mktemp("readme-gw")
    sources = json.dumps([{"name": "mirror", "url": image_server.https_url, "protocol": "lxd",
                           "certificate": image_server.server_cert}])
    with running_gateway(own_daemon.socket_path, data, ready_path="/readyz", LXDGW_IMAGE_SOURCES=sources) as gw:
        yield gw.base


async def _token(image_server: DaemonInfo) -> str:
    async with Client.unix(image_server.socket_path) as lxd:
        return (await lxd.certificates.create_token("lgw-readme-gateway")).encode()


async def _forget(image_server: DaemonInfo, before: set[str]) -> None:
    async with Client.unix(image_server.socket_path) as lxd:
        for cert in await lxd.certificates.list():
            if cert.fingerprint not in before:
                await lxd.certificates.delete(cert.fingerprint)
        for tok in await lxd.certificates.tokens():
            if tok.client_name.startswith("lgw-"):
                await lxd.certificates.revoke_token(tok)


async def _trusted(image_server: DaemonInfo) -> set[str]:
    async with Client.unix(image_server.socket_path) as lxd:
        return {c.fingerprint for c in await lxd.certificates.list()}


def test_readme_curl_examples_run_verbatim(gateway: str, image_server: DaemonInfo, tmp_path: Path) -> None:
    before = asyncio.run(_trusted(image_server))
    env = {**os.environ, "GW": gateway, "A": "Authorization: Bearer unused", "J": "Content-Type: application/json",
           "REMOTE_URL": image_server.https_url, "REMOTE_TOKEN": asyncio.run(_token(image_server))}
    try:
        for heading, script in readme_blocks():
            r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, cwd=tmp_path,
                               capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, f"README block under '{heading}' failed:\n{script}\n{r.stdout}\n{r.stderr}"
    finally:
        asyncio.run(_forget(image_server, before))
