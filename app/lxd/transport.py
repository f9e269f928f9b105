"""HTTP and websocket transport to one LXD endpoint: a unix socket, or HTTPS with a client certificate.

Two connection pools per endpoint: short calls (with a read timeout) and long calls (`/wait`, file and image
streams: no read timeout), so long calls never starve short ones. A pool that stays full for `pool_timeout` raises
`LXDUnavailable`, never hangs. Nothing touches the network before the first request.

Server pinning over HTTPS: by its certificate (trusted as the only CA, hostname not checked), or by the sha256 of
its DER certificate (fetched once, compared, then trusted the same way). `insecure=True` skips verification and
must be asked for by name. Websockets reuse the same SSL context, so they present the same client identity.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import websockets
from websockets.asyncio.client import ClientConnection, connect, unix_connect

from app.lxd.errors import LXDError, LXDTimeout, LXDUnavailable, error_for

USER_AGENT = "lxd-gateway"
RETIRE_GRACE = 30.0
"""Seconds the connections of a member URL moved away from stay open for the calls still under way on them."""


def normalise_fingerprint(fp: str) -> str:
    return fp.replace(":", "").strip().lower()


class Transport:
    """Connection pools, TLS identity and websocket factory for one endpoint."""

    def __init__(self, base_url: str, *, uds: str | None = None, client_cert: str | None = None,
                 client_key: str | None = None, server_cert: str | None = None,
                 server_fingerprint: str | None = None, insecure: bool = False, proxy: str | None = None,
                 timeout: float = 30.0, connect_timeout: float = 10.0, pool_timeout: float = 10.0,
                 max_connections: int = 20, max_long_connections: int = 64,
                 http_transport: httpx.AsyncBaseTransport | None = None,
                 min_tls: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3, fallback_urls: tuple[str, ...] = ()) -> None:
        if server_fingerprint and len(normalise_fingerprint(server_fingerprint)) != 64:
            raise ValueError("server_fingerprint must be a sha256 (64 hex digits)")
        self.base_url = base_url.rstrip("/")
        self.urls = [self.base_url, *dict.fromkeys(u.rstrip("/") for u in fallback_urls
                                                   if u.rstrip("/") != self.base_url)]
        """The endpoint's URLs (several members of one cluster): `base_url` is the one in use."""
        self._retired: list[httpx.AsyncClient] = []  # the clients of URLs moved away from, closed after a grace
        self._closing: set[asyncio.Future[None]] = set()
        self.uds = uds
        self.client_cert, self.client_key = client_cert, client_key
        self.server_cert = server_cert
        self.server_fingerprint = normalise_fingerprint(server_fingerprint) if server_fingerprint else None
        self.insecure = insecure
        self.min_tls = min_tls
        """TLS 1.3 by default, as LXD and Incus require; 1.2 only for a server run with LXD_INSECURE_TLS."""
        self.proxy = proxy
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.pool_timeout = pool_timeout
        self._max = (max_connections, max_long_connections)
        self._mock = http_transport
        self._ssl: ssl.SSLContext | None = None
        self._short: httpx.AsyncClient | None = None
        self._long: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        self.observer: Callable[[str, float, str], None] | None = None
        """Called after each request with (method, seconds, outcome): `ok`, `4xx`, `5xx`, `unavailable` or
        `timeout`; a hook for metrics that keeps this module free of them."""

    @property
    def is_https(self) -> bool:
        return self.uds is None and self.base_url.startswith("https://")

    # ------------------------------------------------------------------------------------------ set-up

    def _base_context(self, *, verify: bool) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = self.min_tls
        if self.client_cert and self.client_key:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def _fetch_server_cert(self) -> bytes:
        """The DER certificate the server presents (unverified handshake, used only to compare a pin)."""
        ctx = self._base_context(verify=False)
        try:
            async with httpx.AsyncClient(base_url=self.base_url, verify=ctx, proxy=self.proxy, trust_env=False,
                                         timeout=httpx.Timeout(self.connect_timeout)) as c, \
                    c.stream("GET", "/1.0") as r:
                sslobj = r.extensions["network_stream"].get_extra_info("ssl_object")
                der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        except httpx.HTTPError as exc:
            raise LXDUnavailable(f"cannot fetch the server certificate: {exc or type(exc).__name__}",
                                 path=self.base_url) from exc
        if not der:
            raise LXDUnavailable("the server presented no certificate", path=self.base_url)
        return bytes(der)

    async def ssl_context(self) -> ssl.SSLContext | None:
        if not self.is_https:
            return None
        if self._ssl is None:
            if self.insecure:
                ctx = self._base_context(verify=False)
            elif self.server_fingerprint:
                der = await self._fetch_server_cert()
                got = hashlib.sha256(der).hexdigest()
                if got != self.server_fingerprint:
                    raise LXDUnavailable(f"server certificate fingerprint {got} does not match the pinned "
                                         f"{self.server_fingerprint}", path=self.base_url)
                ctx = self._base_context(verify=True)
                ctx.check_hostname = False
                ctx.load_verify_locations(cadata=ssl.DER_cert_to_PEM_cert(der))
            elif self.server_cert:
                ctx = self._base_context(verify=True)
                ctx.check_hostname = False
                ctx.load_verify_locations(cafile=self.server_cert)
            else:
                ctx = self._base_context(verify=True)
                ctx.load_default_certs()
            self._ssl = ctx
        return self._ssl

    def _make_client(self, *, long: bool, ctx: ssl.SSLContext | None) -> httpx.AsyncClient:
        max_conn = self._max[1] if long else self._max[0]
        limits = httpx.Limits(max_connections=max_conn, max_keepalive_connections=max_conn)
        read = None if long else self.timeout
        timeout = httpx.Timeout(self.timeout, connect=self.connect_timeout, read=read, pool=self.pool_timeout)
        if self._mock is not None:
            transport: httpx.AsyncBaseTransport = self._mock
        elif self.uds is not None:
            # A unix socket carries no TLS: a context that trusts no CA, rather than httpx's default, which reads
            # the whole CA bundle into each pool (about 1 MiB each).
            transport = httpx.AsyncHTTPTransport(uds=self.uds, limits=limits,
                                                 verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
        else:
            transport = httpx.AsyncHTTPTransport(verify=ctx if ctx is not None else True, limits=limits,
                                                 proxy=self.proxy, trust_env=False)
        return httpx.AsyncClient(base_url=self.base_url, transport=transport, timeout=timeout, trust_env=False,
                                 headers={"User-Agent": USER_AGENT})

    async def _clients(self) -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
        if self._closed:
            raise LXDUnavailable("the client is closed", path=self.base_url)
        if self._short is None or self._long is None:
            async with self._lock:
                if self._short is None or self._long is None:
                    ctx = await self.ssl_context()
                    self._short = self._make_client(long=False, ctx=ctx)
                    self._long = self._make_client(long=True, ctx=ctx)
        return self._short, self._long

    async def fail_over(self, failed: str) -> bool:
        """Move to the next of `urls` after `failed` could not be reached; False when there is no other. The
        clients of the old URL are closed with this transport (calls under way on them finish as they can)."""
        if len(self.urls) < 2:
            return False
        async with self._lock:
            if self.base_url == failed:
                self.base_url = self.urls[(self.urls.index(failed) + 1) % len(self.urls)]
                old = [c for c in (self._short, self._long) if c is not None]
                self._short = self._long = None
                self._retired += old
                if old:
                    asyncio.get_running_loop().call_later(RETIRE_GRACE, self._close_retired, old)
                self._ssl = None if self.server_fingerprint else self._ssl  # a pin by fingerprint is checked again
        return True

    def _close_retired(self, clients: list[httpx.AsyncClient]) -> None:
        for c in clients:
            if c in self._retired:
                self._retired.remove(c)
                task = asyncio.ensure_future(c.aclose())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    # ------------------------------------------------------------------------------------------ HTTP

    def _unavailable(self, exc: Exception, method: str, path: str) -> LXDUnavailable | LXDTimeout:
        """A transport failure: `LXDTimeout` when LXD took the request but answered too slowly,
        `LXDUnavailable` when it could not be reached at all (refused, TLS, pin, no connection in time)."""
        if isinstance(exc, httpx.PoolTimeout):
            msg = f"connection pool exhausted (no free connection within {self.pool_timeout:g}s)"
        elif isinstance(exc, (httpx.ReadTimeout, httpx.WriteTimeout)):
            return LXDTimeout(f"no answer in time ({type(exc).__name__})", method=method, path=path)
        elif isinstance(exc, httpx.TimeoutException):
            msg = f"no answer in time ({type(exc).__name__})"
        else:
            msg = f"cannot reach LXD at {self.uds or self.base_url}: {exc or type(exc).__name__}"
        return LXDUnavailable(msg, method=method, path=path)

    async def request(self, method: str, path: str, *, long: bool = False, params: Mapping[str, Any] | None = None,
                      json: Any = None, content: Any = None, headers: Mapping[str, str] | None = None,
                      timeout: float | None = None) -> httpx.Response:
        """Send one request and read the whole response. With several `urls`, a request that could not connect
        (it was never sent) is sent again to the next URL, each URL tried once."""
        kw: dict[str, Any] = {}
        if timeout is not None:
            kw["timeout"] = httpx.Timeout(timeout, connect=self.connect_timeout, pool=self.pool_timeout)
        start = time.perf_counter()
        tried: set[str] = set()
        while True:
            url = self.base_url
            try:
                short, lng = await self._clients()
                client = lng if long else short
                response = await client.request(method, path, params=params, json=json, content=content,
                                                headers=headers, **kw)
                break
            except (httpx.ConnectError, httpx.ConnectTimeout, LXDUnavailable) as exc:
                # never sent: not connected, or (pin by fingerprint) the certificate could not be fetched
                tried.add(url)
                if not self._closed and len(tried) < len(self.urls) and await self.fail_over(url):
                    continue
                if isinstance(exc, LXDUnavailable):
                    raise
                error = self._unavailable(exc, method, path)
                self._observe(method, start, "unavailable")
                raise error from exc
            except httpx.HTTPError as exc:
                error = self._unavailable(exc, method, path)
                self._observe(method, start, "timeout" if isinstance(error, LXDTimeout) else "unavailable")
                raise error from exc
        code = response.status_code
        self._observe(method, start, "ok" if code < 400 else f"{code // 100}xx")
        return response

    def _observe(self, method: str, start: float, outcome: str) -> None:
        if self.observer is not None:
            with contextlib.suppress(Exception):  # metrics must never break a call
                self.observer(method, time.perf_counter() - start, outcome)

    @asynccontextmanager
    async def stream(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, content: Any = None,
                     headers: Mapping[str, str] | None = None) -> AsyncIterator[httpx.Response]:
        """A streamed request on the long-call pool (no read timeout)."""
        _, lng = await self._clients()
        try:
            async with lng.stream(method, path, params=params, content=content, headers=headers) as r:
                yield r
        except httpx.HTTPError as exc:
            raise self._unavailable(exc, method, path) from exc

    # ------------------------------------------------------------------------------------------ websockets

    async def websocket(self, path: str, params: Mapping[str, str] | None = None, *,
                        open_timeout: float | None = None, keepalive: float | None = None) -> ClientConnection:
        """Open a websocket on `path` with the same identity as REST calls, and no Origin header. With `keepalive`,
        a ping goes out every `keepalive` seconds and the connection is closed when no pong comes within as long
        (a server that stopped answering, frozen or cut off, is noticed)."""
        query = f"?{urlencode(dict(params))}" if params else ""
        kw: dict[str, Any] = {"open_timeout": open_timeout or self.connect_timeout, "max_size": None,
                              "ping_interval": keepalive, "ping_timeout": keepalive,
                              "user_agent_header": USER_AGENT, "compression": None}
        tried: set[str] = set()
        while True:
            url = self.base_url
            try:
                return await self._websocket(path, query, kw)
            except (OSError, TimeoutError, LXDUnavailable) as exc:
                tried.add(url)
                if self.uds is None and len(tried) < len(self.urls) and await self.fail_over(url):
                    continue
                if isinstance(exc, LXDUnavailable):
                    raise
                raise LXDUnavailable(f"websocket to {path} failed: {exc or type(exc).__name__}", method="GET",
                                     path=path) from exc

    async def _websocket(self, path: str, query: str, kw: dict[str, Any]) -> ClientConnection:
        try:
            if self.uds is not None:
                return await unix_connect(self.uds, f"ws://lxd{path}{query}", **kw)
            ctx = await self.ssl_context()
            parts = urlsplit(self.base_url)
            scheme = "wss" if parts.scheme == "https" else "ws"
            return await connect(f"{scheme}://{parts.netloc}{path}{query}", ssl=ctx, proxy=self.proxy, **kw)
        except LXDError:
            raise
        except websockets.InvalidStatus as exc:
            status = exc.response.status_code
            text = exc.response.body.decode(errors="replace") if exc.response.body else ""
            try:
                import json as _json

                text = _json.loads(text).get("error") or text
            except (ValueError, AttributeError):
                pass
            raise error_for(status, text or f"websocket refused with HTTP {status}", method="GET", path=path) from exc
        except (OSError, TimeoutError):
            raise  # not connected: the caller may move to another URL
        except (ssl.SSLError, websockets.WebSocketException) as exc:
            raise LXDUnavailable(f"websocket to {path} failed: {exc or type(exc).__name__}", method="GET",
                                 path=path) from exc

    async def aclose(self) -> None:
        self._closed = True
        retired, self._retired = self._retired, []
        for c in (self._short, self._long, *retired):
            if c is not None:
                await c.aclose()
        self._short = self._long = None
