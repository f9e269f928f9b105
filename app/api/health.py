"""Liveness and readiness probes (no token needed)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from app.api.problems import problem_response, problem_responses
from app.core.remotes import RemoteRegistry

router = APIRouter(tags=["operations"])


class Liveness(BaseModel):
    status: str = Field(examples=["ok"])


class RemoteReadiness(BaseModel):
    name: str = Field(examples=["local"])
    reachable: bool
    error: str | None = Field(None, examples=[None])


class Readiness(BaseModel):
    status: str = Field(examples=["ok"])
    remotes: list[RemoteReadiness]


@router.get("/livez", summary="The process answers", response_model=Liveness, operation_id="livez")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Every remote is reachable", response_model=Readiness, operation_id="readyz",
            responses=problem_responses(503))
async def readyz(request: Request) -> Any:
    registry: RemoteRegistry = request.app.state.remotes
    names = [s.name for s in registry.specs()]
    results = await asyncio.gather(*(registry.check(n) for n in names))
    remotes = [{"name": n, "reachable": err is None, "error": err} for n, err in zip(names, results, strict=True)]
    failing = [r for r in remotes if not r["reachable"]]
    if failing:
        detail = "; ".join(f"remote {r['name']!r} unreachable: {r['error']}" for r in failing)
        return problem_response(503, path=request.url.path, detail=detail, remotes=remotes)
    return JSONResponse({"status": "ok", "remotes": remotes})
