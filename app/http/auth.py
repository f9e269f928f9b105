"""Who is calling: bearer tokens (or one-time tickets for browser websockets/SSE) and their scopes.

Built on `HTTPConnection`, so the same dependency guards HTTP and websocket routes. Missing or bad credentials
are 401 with `WWW-Authenticate: Bearer`; a missing scope is 403. On websockets the connection is closed with
1008 instead (a websocket cannot carry a status before it is accepted).

A ticket belongs to the token that asked for it (by the token's id): redeeming it checks that this token is still
live, so a ticket dies with its token. Tickets open websockets and the routes marked with `TICKETS_ACCEPTED` (Server-
Sent Events) only; `?ticket=` anywhere else is a 401.

The web console (`/ui`) signs in once and then sends its session cookie (`SESSION_COOKIE`, opaque, HttpOnly,
SameSite=Strict) instead of the token: on plain HTTP requests only (a websocket takes a ticket, and a browser's
websocket must come from an allowed `Origin`), and on every request that is not a read with the session's CSRF token in
`X-CSRF-Token`. The session stands for its token and dies with it.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from fastapi import Depends, WebSocketException
from starlette.requests import HTTPConnection

from app.http.errors import ProblemError
from app.http.owners import acting_for
from app.http.proxies import client_of, trusted_networks
from app.store.tokens import Scope, TokenRecord, Tokens

if TYPE_CHECKING:
    from app.store.pg_state import PostgresTicketStore

TICKET_TTL = 30.0
TICKET_PREFIX = "lxdgwt_"
TICKETS_ACCEPTED = {"x-accepts-ticket": True}
"""`openapi_extra` of an HTTP route that streams (SSE) and so may be opened with `?ticket=`."""
SESSION_COOKIE = "__Host-lxdgw-session"
"""The web console's session cookie (see `app.ui.sessions`)."""
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TICKETS_ACCEPTED_WHEN_WATCHING = {"x-accepts-ticket": "with watch=true"}
"""`openapi_extra` of a collection that streams (SSE) with `?watch=true`: only then may `?ticket=` open it."""


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    name: str
    scopes: frozenset[Scope]
    remotes: tuple[str, ...] | None = None
    projects: tuple[str, ...] | None = None
    allow: frozenset[str] = frozenset()
    authenticated: bool = True
    token_id: str = "anonymous"
    """The token's stable id (jobs, tickets and streams are bound to it, not to the name)."""

    @classmethod
    def from_record(cls, r: TokenRecord) -> Principal:
        return cls(name=r.name, token_id=r.id, scopes=frozenset(r.effective_scopes()),
                   remotes=tuple(r.remotes) if r.remotes is not None else None,
                   projects=tuple(r.projects) if r.projects is not None else None, allow=frozenset(r.allow))

    def has(self, scope: Scope) -> bool:
        return scope in self.scopes

    def allows_remote(self, remote: str) -> bool:
        return self.remotes is None or remote in self.remotes

    def allows_project(self, project: str) -> bool:
        return self.projects is None or project in self.projects


# With authentication turned off every caller is this admin; the policy guard still applies (operator's default).
ANONYMOUS_ADMIN = Principal(name="anonymous", scopes=frozenset(Scope), authenticated=False)


@dataclass
class TicketBook:
    """One-time tickets (valid 30 s, single use) that stand in for a token where browsers cannot send headers."""

    tokens: Tokens
    ttl: float = TICKET_TTL
    _tickets: dict[str, tuple[float, Principal]] = field(default_factory=dict)

    async def issue(self, principal: Principal) -> tuple[str, float]:
        now = time.monotonic()
        self._tickets = {k: v for k, v in self._tickets.items() if v[0] > now}
        ticket = TICKET_PREFIX + secrets.token_urlsafe(24)
        self._tickets[ticket] = (now + self.ttl, principal)
        return ticket, self.ttl

    async def redeem(self, ticket: str) -> Principal | None:
        """The caller the ticket stands for, once; None when it is unknown, used, stale, or its token is gone."""
        entry = self._tickets.pop(ticket, None)
        if entry is None or entry[0] < time.monotonic():
            return None
        principal = entry[1]
        if principal.authenticated and not self.tokens.is_live(principal.token_id):
            return None
        return principal


@dataclass
class SharedTicketBook:
    """One-time tickets in the shared database (PostgreSQL): issued by one process, redeemed once by any."""

    tokens: Tokens
    store: PostgresTicketStore
    ttl: float = TICKET_TTL

    async def issue(self, principal: Principal) -> tuple[str, float]:
        ticket = TICKET_PREFIX + secrets.token_urlsafe(24)
        await self.store.put(ticket, principal.token_id, principal.authenticated, self.ttl)
        return ticket, self.ttl

    async def redeem(self, ticket: str) -> Principal | None:
        taken = await self.store.take(ticket)
        if taken is None:
            return None
        token_id, authenticated = taken
        if not authenticated:
            return ANONYMOUS_ADMIN
        record = self.tokens.by_id().get(token_id)
        refresh = getattr(self.tokens, "refresh", None)
        if record is None and refresh is not None:  # a token made elsewhere a moment ago: not in memory yet
            await asyncio.to_thread(refresh)
            record = self.tokens.by_id().get(token_id)
        if record is None or record.expired():
            return None
        return Principal.from_record(record)


def accepts_ticket(conn: HTTPConnection) -> bool:
    """Whether `?ticket=` may stand for a token here: on websockets, and on GET routes marked `TICKETS_ACCEPTED`."""
    if conn.scope["type"] == "websocket":
        return True
    route = conn.scope.get("route")
    extra = getattr(route, "openapi_extra", None) or {}
    if conn.scope.get("method") != "GET":
        return False
    accepts = extra.get("x-accepts-ticket")
    return accepts is True or (accepts == "with watch=true" and conn.query_params.get("watch") in ("true", "1"))


