"""The HTTP listener: uvicorn, with a bound on what a connection may cost before its request is known.

uvicorn reads a request head for as long as the client takes, as large as the client sends it (httptools keeps
no limit), and keeps any number of connections open. `guarded_protocol` wraps one of uvicorn's HTTP protocols:

- **open connections** (HTTP and websocket, counted across the process by uvicorn's own server state): one past
  `max_connections` is answered 503 and closed as soon as it is accepted, before anything is read from it;
- **head size**: bytes of a request head that the parser holds (or, for httptools, bytes received since the
  request last moved on: its head complete or body bytes parsed, which bounds chunk lines and trailers too); past
  `max_header_bytes` the connection is answered 431 and closed (the parser holds at most that plus one read from
  the socket);
- **head time**: from the moment a connection waits for a request head (accepted, or its previous response sent)
  until that head is complete, at most `header_timeout` seconds; then 408 and close (a plain close when not one
  byte of the head came, as for an idle keep-alive connection). The time a request takes to be handled or its
  body to be uploaded is not counted.

Refusals are problem+json bodies written straight to the socket (the application never sees the request).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.http.errors import PROBLEM_MEDIA_TYPE, TITLES
from app.http.handlers import problem_body

log = logging.getLogger("app.http.listener")

READ_SIZE = 256 * 1024
"""The most asyncio reads from a socket at once: a head may overshoot the limit by that much before it is seen."""

FD_RESERVE = 256
"""File descriptors kept for everything but client connections (LXD sockets, the job database, spooled files)."""


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int = 64 * 1024
    header_timeout: float = 10.0
    max_connections: int = 2048


def refusal(status: int, detail: str, *, slug: str | None = None) -> bytes:
    """A complete HTTP/1.1 response with a problem+json body that closes the connection."""
    body = json.dumps(problem_body(status, path=None, detail=detail, slug=slug,
                                   title=TITLES.get(status, HTTPStatus(status).phrase))).encode()
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: {PROBLEM_MEDIA_TYPE}\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n")
    if status == 503:
        head += "retry-after: 1\r\n"
    return head.encode() + b"\r\n" + body


_refusals = {"count": 0, "logged_at": float("-inf")}


def _note_refusal(loop: asyncio.AbstractEventLoop) -> None:
    """Log refused connections at most once a second (a flood of them must not flood the log)."""
    _refusals["count"] += 1
    if loop.time() - _refusals["logged_at"] >= 1.0:
        log.warning("refused %d connection(s): the limit of open connections is reached", _refusals["count"])
        _refusals.update(count=0, logged_at=loop.time())


class _HeadGuard:
    """Mixin over a uvicorn HTTP protocol class; the adapters below say what the parser holds unparsed."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()

    # attributes of the uvicorn protocol this is mixed into
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    connections: set[Any]

    _refused = False
    _head_since: float | None = None  # loop time since when a head is awaited; None while none is
    _head_started = False  # a byte of the awaited head came
    _head_timer: asyncio.TimerHandle | None = None

    def _reading_head(self) -> bool:
        """Bytes received now belong to a request head."""
        raise NotImplementedError

    def _idle(self) -> bool:
        """No request is in flight on the connection: the next bytes start a new request."""
        raise NotImplementedError

    def _held(self, received: int) -> int:
        """Bytes of framing (a head, chunk lines, trailers) the parser holds or has taken in since the request last
        moved on (its head complete, or body bytes parsed), after `received` more bytes were fed to it."""
        raise NotImplementedError

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self._refused = True
            _note_refusal(self.loop)
            transport.write(refusal(503, f"the gateway has {self.limits.max_connections} connections open; "
                                         "try again shortly", slug="too-many-connections"))
            transport.close()
            return
        super().connection_made(transport)  # type: ignore[misc]
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        if not self._refused:
            super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._head_started = self._head_started or self._head_since is not None
        super().data_received(data)  # type: ignore[misc]
        if self._head_since is not None and not self._reading_head():
            self._head_done()
        if not self.transport.is_closing() and self._held(len(data)) > self.limits.max_header_bytes:
            self._refuse(431, f"the request head (or its trailers) is larger than {self.limits.max_header_bytes} "
                         "bytes", slug="header-too-large")

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing() and self._idle():
            self._await_head()

    def _head_done(self) -> None:
        self._head_since = None
        self._head_started = False

    def _await_head(self) -> None:
        self._head_since = self.loop.time()
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_deadline)

    def _head_deadline(self) -> None:
        self._head_timer = None
        if self._head_since is None or self.transport.is_closing():
            return
        remaining = self._head_since + self.limits.header_timeout - self.loop.time()
        if remaining > 0:  # re-armed since: wait for the rest
            self._head_timer = self.loop.call_later(remaining, self._head_deadline)
        elif self._head_started:
            self._refuse(408, f"the request head did not arrive within {self.limits.header_timeout:g} s",
                         slug="request-timeout")
        else:  # an idle connection: closed as a keep-alive timeout closes it
            self.transport.close()

    def _refuse(self, status: int, detail: str, *, slug: str) -> None:
        self._stop_timer()
        self._head_since = None
        self.transport.write(refusal(status, detail, slug=slug))
        self.transport.close()

    def _stop_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None


class GuardedH11Protocol(_HeadGuard, H11Protocol):  # type: ignore[misc]
    """h11 keeps what it has not parsed in its receive buffer (it refuses more than its own limit, too)."""

    def _reading_head(self) -> bool:
        return self.conn.their_state is h11.IDLE

    def _idle(self) -> bool:
        return self.conn.their_state is h11.IDLE

    def _held(self, received: int) -> int:
        return len(self.conn.trailing_data[0])


class GuardedHttpToolsProtocol(_HeadGuard, HttpToolsProtocol):  # type: ignore[misc]
    """httptools (llhttp) hands over body bytes as it parses them but builds each header name and value, trailers
    included, in memory: bytes fed since the last progress (head complete, body bytes) are counted."""

    _in_head = True
    _moved_on = False
    _stalled = 0

    def _reading_head(self) -> bool:
        return self._in_head

    def _idle(self) -> bool:
        return self._in_head and (self.cycle is None or self.cycle.response_complete)

    def _held(self, received: int) -> int:
        self._stalled = 0 if self._moved_on else self._stalled + received
        self._moved_on = False
        return self._stalled

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._moved_on = True
        self._head_done()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._moved_on = True
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True


PROTOCOLS: dict[str, type[asyncio.Protocol]] = {"httptools": GuardedHttpToolsProtocol, "h11": GuardedH11Protocol}


def guarded_protocol(limits: ConnectionLimits, parser: str = "httptools") -> type[asyncio.Protocol]:
    """The uvicorn HTTP protocol class (`http=` of uvicorn's config) that enforces `limits`."""
    base = PROTOCOLS[parser]
    return type(base.__name__, (base,), {"limits": limits})


def ensure_fd_room(limits: ConnectionLimits) -> ConnectionLimits:
    """Raise the soft open-file limit so `max_connections` is reached before the process runs out of file
    descriptors (running out makes the server stop accepting for a second at a time, the probes included);
    when the hard limit is too low for that, lower `max_connections` instead, and say so."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = limits.max_connections + FD_RESERVE
    if hard != resource.RLIM_INFINITY and hard < want:
        fitted = max(1, hard - FD_RESERVE)
        log.warning("the open-file limit (%d) admits %d connections, not %d", hard, fitted,
                    limits.max_connections)
        want, limits = hard, ConnectionLimits(limits.max_header_bytes, limits.header_timeout, fitted)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return limits
