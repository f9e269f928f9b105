"""What resource routes use to start jobs and answer per the contract.

    @router.post("/v1/containers", status_code=202, response_model=Job, responses=job_responses(404, 409))
    async def create_container(spec: ContainerSpec, jobs: JobStarterDep) -> Response:
        async def precheck() -> None:          # answered at once, before any job exists
            if await name_taken(spec.name):
                raise ProblemError(409, f"container {spec.name!r} exists")
        return await jobs.start("container.create", params=spec.model_dump(mode="json"),
                                resource=f"/v1/containers/{spec.name}", remote="local", project="default",
                                precheck=precheck)

The route itself requires its scope (e.g. `Depends(require(Scope.write))`). The starter reads `?wait=` (integer
0 to 300, else 422) and `Idempotency-Key` (scoped to the calling token), and answers `202` with the job and
`Location: /v1/jobs/{id}`, or `200` with the finished job when it ends within the wait. A replay answers the first
job with `Idempotent-Replayed: true`; the same key with a different request is a 409 problem. Idempotency keys,
the per-token job limit and the job itself belong to the calling token's id (not its name).
"""

from __future__ import annotations

import collections
import logging
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Protocol, cast

from fastapi import Depends, Header, Query, Request
from fastapi.responses import JSONResponse

from app.http.auth import Principal, current_principal
from app.http.errors import ProblemError, problem_responses
from app.http.redact import redact_results
from app.http.request_id import current_request_id
from app.jobs.access import Viewer
from app.jobs.idempotency import IdempotencyConflict, Replay, fingerprint
from app.jobs.models import Job
from app.jobs.runner import Claim, JobRunner, RunnerClosed
from app.jobs.service import JobsService
from app.store.tokens import Scope

log = logging.getLogger("app.jobs")

RESERVATION_SECONDS = 120.0
"""How long a shared store keeps a reservation (a name, a place under the job cap) whose job is not submitted yet,
should the request never end (its replica alive): longer than any check before a job is made."""


class SharedReservations(Protocol):
    """What a store several gateway processes share offers to reserve across them (`app.store.postgres`)."""

    async def reserve_name(self, key: tuple[str, ...], *, owner_id: str, now: float, ttl: float) -> str | None: ...
    async def bind_name(self, key: tuple[str, ...], job_id: str, *, owner_id: str) -> None: ...
    async def release_name(self, key: tuple[str, ...], *, owner_id: str) -> None: ...
    async def reserve_job_slot(self, token_id: str, limit: int, *, slot_id: str, owner_id: str, now: float,
                               ttl: float) -> bool: ...
    async def release_job_slot(self, slot_id: str) -> None: ...


def shared_reservations(service: JobsService) -> SharedReservations | None:
    """The store's reservations across processes when several share it; None on the embedded store (its one
    process reserves in memory)."""
    store = service.runner.store
    if service.runner.shared and hasattr(store, "reserve_name") and hasattr(store, "reserve_job_slot"):
        return cast(SharedReservations, store)
    return None


_starting: weakref.WeakKeyDictionary[JobRunner, collections.Counter[str]] = weakref.WeakKeyDictionary()
"""Per runner (the embedded store): requests of each token that passed the job cap and have not submitted yet."""


def _uncount(counted: collections.Counter[str] | None, token_id: str) -> None:
    if counted is not None and counted[token_id] > 0:
        counted[token_id] -= 1
        if not counted[token_id]:
            del counted[token_id]


WAIT_DESCRIPTION = ("seconds to wait for the job to end (0 to 300): when it ends within the wait the answer is "
                    "200 with the finished job, otherwise 202 with the job as it is")

WaitQuery = Annotated[int, Query(ge=0, le=300, description=WAIT_DESCRIPTION)]
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=255,
           description="the same key and request within 24 h answer the same job; a different request is 409"),
]


def get_jobs(request: Request) -> JobsService:
    return request.app.state.jobs  # type: ignore[no-any-return]


