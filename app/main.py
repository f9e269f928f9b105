"""The application factory: `create_app(settings)` builds the FastAPI app; the lifespan opens and closes the
LXD clients. Run it with `lxd-gateway serve` (`python -m app serve`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute

from app import footprint
from app.certificates.router import router as certificates_router
from app.containers import jobs as container_jobs
from app.containers import jobs_exec
from app.containers import mirror as container_mirror
from app.containers.router import FAST_GET as containers_fast_get
from app.containers.router import router as containers_router
from app.containers.router_exec import router as container_exec_router
from app.containers.router_files import router as container_files_router
from app.containers.router_snapshots import router as snapshots_router
from app.events.router import router as events_router
from app.health.router import router as health_router
from app.health.router_metrics import router as metrics_router
from app.http.asyncapi import install_asyncapi
from app.http.auth import SharedTicketBook, TicketBook
from app.http.docs import install_docs
from app.http.errors import JobProblem, Problem, problem_of
from app.http.fanout import AllRemotes
from app.http.fastpath import FastRead, FastReads
from app.http.handlers import install_error_handlers
from app.http.limits import BodyLimitMiddleware, RateLimit
from app.http.methods import MethodCheckMiddleware
from app.http.metrics import Metrics, MetricsMiddleware
from app.http.open_streams import OpenStreams, StreamGuardMiddleware
from app.http.openapi import complete_document, openapi_tags
from app.http.owners import OperationOwners
from app.http.request_id import RequestIdMiddleware
from app.images import jobs as image_jobs
from app.images import mirror as image_mirror
from app.images.router import router as images_router
from app.jobs.bus import JobBus
from app.jobs.env import bind as bind_workflows
from app.jobs.idempotency import Idempotency
from app.jobs.kinds import JobKind, JobKinds
from app.jobs.models import Job, JobStatus
from app.jobs.router import router as jobs_router
from app.jobs.runner import JobRunner
from app.jobs.service import JobsService, load_extensions
from app.lxd.registry import RemoteRegistry, RemoteSpec
from app.mirror import Mirror, MirrorKind
from app.networks.router import router as networks_router
from app.profiles import mirror as profile_mirror
from app.profiles.router import router as profiles_router
from app.projects.router import router as projects_router
from app.remotes.router import follow_remotes
from app.remotes.router import router as remotes_router
from app.server.router import router as server_router
from app.server.router_cluster import router as cluster_router
from app.settings import Settings, SettingsError, load_settings
from app.storage import jobs as storage_jobs
from app.storage.router import router as storage_router
from app.store.database import job_store, shared_state
from app.store.datadir import secure_data_dir
from app.store.remotes import RemoteStore, persisted_remotes
from app.store.tokens import TokenStore
from app.tokens.audit import AuditMiddleware
from app.tokens.audit import router as audit_router
from app.tokens.policy import unknown_rules
from app.tokens.router import router as tokens_router
from app.ui.router import install_console

log = logging.getLogger("app")
PUBLIC_PATHS = ("/livez", "/readyz", "/metrics")

API_DESCRIPTION = """
An asynchronous, token-scoped REST gateway in front of LXD and Incus.

* Every long-running action is a **job**: poll it (`GET /v1/jobs/{id}?wait=30`), stream it (websocket or SSE),
  cancel it (`DELETE /v1/jobs/{id}`).
* Every error is `application/problem+json` (RFC 9457) with the request id.
* `?remote=` and `?project=` pick the LXD endpoint and project on every resource route.
"""


def _route_id(route: APIRoute) -> str:
    return route.operation_id or (f"{route.tags[0]}-{route.name}" if route.tags else route.name)


def remote_specs(settings: Settings) -> list[RemoteSpec]:
    return [
        RemoteSpec(name=r.name, url=r.url, client_cert=str(r.client_cert) if r.client_cert else None,
                   client_key=str(r.client_key) if r.client_key else None,
                   server_cert=str(r.server_cert) if r.server_cert else None,
                   server_fingerprint=r.server_fingerprint, insecure_skip_verify=r.insecure_skip_verify,
                   proxy=r.proxy, project=r.project, default=r.default, urls=tuple(r.urls))
        for r in settings.effective_remotes()
    ]


MIRRORED: tuple[MirrorKind, ...] = (container_mirror.CONTAINERS, image_mirror.IMAGE_KIND, image_mirror.ALIAS_KIND,
                                     profile_mirror.PROFILE_KIND)
"""What the read model keeps of each remote."""


FAST_READS: tuple[FastRead, ...] = (containers_fast_get,)
"""The hottest reads, answered without the framework's routing (app/http/fastpath.py)."""


