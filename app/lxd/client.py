"""Seed of the async LXD client (to be grown into the full client): transport and server facts."""

from __future__ import annotations

import ssl
from types import TracebackType
from typing import Any

import httpx


class LXDUnavailable(Exception):
    """LXD cannot be reached."""


class Client:
    def __init__(self, base_url: str, transport: httpx.AsyncBaseTransport, *, project: str = "default",
                 timeout: float = 30.0) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, transport=transport, timeout=timeout)
        self.project = project
        self._server: dict[str, Any] | None = None

    @classmethod
    def unix(cls, path: str, **kw: Any) -> Client:
        return cls("http://lxd", httpx.AsyncHTTPTransport(uds=path), **kw)

    @classmethod
    def https(cls, url: str, *, client_cert: str, client_key: str, server_cert: str | None = None,
              server_fingerprint: str | None = None, insecure: bool = False, proxy: str | None = None,
              **kw: Any) -> Client:
        ctx = ssl.create_default_context(cafile=server_cert) if server_cert else ssl.create_default_context()
        ctx.check_hostname = False
        if insecure or server_fingerprint:
            ctx.verify_mode = ssl.CERT_NONE
        ctx.load_cert_chain(client_cert, client_key)
        return cls(url, httpx.AsyncHTTPTransport(verify=ctx, proxy=proxy), **kw)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def server_info(self, refresh: bool = False) -> dict[str, Any]:
        if self._server is None or refresh:
            try:
                r = await self._http.get("/1.0")
            except httpx.HTTPError as exc:
                raise LXDUnavailable(str(exc) or type(exc).__name__) from exc
            self._server = r.json()["metadata"]
        return self._server