JobsDep = Annotated[JobsService, Depends(get_jobs)]


def viewer_of(principal: Principal) -> Viewer:
    """The caller as the jobs subsystem sees it: token id, admin or not, remote and project limits."""
    return Viewer(token_id=principal.token_id, admin=principal.has(Scope.admin), remotes=principal.remotes,
                  projects=principal.projects, hide=None if principal.has(Scope.write) else redact_results)


def job_response(job: Job, viewer: Viewer, *, replayed: bool = False) -> JSONResponse:
    """200 with an ended job, 202 with `Location` otherwise; the job as `viewer` may see it."""
    headers = {"Location": f"/v1/jobs/{job.id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(viewer.render(job), status_code=200 if job.ended else 202, headers=headers)


def job_responses(*problem_codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for a route that starts a job (use with `status_code=202, response_model=Job`)."""
    headers = {
        "Location": {"description": "/v1/jobs/{id}", "schema": {"type": "string"}},
        "Idempotent-Replayed": {"description": "`true` when this answers an earlier request with the same "
                                               "Idempotency-Key", "schema": {"type": "string"}},
    }
    responses: dict[int | str, dict[str, Any]] = {
        200: {"model": Job, "description": "the job ended within `wait`", "headers": headers},
        202: {"model": Job, "description": "the job was started (or is still running after `wait`)",
              "headers": headers},
    }
    responses.update(problem_responses(409, 422, 503, *problem_codes))
    return responses


class JobStarter:
    """Starts one job for the current request; get it with `JobStarterDep`."""

    def __init__(self, request: Request, service: JobsService, wait: int, idempotency_key: str | None,
                 principal: Principal) -> None:
        self.request = request
        self.principal = principal
        self.service = service
        self.wait = wait
        self.idempotency_key = idempotency_key

    async def start(self, kind: str, *, params: dict[str, Any] | None = None, resource: str | None = None,
                    remote: str | None = None, project: str | None = None,
                    precheck: Callable[[], Awaitable[None]] | None = None, upload: bool = False,
                    claim: Claim | None = None, claimed: str = "", claimed_slug: str = "conflict") -> JSONResponse:
        """Check, start and answer. `precheck` runs after the idempotency check (so a replay is never refused by
        it) and before the job exists; a `ProblemError` it raises is the answer. `claim` reserves something until
        the job ends (e.g. a name being created): while another request or unfinished job holds it the answer is
        409 (`claimed_slug`) at once, "`claimed` is being created", naming the job. With `upload=True` the body is not
        read: the request must carry `Content-SHA256` when it carries an `Idempotency-Key`.

        On a store several processes share, the claim and the token's place under its job cap are also reserved in
        the store (`SharedReservations`), so that they hold across every process: two asked at once for one name
        answer one 202 and one 409, and no number of requests to any processes exceeds the cap."""
        svc = self.service
        caller = self.principal.token_id  # idempotency keys and the job limit belong to the token, by its id
        viewer = viewer_of(self.principal)
        reservation = None
        if self.idempotency_key is not None:
            sha = self.request.headers.get("content-sha256")
            if upload and not sha:
                raise ProblemError(400, "an upload with an Idempotency-Key needs a Content-SHA256 header",
                                   slug="content-sha256-required")
            body = None if upload else await self.request.body()
            fp = fingerprint(self.request.method, self.request.url.path, self.request.query_params.multi_items(),
                             body, content_sha256=sha)
            try:
                outcome = await svc.idempotency.begin(caller, self.idempotency_key, fp)
            except IdempotencyConflict:
                raise ProblemError(409, "this Idempotency-Key was used for a different request",
                                   slug="idempotency-conflict") from None
            if isinstance(outcome, Replay):
                job = await svc.runner.wait(outcome.job_id, self.wait)
                if job is None:
                    raise ProblemError(409, "this Idempotency-Key answers a job that no longer exists",
                                       slug="idempotency-conflict")
                return job_response(job, viewer, replayed=True)
            reservation = outcome
        claimed_here = False
        shared = shared_reservations(svc)
        owner = svc.runner.owner_id
        stored_claim: Claim | None = None
        slot: str | None = None
        counted: collections.Counter[str] | None = None
        try:
            if claim is not None:
                holder = svc.runner.claim(claim)
                claimed_here = holder is None
                if holder is None and shared is not None:
                    holder = await shared.reserve_name(claim, owner_id=owner, now=time.time(),
                                                       ttl=RESERVATION_SECONDS)
                    stored_claim = claim if holder is None else None
                if holder is not None:
                    by = f"job {holder}" if holder else "another request"
                    raise ProblemError(409, f"{claimed} is being created by {by}", slug=claimed_slug,
                                       job_id=holder or None)
            limit = self.request.app.state.settings.max_jobs_per_token
            if limit:
                if shared is not None:
                    slot = uuid.uuid4().hex
                    if not await shared.reserve_job_slot(caller, limit, slot_id=slot, owner_id=owner,
                                                         now=time.time(), ttl=RESERVATION_SECONDS):
                        slot = None
                        raise self._too_many(limit)
                else:  # one process: its unfinished jobs and the requests about to submit one, counted at once
                    starting = _starting.setdefault(svc.runner, collections.Counter())
                    if svc.runner.unfinished_count(caller) + starting[caller] >= limit:
                        raise self._too_many(limit)
                    starting[caller] += 1
                    counted = starting
            if precheck is not None:
                await precheck()
            try:
                job = await svc.runner.submit(kind, params=params, remote=remote, project=project,
                                              resource=resource, requested_by=self.principal.name,
                                              request_id=current_request_id(), token_id=caller, claim=claim)
            except RunnerClosed:
                raise ProblemError(503, "the gateway is shutting down; retry shortly", slug="shutting-down",
                                   headers={"Retry-After": "5"}) from None
        except BaseException:
            _uncount(counted, caller)
            if claimed_here and claim is not None:
                svc.runner.release(claim)
            if shared is not None:
                await self._give_back(shared, stored_claim, slot, owner)
            if reservation is not None:
                await svc.idempotency.release(reservation)
            raise
        _uncount(counted, caller)  # the job counts itself from now on
        if shared is not None:
            await self._give_back(shared, None, slot, owner)
            if stored_claim is not None:
                try:
                    await shared.bind_name(stored_claim, job.id, owner_id=owner)
                except Exception as exc:  # it lapses with its expiry; this process still holds the name
                    log.warning("the reservation of %s could not be tied to job %s: %s", claimed, job.id, exc)
        if reservation is not None:
            await svc.idempotency.complete(reservation, job.id)
        if self.wait:
            job = await svc.runner.wait(job.id, self.wait) or job
        return job_response(job, viewer)

    @staticmethod
    def _too_many(limit: int) -> ProblemError:
        return ProblemError(429, f"this token has {limit} unfinished jobs already; wait for some to end",
                            slug="too-many-jobs", headers={"Retry-After": "5"})

    @staticmethod
    async def _give_back(shared: SharedReservations, claim: Claim | None, slot: str | None, owner: str) -> None:
        """Release a name reserved in the store for a job never made, and a place under the job cap (a job made
        counts itself from now on). A failure leaves them to lapse with their expiry."""
        try:
            if claim is not None:
                await shared.release_name(claim, owner_id=owner)
            if slot is not None:
                await shared.release_job_slot(slot)
        except Exception as exc:
            log.warning("a reservation in the job store could not be given back (it lapses by itself): %s", exc)


async def job_starter(request: Request, service: JobsDep,
                      principal: Annotated[Principal, Depends(current_principal)], wait: WaitQuery = 0,
                      idempotency_key: IdempotencyKeyHeader = None) -> JobStarter:
    return JobStarter(request, service, wait, idempotency_key, principal)


JobStarterDep = Annotated[JobStarter, Depends(job_starter)]