def _deny(conn: HTTPConnection, status: int, detail: str) -> Exception:
    if conn.scope["type"] == "websocket":
        return WebSocketException(code=1008, reason=detail[:120])
    headers = {"WWW-Authenticate": 'Bearer realm="lxd-gateway"'} if status == 401 else None
    return ProblemError(status, detail, headers=headers)


def client_address(conn: HTTPConnection) -> str:
    """The client's address, through the trusted proxies (`app.http.proxies`)."""
    proxies = conn.app.state.settings.trusted_proxies
    peer = conn.client.host if conn.client else None
    if not proxies:
        return peer or "unknown"
    return client_of(peer, conn.headers.getlist("x-forwarded-for"), trusted_networks(tuple(proxies)))


async def _unauthenticated(conn: HTTPConnection, detail: str) -> Exception:
    """401 for a request without a valid credential; past the per-address limit of those, 429 (not audited, so
    a flood of them cannot flood the audit trail)."""
    try:
        await conn.app.state.auth_failure_limit.hit(f"address:{client_address(conn)}")
    except ProblemError as limited:
        conn.scope.setdefault("state", {})["unaudited"] = True
        if conn.scope["type"] == "websocket":
            return WebSocketException(code=1008, reason=(limited.detail or "")[:120])
        return limited
    return _deny(conn, 401, detail)


class ConsoleSessions(Protocol):
    async def authenticate(self, session_id: str) -> tuple[Principal, str] | None:
        """The caller the session stands for and the session's CSRF token; None when unknown, expired, or its
        token is gone."""


def origin_allowed(conn: HTTPConnection) -> bool:
    """Whether a browser's `Origin` (when one is sent) is the gateway's own, or one of `LXDGW_CORS_ORIGINS`."""
    origin = conn.headers.get("origin")
    if origin is None:
        return True  # not a browser
    if origin in conn.app.state.settings.cors_origins:
        return True
    scheme, _, host = origin.partition("://")
    return scheme in ("http", "https") and host.lower() == conn.headers.get("host", "").lower()


async def _session_principal(conn: HTTPConnection, session_id: str) -> Principal:
    sessions: ConsoleSessions | None = getattr(conn.app.state, "console_sessions", None)
    found = await sessions.authenticate(session_id) if sessions is not None else None
    if found is None:
        raise await _unauthenticated(conn, "the console session is unknown or expired, or its token was revoked: "
                                           "sign in again")
    principal, csrf = found
    if conn.scope.get("method") not in SAFE_METHODS and not hmac.compare_digest(
            conn.headers.get(CSRF_HEADER, "").encode(), csrf.encode()):
        raise _deny(conn, 403, "a request with the console's session cookie must carry its CSRF token in "
                               "X-CSRF-Token")
    return principal


async def current_principal(conn: HTTPConnection) -> Principal:
    """The caller, from `Authorization: Bearer`, the console's session cookie (HTTP only), or (websockets, SSE) a
    one-time `?ticket=`. A browser's websocket from another origin is refused whatever it carries."""
    settings = conn.app.state.settings
    if conn.scope["type"] == "websocket" and not origin_allowed(conn):
        raise _deny(conn, 403, "websocket refused: its Origin is not this gateway's (nor an allowed CORS origin)")
    if not settings.auth_enabled:
        if "principal" not in conn.scope.setdefault("state", {}):
            await conn.app.state.rate_limit.hit(f"address:{client_address(conn)}")
            conn.scope["state"]["principal"] = ANONYMOUS_ADMIN
        return ANONYMOUS_ADMIN
    cached = conn.scope.get("state", {}).get("principal")
    if cached is not None:
        acting_for(cached.token_id)
        return cached  # type: ignore[no-any-return]
    header = conn.headers.get("authorization", "")
    principal: Principal | None = None
    if header:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise await _unauthenticated(conn, "the Authorization header must be 'Bearer <token>'")
        record = conn.app.state.tokens.authenticate(secret.strip())
        if record is None:
            raise await _unauthenticated(conn, "invalid, expired or revoked token")
        principal = Principal.from_record(record)
    elif conn.scope["type"] == "http" and (session_id := conn.cookies.get(SESSION_COOKIE)):
        principal = await _session_principal(conn, session_id)
    elif ticket := conn.query_params.get("ticket"):
        if not accepts_ticket(conn):
            raise _deny(conn, 401, "a ticket opens websocket and event-stream routes only; send the token as "
                                   "'Authorization: Bearer <token>'")
        principal = await conn.app.state.tickets.redeem(ticket)
        if principal is None:
            raise await _unauthenticated(conn, "invalid or expired ticket (or its token was revoked)")
    else:
        raise await _unauthenticated(conn, "a bearer token is required")
    await conn.app.state.rate_limit.hit(principal.name)
    conn.scope.setdefault("state", {})["principal"] = principal
    acting_for(principal.token_id)
    return principal


def require_scope(conn: HTTPConnection, principal: Principal, scope: Scope) -> None:
    """403 unless the caller holds `scope`."""
    if not principal.has(scope):
        raise _deny(conn, 403, f"this token lacks the '{scope}' scope")


def require(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """Dependency: the caller, who must hold `scope`."""

    async def dependency(conn: HTTPConnection, principal: Principal = Depends(current_principal)) -> Principal:
        require_scope(conn, principal, scope)
        return principal

    dependency.__name__ = f"require_{scope}"
    return dependency


def token_store(conn: HTTPConnection) -> Tokens:
    return conn.app.state.tokens  # type: ignore[no-any-return]
