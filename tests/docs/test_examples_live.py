"""Every shell example of README.md and docs/*.md runs as written against a real gateway process (`python -m app`,
as `make run` starts it, authentication on) in front of a throwaway private LXD.

Each page's ```sh blocks run in order, one `bash -euo pipefail` each, in a working directory of the page's own
(with `.venv` linked in, as in a checkout). The environment holds what the pages say a reader has: `GW`, `TOKEN`
(an admin token), `A` (its `Authorization` header), `J`, `LXDGW_URL`/`LXDGW_TOKEN` for the client, and for the
remotes example `REMOTE_URL`/`REMOTE_TOKEN` (the image server and a trust token it issued). The one change made to
a block is its address: `http://127.0.0.1:8080` becomes the test gateway's. A block that cannot run here carries
`<!-- not run: <reason> -->` just above it; every other block must exit 0, and leave no container behind."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.locallxd.daemon import DaemonInfo, LocalDaemon, image_tarball
from app.lxd.client import Client
from tests.docs.examples import ROOT, Block, not_run_marks, pages, sh_blocks
from tests.support.gateway import running_gateway

MAKE_RUN_URL = "http://127.0.0.1:8080"
UNRUNNABLE = re.compile(r"\b(make (run|test)|docker compose|kubectl|websocat)\b")
"""What a skipped block may stand for: serving until stopped, the whole suite, other machinery."""


def all_blocks() -> list[Block]:
    return [b for page in pages() for b in sh_blocks(page)]


def test_every_page_has_examples_and_every_skip_says_why() -> None:
    blocks = all_blocks()
    assert len([b for b in blocks if b.not_run is None]) >= 15
    assert {"README.md", "docs/api.md", "docs/resources.md"} <= set(pages_with_examples())
    skipped = [b for b in blocks if b.not_run is not None]
    print("\nnot run:\n" + "\n".join(f"  {b.where}: {b.not_run}" for b in skipped))
    for b in skipped:
        assert b.not_run, f"{b.where}: a `not run` mark without a reason"
        assert UNRUNNABLE.search(b.script), f"{b.where}: skipped, but runs nothing that a test cannot: {b.script}"
    for b in blocks:
        if b.not_run is None:
            assert not UNRUNNABLE.search(b.script), f"{b.where} needs a `<!-- not run: <reason> -->` mark"
    # a mark that is malformed or stands above no sh block would hide nothing, silently
    marked = {(b.page, b.line) for b in skipped}
    for page in pages():
        for line, text in not_run_marks(page):
            assert any((page, n) in marked for n in range(line + 1, line + 3)), f"{page}:{line}: {text} marks no block"


def test_examples_are_sh_blocks() -> None:
    """Shell examples are fenced as `sh`, so that none escapes the run."""
    for page in pages():
        fences = re.findall(r"^\s*```(bash|shell|console|zsh)\s*$", page.read_text(), re.M)
        assert fences == [], f"{page}: fence the shell examples as ```sh"


@pytest.fixture(scope="module")
def own_daemon() -> Iterator[DaemonInfo]:
    daemon = LocalDaemon()
    try:
        daemon.start()
        yield daemon.prepare(image_tarball=image_tarball())
    finally:
        daemon.stop()


@dataclass
class Gateway:
    base: str
    token: str
    data: Path


@pytest.fixture(scope="module")
def gateway(own_daemon: DaemonInfo, image_server: DaemonInfo, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp("examples-gw")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LXDGW_")}
    made = subprocess.run([sys.executable, "-m", "app", "tokens", "create", "examples", "--scope", "admin"],
                          cwd=ROOT, env={**env, "LXDGW_DATA_DIR": str(data)}, capture_output=True, text=True,
                          check=True)
    sources = json.dumps([{"name": "mirror", "url": image_server.https_url, "protocol": "lxd",
                           "certificate": image_server.server_cert}])
    with running_gateway(own_daemon.socket_path, data, auth=True, ready_path="/readyz",
                         LXDGW_IMAGE_SOURCES=sources) as gw:
        yield Gateway(gw.base, made.stdout.strip(), data)


async def _trust_token(image_server: DaemonInfo) -> str:
    async with Client.unix(image_server.socket_path) as lxd:
        return (await lxd.certificates.create_token("lgw-examples-gateway")).encode()


async def _trusted(image_server: DaemonInfo) -> set[str]:
    async with Client.unix(image_server.socket_path) as lxd:
        return {c.fingerprint for c in await lxd.certificates.list()}


async def _forget(image_server: DaemonInfo, before: set[str]) -> None:
    """Remove what adding the image server as a remote left on it: the gateway's certificate, unused tokens."""
    async with Client.unix(image_server.socket_path) as lxd:
        for cert in await lxd.certificates.list():
            if cert.fingerprint not in before:
                await lxd.certificates.delete(cert.fingerprint)
        for tok in await lxd.certificates.tokens():
            if tok.client_name.startswith("lgw-"):
                await lxd.certificates.revoke_token(tok)


def pages_with_examples() -> list[str]:
    return [p.relative_to(ROOT).as_posix() for p in pages() if any(b.not_run is None for b in sh_blocks(p))]


@pytest.mark.parametrize("page", pages_with_examples())
def test_page_examples_run_as_written(page: str, gateway: Gateway, image_server: DaemonInfo,
                                      tmp_path: Path) -> None:
    blocks = [b for b in sh_blocks(ROOT / page) if b.not_run is None]
    before = asyncio.run(_trusted(image_server))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LXDGW_")}
    env.update({
        "GW": gateway.base, "TOKEN": gateway.token, "A": f"Authorization: Bearer {gateway.token}",
        "J": "Content-Type: application/json", "LXDGW_URL": gateway.base, "LXDGW_TOKEN": gateway.token,
        "LXDGW_DATA_DIR": str(gateway.data),  # where `make run`'s gateway keeps its tokens: .data
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "REMOTE_URL": image_server.https_url, "REMOTE_TOKEN": asyncio.run(_trust_token(image_server)),
    })
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    headers = {"Authorization": f"Bearer {gateway.token}"}
    left: list[str] = []
    try:
        for block in blocks:
            script = block.script.replace(MAKE_RUN_URL, gateway.base)
            r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, cwd=tmp_path,
                               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, (f"{block.where} exited {r.returncode}:\n{block.script}\n--- stdout\n"
                                       f"{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}")
        left = [c["name"] for c in httpx.get(f"{gateway.base}/v1/containers", headers=headers,
                                             timeout=30).json()["items"]]
    finally:
        asyncio.run(_forget(image_server, before))
        for c in httpx.get(f"{gateway.base}/v1/containers", headers=headers, timeout=30).json()["items"]:
            httpx.delete(f"{gateway.base}/v1/containers/{c['name']}?wait=60", headers=headers, timeout=90)
    assert left == [], f"{page}'s examples left containers behind"
