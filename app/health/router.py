"""Liveness and readiness probes (no token needed)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from app.http.errors import problem_responses
from app.http.handlers import problem_response
from app.lxd.registry import RemoteRegistry

router = APIRouter(tags=["operations"])


class Liveness(BaseModel):
    status: str = Field(examples=["ok"])


class RemoteReadiness(BaseModel):
    name: str = Field(examples=["local"])
    reachable: bool
    error: str | None = Field(None, examples=[None])
    model: str = Field("off", description="the read model of the remote: `synced` (reads answered from it), "
                       "`starting`, `reloading` or `down` (reads go to LXD), `off`", examples=["synced"])


class StoreReadiness(BaseModel):
    writable: bool
    error: str | None = Field(None, examples=[None])


class Readiness(BaseModel):
    status: str = Field(description="`ok`: every remote answers; `degraded`: some do not, but the gateway serves "
                        "(the store can write, and the required remotes, or at least one, answer)",
                        examples=["ok"])
    remotes: list[RemoteReadiness]
    store: StoreReadiness | None = Field(None, description="whether the job store (the data directory) can write")


@router.get("/livez", summary="The process answers", response_model=Liveness, operation_id="livez")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The gateway can serve: its job store can write, and the required remotes (by default: "
                           "at least one) answer", response_model=Readiness, operation_id="readyz",
            responses=problem_responses(503))
async def readyz(request: Request) -> Readiness | JSONResponse:
    """200 while the gateway can serve; the body gives every remote's state (a remote that does not answer makes
    it `degraded`, not 503, unless `LXDGW_REQUIRED_REMOTES` names it, or no remote answers at all)."""
    registry: RemoteRegistry = request.app.state.remotes
    names = [s.name for s in registry.specs()]
    jobs = getattr(request.app.state, "jobs", None)
    store_error, *results = await asyncio.gather(
        jobs.store.check_writable() if jobs is not None else asyncio.sleep(0),
        *(registry.check(n) for n in names))
    mirror = getattr(request.app.state, "mirror", None)
    models = {n: st["state"] for n, st in mirror.stats().items()} if mirror is not None else {}
    remotes = [{"name": n, "reachable": err is None, "error": err, "model": models.get(n, "off")}
               for n, err in zip(names, results, strict=True)]
    store = {"writable": store_error is None, "error": store_error}
    down = [r for r in remotes if not r["reachable"]]
    required = set(request.app.state.settings.required_remotes)
    failing = [f"remote {r['name']!r} unreachable: {r['error']}" for r in down
               if r["name"] in required or len(down) == len(remotes)]
    failing += [f"required remote {n!r} is not configured" for n in sorted(required - set(names))]
    if store_error is not None:
        failing.append(f"the job store cannot write: {store_error}")
    if failing:
        return problem_response(503, path=request.url.path, detail="; ".join(failing), remotes=remotes,
                                store=store)
    return Readiness.model_validate({"status": "degraded" if down else "ok", "remotes": remotes, "store": store})
