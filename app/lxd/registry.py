"""The set of LXD/Incus endpoints the gateway talks to, each with its open client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.lxd.client import Client


@dataclass(frozen=True)
class RemoteSpec:
    """How to reach one remote (built from settings, or added at run time)."""

    name: str
    url: str
    client_cert: str | None = None
    client_key: str | None = None
    server_cert: str | None = None
    server_fingerprint: str | None = None
    insecure_skip_verify: bool = False
    proxy: str | None = None
    project: str = "default"
    default: bool = False
    urls: tuple[str, ...] = ()
    """More member URLs of a clustered remote, moved to when the current one cannot be reached."""

    @property
    def protocol(self) -> str:
        return "unix" if self.url.startswith("unix://") else "https"


def open_client(spec: RemoteSpec, *, timeout: float = 30.0) -> Client:
    if spec.url.startswith("unix://"):
        return Client.unix(spec.url[len("unix://"):], project=spec.project, timeout=timeout)
    assert spec.client_cert and spec.client_key
    return Client.https(spec.url, client_cert=spec.client_cert, client_key=spec.client_key,
                        server_cert=spec.server_cert, server_fingerprint=spec.server_fingerprint,
                        insecure=spec.insecure_skip_verify, proxy=spec.proxy, project=spec.project,
                        timeout=timeout, fallback_urls=tuple(spec.urls))


CHECK_TTL = 1.0


class UnknownRemote(KeyError):
    """No remote of that name is configured."""


class RemoteRegistry:
    """Named clients; `get(None)` is the default remote."""

    def __init__(self, specs: list[RemoteSpec], *, timeout: float = 30.0) -> None:
        self._timeout = timeout
        self._specs: dict[str, RemoteSpec] = {}
        self._clients: dict[str, Client] = {}
        self._checked: dict[str, tuple[float, str | None]] = {}
        self._checking: dict[str, asyncio.Future[str | None]] = {}
        self.on_client: Callable[[str, Client], None] | None = None
        """Called with each client opened later (remotes added at run time), e.g. to observe it."""
        for spec in specs:
            self.add(spec)

    def add(self, spec: RemoteSpec) -> Client:
        if spec.name in self._specs:
            raise ValueError(f"remote {spec.name!r} exists")
        self._specs[spec.name] = spec
        client = self._clients[spec.name] = open_client(spec, timeout=self._timeout)
        if self.on_client is not None:
            self.on_client(spec.name, client)
        return client

    async def remove(self, name: str) -> None:
        self._specs.pop(name, None)
        client = self._clients.pop(name, None)
        if client is not None:
            await client.aclose()

    @property
    def default_name(self) -> str:
        for spec in self._specs.values():
            if spec.default:
                return spec.name
        return next(iter(self._specs))

    def specs(self) -> list[RemoteSpec]:
        return list(self._specs.values())

    def spec(self, name: str | None = None) -> RemoteSpec:
        name = name or self.default_name
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownRemote(name) from None

    def get(self, name: str | None = None) -> Client:
        return self._clients[self.spec(name).name]

    def backend_title(self, name: str | None = None) -> str:
        """"Incus" or "LXD": what the remote said it is when last asked; before that, what its address suggests
        (an Incus socket or directory), else "LXD"."""
        spec = self.spec(name)
        info = self._clients[spec.name].server.cached
        if info is not None:
            return "Incus" if info.environment.server == "incus" else "LXD"
        return "Incus" if "incus" in spec.url.lower() else "LXD"

    def last_check(self, name: str) -> bool | None:
        """Whether the remote answered its last check: True, False, or None when it was never checked."""
        cached = self._checked.get(name)
        return None if cached is None else cached[1] is None

    async def check(self, name: str, timeout: float = 3.0) -> str | None:
        """None when the remote answers `GET /1.0` within `timeout`, else the reason it does not.

        Concurrent checks of one remote share a single request, and an answer is reused for `CHECK_TTL` seconds,
        so a burst of probes costs LXD one call.
        """
        now = time.monotonic()
        cached = self._checked.get(name)
        if cached is not None and now - cached[0] < CHECK_TTL:
            return cached[1]
        pending = self._checking.get(name)
        if pending is None:
            pending = self._checking[name] = asyncio.ensure_future(self._check(name, timeout))
            pending.add_done_callback(lambda _: self._checking.pop(name, None))
        return await asyncio.shield(pending)

    async def _check(self, name: str, timeout: float) -> str | None:
        try:
            await asyncio.wait_for(self.get(name).server.info(refresh=True), timeout)  # its facts, fresh
            result = None
        except TimeoutError:
            result = f"no answer within {timeout:g}s"
        except Exception as exc:
            result = str(exc) or type(exc).__name__
        self._checked[name] = (time.monotonic(), result)
        return result

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            await c.aclose()