def touch_after_job(mirror: Mirror, job: Job, params: dict[str, Any], status: JobStatus, result: Any) -> None:
    """Before a job's end is seen, the objects it may have changed are read again: the next read shows them. (A
    container job that succeeded with the container as its result read it through the model after its last
    change: that one is current already.)"""
    project = job.project or "default"
    remote = job.remote or ""
    current = result.get("name") if status is JobStatus.succeeded and isinstance(result, dict) and \
        "status_code" in result else None
    touched = container_mirror.touched_by(job.kind, params) + image_mirror.touched_by(job.kind) + \
        profile_mirror.touched_by(job.kind)
    for kind, keys in touched:
        keys = [k for k in keys if not (kind == container_mirror.KIND and k == current)]
        if keys or kind != container_mirror.KIND:  # images and profiles changed on the side: read when next read
            mirror.touch(remote, project, kind, *keys, lazy=kind != container_mirror.KIND)


JOB_KINDS: tuple[JobKind, ...] = (
    container_jobs.CREATE, container_jobs.DELETE, container_jobs.REMOVE_MANY,
    container_jobs.START, container_jobs.STOP, container_jobs.RESTART, container_jobs.FREEZE, container_jobs.UNFREEZE,
    container_jobs.RENAME, container_jobs.COPY, container_jobs.PUBLISH,
    container_jobs.SNAPSHOT_CREATE, container_jobs.SNAPSHOT_RESTORE, container_jobs.SNAPSHOT_DELETE,
    jobs_exec.EXEC,
    image_jobs.FIND, image_jobs.COPY, image_jobs.IMPORT, image_jobs.DELETE,
    storage_jobs.VOLUME_SNAPSHOT_CREATE, storage_jobs.VOLUME_SNAPSHOT_RESTORE, storage_jobs.VOLUME_SNAPSHOT_DELETE,
)
"""The job kinds of the gateway (extensions add theirs to `app.state.job_kinds` in their `install(app)`)."""


