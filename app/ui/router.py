"""`/ui`: the web console's page, its assets (served here, never from elsewhere), and its sign-in session.

- `GET /ui`: the page, with a strict Content-Security-Policy (`CONSOLE_CSP`): scripts and styles from the gateway
  only, no inline script, nothing framed, no form posted elsewhere.
- `POST /ui/session` `{token}`: sign in; the token travels in the body only (never a URL), is checked, and is
  exchanged for a session cookie (`app.ui.sessions`); the answer carries the CSRF token the page keeps in memory.
- `GET /ui/session`: who the session is (and its CSRF token again, for a reloaded page); 401 without one.
- `DELETE /ui/session`: log out (the CSRF token is required, as on every write with the cookie).

The cookie is `__Host-` (Path=/, no Domain), HttpOnly, SameSite=Strict, and always Secure: browsers accept Secure
cookies from `https://` and from loopback (`http://127.0.0.1`, `http://localhost`, which they count as secure
contexts), and refuse `__Host-` cookies without it. So the console works over TLS or on loopback; over plain HTTP to
another address the browser drops the cookie and sign-in says so.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, FastAPI, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.types import Receive, Scope, Send

from app.http.auth import ANONYMOUS_ADMIN, CSRF_HEADER, SESSION_COOKIE, Principal, _unauthenticated, origin_allowed
from app.http.errors import ProblemError
from app.ui.sessions import ConsoleSessions

STATIC = Path(__file__).parent / "static"
ASSETS = "/ui/static"

# Styles: xterm.js (its DOM renderer, the default) writes <style> elements of its own at run time (its theme, the
# cursor, the cell size it measures), whose text changes with the font and window, so no hash or nonce can cover
# them: `style-src-elem` needs 'unsafe-inline' (measured: without it Chromium blocks each of them and the terminal
# draws wrongly). Style attributes stay forbidden (`style-src 'self'`, which `style-src-attr` falls back to): xterm.js
# sets element styles through the CSSOM (`element.style`), which CSP does not govern. Scripts: files of the gateway
# only, never inline.
CONSOLE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; style-src-elem 'self' 'unsafe-inline'; "
               "img-src 'self' data:; font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; "
               "frame-ancestors 'none'")
PAGE_HEADERS = {
    "Content-Security-Policy": CONSOLE_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

router = APIRouter(prefix="/ui", include_in_schema=False)


class SignIn(BaseModel):
    token: str = Field(min_length=1, max_length=4096)


def _sessions(request: Request) -> ConsoleSessions:
    return request.app.state.console_sessions  # type: ignore[no-any-return]


def _whoami(request: Request, principal: Principal, csrf: str | None, expires_at: float | None) -> dict[str, Any]:
    return {"name": principal.name, "scopes": sorted(str(s) for s in principal.scopes),
            "remotes": list(principal.remotes) if principal.remotes is not None else None,
            "projects": list(principal.projects) if principal.projects is not None else None,
            "csrf": csrf, "expires_at": expires_at, "auth": request.app.state.settings.auth_enabled}


@router.get("")
@router.get("/")
async def console_page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


@router.post("/session")
async def sign_in(request: Request, body: SignIn = Body()) -> JSONResponse:
    if not origin_allowed(request):
        raise ProblemError(403, "sign-in refused: the request's Origin is not this gateway's")
    settings = request.app.state.settings
    if not settings.auth_enabled:
        raise ProblemError(409, "authentication is turned off on this gateway: the console needs no sign-in")
    record = request.app.state.tokens.authenticate(body.token.strip())
    if record is None:
        raise await _unauthenticated(request, "invalid, expired or revoked token")
    opened = await _sessions(request).open(record)
    answer = JSONResponse(_whoami(request, Principal.from_record(record), opened.csrf, opened.expires_at),
                          headers={"Cache-Control": "no-store"})
    answer.set_cookie(SESSION_COOKIE, opened.session_id, max_age=opened.max_age, path="/", secure=True,
                      httponly=True, samesite="strict")
    return answer


@router.get("/session")
async def session_info(request: Request) -> JSONResponse:
    settings = request.app.state.settings
    if not settings.auth_enabled:
        return JSONResponse(_whoami(request, ANONYMOUS_ADMIN, None, None), headers={"Cache-Control": "no-store"})
    session_id = request.cookies.get(SESSION_COOKIE)
    found = await _sessions(request).authenticate(session_id) if session_id else None
    if found is None:
        raise ProblemError(401, "not signed in (or the session expired, or its token was revoked)")
    principal, csrf = found
    return JSONResponse(_whoami(request, principal, csrf, None), headers={"Cache-Control": "no-store"})


@router.delete("/session", status_code=204)
async def sign_out(request: Request) -> Response:
    session_id = request.cookies.get(SESSION_COOKIE)
    answer = Response(status_code=204)
    if session_id:
        found = await _sessions(request).authenticate(session_id)
        if found is not None:
            if not hmac.compare_digest(request.headers.get(CSRF_HEADER, "").encode(), found[1].encode()):
                raise ProblemError(403, "logging out needs the session's CSRF token in X-CSRF-Token")
            await _sessions(request).close(session_id)
    answer.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return answer


class _Assets(StaticFiles):
    """The console's files, never sniffed, cached briefly (the vendored ones carry their version in the path)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-content-type-options", b"nosniff"),
                                      (b"cache-control", b"no-cache")]
            await send(message)

        await super().__call__(scope, receive, with_headers)


def install_console(app: FastAPI) -> None:
    """The console's page, assets and sessions on `app`."""
    app.state.console_sessions = ConsoleSessions(app.state)
    app.mount(ASSETS, _Assets(directory=STATIC), name="ui-assets")
    app.include_router(router)


