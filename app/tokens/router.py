"""API tokens, the caller's identity, and one-time tickets for browser websockets and SSE."""

from __future__ import annotations

import asyncio
import datetime as dt
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field, field_validator

from app.http.auth import Principal, current_principal, require
from app.http.errors import ProblemError, problem_responses
from app.store.tokens import Scope, TokenExists, TokenNotFound, TokenRecord
from app.tokens.policy import describe_rules, unknown_rules

router = APIRouter(prefix="/v1", tags=["tokens"])
Admin = Annotated[Principal, Depends(require(Scope.admin))]
Caller = Annotated[Principal, Depends(current_principal)]


class TokenCreate(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", examples=["ci-pipeline"],
                      description="unique name of the token")
    scopes: list[Scope] = Field(min_length=1, examples=[["read", "write"]],
                                description="`read` (every GET but files, console logs and private image "
                                            "exports; secret config values redacted), `write` (create/change/"
                                            "delete/exec/files), `admin` (certificates, server config, tokens, "
                                            "storage, networks)")
    remotes: list[str] | None = Field(None, examples=[["local"]], description="limit to these remotes; null: all")
    projects: list[str] | None = Field(None, examples=[["default"]],
                                       description="limit to these LXD projects; null: all")
    expires_at: dt.datetime | None = Field(None, examples=["2027-01-01T00:00:00Z"])
    allow: list[str] = Field(default_factory=list, examples=[["security.nesting"]],
                             description="policy rules this token may use beyond the allow-list: "
                                         + describe_rules())

    @field_validator("allow")
    @classmethod
    def _known_rules(cls, v: list[str]) -> list[str]:
        unknown = unknown_rules(v)
        if unknown:
            raise ValueError(f"unknown policy rules: {', '.join(unknown)}")
        return v


class TokenInfo(BaseModel):
    name: str = Field(examples=["ci-pipeline"])
    scopes: list[Scope] = Field(examples=[["read", "write"]])
    remotes: list[str] | None = None
    projects: list[str] | None = None
    expires_at: dt.datetime | None = None
    allow: list[str] = Field(default_factory=list)
    created_at: dt.datetime | None = None

    @classmethod
    def of(cls, r: TokenRecord) -> TokenInfo:
        return cls(name=r.name, scopes=r.scopes, remotes=r.remotes, projects=r.projects,
                   expires_at=r.expires_at, allow=r.allow, created_at=r.created_at)


class TokenCreated(TokenInfo):
    token: str = Field(description="the secret: shown once, never stored in clear", examples=["lxdgw_3x..."])


class TokenList(BaseModel):
    items: list[TokenInfo]
    next_cursor: str | None = None


class WhoAmI(BaseModel):
    name: str = Field(examples=["ci-pipeline"])
    scopes: list[Scope]
    remotes: list[str] | None = None
    projects: list[str] | None = None
    authenticated: bool = Field(description="false when the gateway runs with authentication turned off")


class Ticket(BaseModel):
    ticket: str = Field(description="pass as `?ticket=` to one websocket or SSE route")
    expires_in: float = Field(examples=[30.0], description="seconds the ticket stays valid (single use)")


@router.get("/tokens", summary="List API tokens (never their secrets)", response_model=TokenList,
            operation_id="tokens-list", responses=problem_responses(401, 403))
async def list_tokens(request: Request, _: Admin) -> TokenList:
    records = await asyncio.to_thread(request.app.state.tokens.list)
    return TokenList(items=[TokenInfo.of(r) for r in records])


@router.post("/tokens", summary="Create an API token (the secret is shown once)", status_code=201,
             response_model=TokenCreated, operation_id="tokens-create",
             responses=problem_responses(401, 403, 409, 422))
async def create_token(body: TokenCreate, request: Request, _: Admin) -> TokenCreated:
    try:
        record, secret = await asyncio.to_thread(
            partial(request.app.state.tokens.create, body.name, body.scopes, remotes=body.remotes,
                    projects=body.projects, expires_at=body.expires_at, allow=body.allow))
    except TokenExists:
        raise ProblemError(409, f"a token named {body.name!r} exists") from None
    return TokenCreated(**TokenInfo.of(record).model_dump(), token=secret)


@router.delete("/tokens/{name}", summary="Revoke an API token (effective at once, open streams included)",
               status_code=204, operation_id="tokens-delete", responses=problem_responses(401, 403, 404))
async def revoke_token(name: str, request: Request, _: Admin) -> Response:
    try:
        await asyncio.to_thread(request.app.state.tokens.revoke, name)
    except TokenNotFound:
        raise ProblemError(404, f"no token named {name!r}") from None
    request.app.state.streams.wake()  # its open streams end now, not at the next check
    return Response(status_code=204)


@router.get("/whoami", summary="The calling token's name, scopes and limits", response_model=WhoAmI,
            operation_id="tokens-whoami", responses=problem_responses(401))
async def whoami(principal: Caller) -> WhoAmI:
    return WhoAmI(name=principal.name, scopes=sorted(principal.scopes),
                  remotes=list(principal.remotes) if principal.remotes is not None else None,
                  projects=list(principal.projects) if principal.projects is not None else None,
                  authenticated=principal.authenticated)


@router.post("/tickets", summary="A one-time ticket for a websocket or SSE connection", status_code=201,
             response_model=Ticket, operation_id="tokens-ticket", responses=problem_responses(401))
async def ticket(request: Request, principal: Caller) -> Ticket:
    value, ttl = await request.app.state.tickets.issue(principal)
    return Ticket(ticket=value, expires_in=ttl)