def jobs_service(settings: Settings, kinds: JobKinds) -> JobsService:
    """The job engine of this process on the job database `LXDGW_DATABASE_URL` names (the embedded SQLite file by
    default), tuned by `settings`, running `kinds`."""
    store = job_store(settings)
    bus = JobBus(capacity=settings.job_subscriber_queue, history=settings.job_subscriber_queue)
    runner = JobRunner(store, bus, kinds=kinds, problem_of=problem_of,
                       concurrency_per_remote=settings.job_concurrency_per_remote,
                       progress_interval=settings.job_progress_interval_seconds,
                       lease_seconds=settings.job_lease_seconds, recovery_timeout=settings.job_recovery_timeout_seconds,
                       retention=timedelta(days=settings.job_retention_days))
    idem = Idempotency(store, owner_id=runner.owner_id, ttl=settings.idempotency_ttl_hours * 3600)
    return JobsService(store=store, bus=bus, runner=runner, idempotency=idem,
                       sse_heartbeat=settings.job_sse_heartbeat_seconds)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    if unknown := unknown_rules(settings.policy_allow):
        raise SettingsError(f"invalid settings: LXDGW_POLICY_ALLOW: unknown policy rules: {', '.join(unknown)}")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        secure_data_dir(settings.data_dir)
        configured = remote_specs(settings)
        registry = RemoteRegistry(configured + persisted_remotes(settings.data_dir, {r.name for r in configured}),
                                  timeout=settings.lxd_timeout_seconds)
        app.state.remotes = registry
        mirror = app.state.mirror = Mirror(registry.get, MIRRORED, enabled=settings.read_model,
                                           reconcile=settings.read_model_reconcile_seconds,
                                           max_projects=settings.read_model_projects,
                                           after_large_load=footprint.return_free_heap)
        jobs = jobs_service(settings, app.state.job_kinds)
        jobs.runner.before_end = partial(touch_after_job, mirror)
        jobs.runner.backend_of = registry.backend_title  # a failed job's problem names LXD or Incus
        bind_workflows(jobs.runner, remotes=registry, settings=settings, owners=app.state.owners, mirror=mirror)
        try:
            await jobs.start()  # opens the job database, prunes, settles jobs a dead gateway left running
        except BaseException:
            await registry.aclose()
            raise
        app.state.jobs = jobs
        if app.state.shared is not None:  # PostgreSQL: tokens, tickets, run-time remotes in the database
            app.state.shared.on_remotes = partial(follow_remotes, registry, mirror, {r.name for r in configured})
            app.state.shared.tokens.on_change = app.state.streams.wake  # another process revoked one
            await app.state.shared.start(jobs.store)
        app.state.metrics.bind(remotes=registry, jobs=jobs, mirror=mirror)
        app.state.streams.start()
        mirror.start([s.name for s in registry.specs()])
        try:
            yield
        finally:
            try:
                await app.state.streams.stop()
                if app.state.shared is not None:
                    await app.state.shared.stop()
                await jobs.stop(settings.shutdown_grace_seconds)
            finally:
                await mirror.aclose()
                await registry.aclose()

    app = FastAPI(
        title="lxd-gateway",
        version="0.1.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=_route_id,
        openapi_tags=openapi_tags(),
    )
    app.state.settings = settings
    app.state.job_kinds = JobKinds(JOB_KINDS)
    shared = app.state.shared = shared_state(settings)
    if shared is None:
        app.state.tokens = TokenStore(settings.tokens_path)
        app.state.tickets = TicketBook(app.state.tokens)
        app.state.remote_store = RemoteStore(settings.data_dir)
    else:
        app.state.tokens = shared.tokens
        app.state.tickets = SharedTicketBook(shared.tokens, shared.tickets)
        app.state.remote_store = shared.remotes
    app.state.streams = OpenStreams(app.state.tokens)
    app.state.owners = OperationOwners()
    app.state.rate_limit = RateLimit(settings.rate_limit)
    app.state.auth_failure_limit = RateLimit(settings.auth_failure_rate_limit)
    if not settings.auth_enabled:
        log.warning("authentication is turned off (LXDGW_AUTH_ENABLED=false): anyone who reaches %s is admin",
                    settings.bind)
    install_error_handlers(app)
    install_docs(app)
    install_console(app)
    app.include_router(health_router)
    app.include_router(jobs_router)
    for router in (containers_router, snapshots_router, container_exec_router, container_files_router,
                   events_router):
        app.include_router(router)
    for module in load_extensions(settings.extensions):
        install = getattr(module, "install", None)
        if callable(install):
            install(app)
    app.include_router(tokens_router)
    app.include_router(metrics_router)
    app.include_router(audit_router)
    for router in (images_router, profiles_router, networks_router, storage_router, projects_router,
                   certificates_router, server_router, cluster_router, remotes_router):
        app.include_router(router)
    app.state.metrics = Metrics()
    app.add_middleware(AllRemotes, timeout=settings.lxd_timeout_seconds + 5)
    app.add_middleware(FastReads, reads=FAST_READS)
    app.add_middleware(StreamGuardMiddleware, streams=app.state.streams)
    app.add_middleware(MethodCheckMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(AuditMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_body=settings.max_body_bytes, max_upload=settings.max_upload_bytes)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_credentials=False,
                           allow_methods=["*"], allow_headers=["Authorization", "Content-Type", "If-Match",
                                                              "Idempotency-Key", "X-Request-ID"],
                           expose_headers=["ETag", "Location", "X-Request-ID", "Idempotent-Replayed"])
    app.add_middleware(RequestIdMiddleware)

    original_openapi = app.openapi

    def openapi() -> dict:  # type: ignore[type-arg]
        if app.openapi_schema is None:
            schema = original_openapi()
            components = schema.setdefault("components", {})
            components.setdefault("schemas", {})["Problem"] = Problem.model_json_schema(
                ref_template="#/components/schemas/{model}")
            components["securitySchemes"] = {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "An API token (`python -m app tokens create NAME --scope read`)."}}
            schema["security"] = [{"bearer": []}]
            complete_document(schema, app, job_kinds=app.state.job_kinds.all(), job_problem=JobProblem)
            for path in PUBLIC_PATHS:
                for op in schema["paths"].get(path, {}).values():
                    op["security"] = []
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    install_asyncapi(app)
    return app
