"""Prometheus metrics of the gateway, in one registry per app (tests build many apps in one process).

HTTP requests are counted by route template (never the raw path: bounded cardinality), method and status, and
timed with a wall clock. Other layers record through the small functions at the bottom, so `app.lxd` and
`app.jobs` need no knowledge of Prometheus: they are handed these callables as hooks.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http.middleware import HTTPMiddleware

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter("lxdgw_http_requests_total", "HTTP requests answered",
                                     ["route", "method", "status"], registry=r)
        self.http_latency = Histogram("lxdgw_http_request_duration_seconds", "HTTP request latency",
                                      ["route", "method"], buckets=LATENCY_BUCKETS, registry=r)
        self.lxd_requests = Counter("lxdgw_lxd_requests_total", "requests sent to LXD",
                                    ["remote", "method", "outcome"], registry=r)
        self.lxd_latency = Histogram("lxdgw_lxd_request_duration_seconds", "LXD request latency",
                                     ["remote", "method"], buckets=LATENCY_BUCKETS, registry=r)
        self.jobs = Counter("lxdgw_jobs_total", "jobs finished", ["kind", "status"], registry=r)
        self.job_duration = Histogram("lxdgw_job_duration_seconds", "job duration", ["kind"],
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.events_subscribers = 0
        """Open `/v1/events` websockets (kept by that route)."""
        self._live = _LiveCollector(self)
        r.register(self._live)

    def bind(self, *, remotes: Any, jobs: Any, mirror: Any = None) -> None:
        """Read live figures at scrape time: LXD events reconnects per remote, job stream subscribers, the read
        model's state."""
        self._live.remotes, self._live.jobs, self._live.mirror = remotes, jobs, mirror
        for spec in remotes.specs():
            self.observe_remote(spec.name, remotes.get(spec.name))
        remotes.on_client = self.observe_remote
        jobs.runner.on_finished = self.job_ended

    def observe_remote(self, name: str, client: Any) -> None:
        client.transport.observer = lambda method, seconds, outcome: self.lxd_call(name, method, seconds, outcome)

    def job_ended(self, job: Any) -> None:
        seconds = (job.finished_at - job.started_at).total_seconds() if job.started_at and job.finished_at else None
        self.job_finished(job.kind, str(job.status), seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def lxd_call(self, remote: str, method: str, seconds: float, outcome: str) -> None:
        self.lxd_requests.labels(remote, method, outcome).inc()
        self.lxd_latency.labels(remote, method).observe(seconds)

    def job_finished(self, kind: str, status: str, seconds: float | None) -> None:
        self.jobs.labels(kind, status).inc()
        if seconds is not None:
            self.job_duration.labels(kind).observe(seconds)


class MetricsMiddleware(HTTPMiddleware):
    """Counts and times every HTTP request by its route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        super().__init__(app)
        self.metrics = metrics

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or ("unmatched" if status == 404 else "other")
            method = scope["method"]
            self.metrics.http_requests.labels(template, method, str(status)).inc()
            self.metrics.http_latency.labels(template, method).observe(time.perf_counter() - start)


class _LiveCollector(Collector):
    """Figures owned by other objects, read when Prometheus scrapes."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.remotes: Any = None
        self.jobs: Any = None
        self.mirror: Any = None

    def collect(self) -> Iterator[Metric]:
        subs = GaugeMetricFamily("lxdgw_websocket_subscribers", "open websocket and SSE subscribers",
                                 labels=["stream"])
        subs.add_metric(["jobs"], self.jobs.bus.subscriber_count if self.jobs is not None else 0)
        subs.add_metric(["events"], self.metrics.events_subscribers)
        yield subs
        reconnects = CounterMetricFamily("lxdgw_lxd_events_reconnects", "reconnections of LXD event streams",
                                         labels=["remote"])
        if self.remotes is not None:
            for spec in self.remotes.specs():
                reconnects.add_metric([spec.name], self.remotes.get(spec.name).events.reconnect_count)
        yield reconnects
        if self.remotes is not None:
            up = GaugeMetricFamily("lxdgw_remote_up", "1 when the remote answered its last check (readiness "
                                   "probes; unknown until the first), else 0", labels=["remote"])
            info = GaugeMetricFamily("lxdgw_remote_info", "the remote's backend, version and whether it is a "
                                     "cluster, once known", labels=["remote", "backend", "version", "clustered"])
            for spec in self.remotes.specs():
                last = self.remotes.last_check(spec.name)
                if last is not None:
                    up.add_metric([spec.name], 1.0 if last is True else 0.0)
                facts = self.remotes.get(spec.name).server.cached
                if facts is not None:
                    info.add_metric([spec.name, facts.environment.server or "lxd", facts.version,
                                     "true" if facts.clustered else "false"], 1.0)
            yield from (up, info)
        if self.mirror is None:
            return
        stats = self.mirror.stats()
        in_sync = GaugeMetricFamily("lxdgw_read_model_in_sync", "1 while the read model of a remote is in sync with "
                                    "its events stream (reads are answered from it)", labels=["remote"])
        objects = GaugeMetricFamily("lxdgw_read_model_objects", "objects held by the read model", labels=["remote"])
        served = CounterMetricFamily("lxdgw_read_model_reads", "reads of mirrored collections by where they were "
                                     "answered from (hit: the model; miss, bypass: LXD)", labels=["remote", "source"])
        reloads = CounterMetricFamily("lxdgw_read_model_reloads", "full reloads of a remote's model (start, and "
                                      "after its events stream dropped)", labels=["remote"])
        lxd_reads = CounterMetricFamily("lxdgw_read_model_lxd_requests", "requests the read model made of LXD to keep "
                                        "in sync (read: one object; listing: a collection)", labels=["remote", "kind"])
        for name, st in stats.items():
            lxd_reads.add_metric([name, "read"], float(st["reads"]))  # type: ignore[arg-type]
            lxd_reads.add_metric([name, "listing"], float(st["listings"]))  # type: ignore[arg-type]
            in_sync.add_metric([name], 1.0 if st["synced"] else 0.0)
            objects.add_metric([name], float(st["objects"]))  # type: ignore[arg-type]
            reloads.add_metric([name], float(st["reloads"]))  # type: ignore[arg-type]
            for source, count in st["served"].items():  # type: ignore[attr-defined]
                served.add_metric([name, source], float(count))
        yield from (in_sync, objects, served, reloads, lxd_reads)
