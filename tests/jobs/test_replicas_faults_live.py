"""Three gateway processes (`python -m app`) on one PostgreSQL and the real LXD, under faults: one
`Idempotency-Key` sent fifty times at once across the three makes one job and one container; a token revoked
through one process is refused by another at once, and a ticket issued by one opens a stream once, anywhere; a
rolling restart of the three while creates run loses no job and leaves none running; PostgreSQL stopped
(`pg_ctl stop -m immediate`) mid-creates makes requests that need it answer 503 at once, and once it is back the
processes reconnect by themselves and every job is settled."""

from __future__ import annotations

import concurrent.futures
import itertools
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from app.locallxd.daemon import DaemonInfo, free_port
from app.store.tokens import Scope, TokenStore
from tests.jobs.test_replicas_live import LEASE, container_status
from tests.support.gateway import GatewayProcess, gateway_env, start_gateway
from tests.support.postgres import PostgresServer

ENDED = ("succeeded", "failed", "cancelled")
EXTENSION = '["tests.jobs.extension_sleep"]'

StartReplicas = Callable[..., list[GatewayProcess]]


@pytest.fixture
def start_replicas(tmp_path: Path, lxd_daemon: DaemonInfo) -> Iterator[StartReplicas]:
    """Start three gateway processes on the database `url` (short leases, a one-second shutdown grace). Those in
    the list returned at the end (a test may replace one it restarted) are stopped."""
    started: list[list[GatewayProcess]] = []

    def start(url: str, *, auth: bool = False, **extra: str) -> list[GatewayProcess]:
        group: list[GatewayProcess] = []
        started.append(group)
        for name in ("a", "b", "c"):
            env = gateway_env(lxd_daemon.socket_path, tmp_path / name, free_port(), auth=auth,
                              LXDGW_DATABASE_URL=url, LXDGW_JOB_LEASE_SECONDS=str(LEASE),
                              LXDGW_SHUTDOWN_GRACE_SECONDS="1", LXDGW_RATE_LIMIT="", **extra)
            gateway = start_gateway(env, log=tmp_path / name / "gateway.log")
            group.append(gateway)
        return group

    try:
        yield start
    finally:
        for g in itertools.chain.from_iterable(started):
            g.stop()


def create_body(name: str) -> dict[str, Any]:
    return {"name": name, "image": {"alias": "busybox"}}


def stored_jobs(url: str, kind: str = "container.create") -> list[tuple[str, str, str | None]]:
    """(id, status, resource) of every stored job of `kind`."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT id, status, resource FROM jobs WHERE kind=%s", (kind,)).fetchall()
    return [(str(r[0]), str(r[1]), r[2]) for r in rows]


class Replicas:
    """The processes of a test, some of which restart: which one answers now, and whether one restarted while a
    request to it was in flight (a request cut off by the restart is not held against it)."""

    def __init__(self, gateways: list[GatewayProcess]) -> None:
        self.gateways = gateways
        self.down: set[int] = set()
        self.restarts = [0] * len(gateways)
        self.lock = threading.Lock()

    def pick(self, turn: int) -> tuple[int, GatewayProcess, int]:
        with self.lock:
            up = [i for i in range(len(self.gateways)) if i not in self.down]
            i = up[turn % len(up)]
            return i, self.gateways[i], self.restarts[i]

    def restart(self, i: int) -> None:
        with self.lock:
            self.down.add(i)
            self.restarts[i] += 1
        self.gateways[i] = self.gateways[i].restarted()
        with self.lock:
            self.down.discard(i)

    def restarted_since(self, i: int, generation: int) -> bool:
        with self.lock:
            return self.restarts[i] != generation


def follow(replicas: Replicas, job_id: str, timeout: float, *, retry: tuple[int, ...] = (),
           headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The job once ended, long-polled (`?wait=`) on the processes in turn (skipping one that restarts); the codes
    in `retry` are asked again."""
    deadline = time.monotonic() + timeout
    for turn in itertools.count():
        i, gateway, generation = replicas.pick(turn)
        try:
            r = httpx.get(f"{gateway.base}/v1/jobs/{job_id}", params={"wait": 5}, headers=headers, timeout=15)
        except httpx.HTTPError as exc:
            assert replicas.restarted_since(i, generation), f"{gateway.base}: {exc!r}"
            continue
        if r.status_code == 200 and r.json()["status"] in ENDED:
            return dict(r.json())
        assert r.status_code in (200, *retry) or replicas.restarted_since(i, generation), \
            (gateway.base, r.status_code, r.text)
        assert time.monotonic() < deadline, f"job {job_id} not ended within {timeout}s: {r.text}"
        if r.status_code != 200:
            time.sleep(0.1)
    raise AssertionError("unreachable")


def delete_containers(gateway: GatewayProcess, names: list[str]) -> None:
    def delete(name: str) -> None:
        httpx.delete(f"{gateway.base}/v1/containers/{name}", params={"force": "true", "wait": 60}, timeout=70)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(delete, names))


def sse_end(gateway: GatewayProcess, job_id: str, **params: str) -> tuple[int, list[str], dict[str, Any] | None]:
    """(status code, event types, the job `end` carried) of the job's SSE stream on `gateway`."""
    import json

    types: list[str] = []
    last: dict[str, Any] | None = None
    with httpx.stream("GET", f"{gateway.base}/v1/jobs/{job_id}/events", params=params, timeout=30) as resp:
        if resp.status_code != 200:
            resp.read()
            return resp.status_code, types, None
        for line in resp.iter_lines():
            if line.startswith("event: "):
                types.append(line[len("event: "):])
            elif line.startswith("data: ") and types and types[-1] == "end":
                last = json.loads(line[len("data: "):])["job"]
    return 200, types, last


def stream_to_end(replicas: Replicas, job_id: str, timeout: float, first: int) -> dict[str, Any]:
    """Follow the job's SSE stream to `end`, starting on process `first`; when the process serving it restarts
    (the stream is cut), go on from another with `Last-Event-ID`. Returns what was seen: the types, the ids (seq) in
    order, the reconnects, and the job `end` carried."""
    import json

    deadline = time.monotonic() + timeout
    seen: dict[str, Any] = {"types": [], "ids": [], "reconnects": 0, "end": None}
    for turn in itertools.count(first):
        i, gateway, generation = replicas.pick(turn)
        headers = {"Last-Event-ID": str(seen["ids"][-1])} if seen["ids"] else {}
        try:
            with httpx.stream("GET", f"{gateway.base}/v1/jobs/{job_id}/events", headers=headers,
                              timeout=httpx.Timeout(30, read=40)) as resp:
                assert resp.status_code == 200 or replicas.restarted_since(i, generation), (gateway.base, resp)
                if resp.status_code != 200:
                    continue
                for line in resp.iter_lines():
                    if line.startswith("event: "):
                        seen["types"].append(line[len("event: "):])
                    elif line.startswith("id: "):
                        seen["ids"].append(int(line[len("id: "):]))
                    elif line.startswith("data: ") and seen["types"][-1] == "end":
                        seen["end"] = json.loads(line[len("data: "):])["job"]
                        return seen
        except httpx.HTTPError as exc:
            assert replicas.restarted_since(i, generation), f"{gateway.base}: {exc!r}"
        # the stream ended without `end`: only a process that is restarting may do that
        assert replicas.restarted_since(i, generation), (gateway.base, seen["types"][-5:])
        assert time.monotonic() < deadline, f"no end of job {job_id} within {timeout}s: {seen['types'][-5:]}"
        seen["reconnects"] += 1
        time.sleep(0.1)
    raise AssertionError("unreachable")


def test_one_idempotency_key_sent_fifty_times_across_three_processes_makes_one_job(
        start_replicas: StartReplicas, postgres_url: str, lxd_daemon: DaemonInfo) -> None:
    gateways = start_replicas(postgres_url)
    name = f"idem-{uuid.uuid4().hex[:8]}"
    key = f"key-{uuid.uuid4().hex}"
    barrier = threading.Barrier(50)

    def send(i: int) -> httpx.Response:
        with httpx.Client(timeout=60) as client:
            barrier.wait()
            return client.post(f"{gateways[i % 3].base}/v1/containers", json=create_body(name),
                               headers={"Idempotency-Key": key})

    try:
        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(send, range(50)))
        ids = {r.json().get("id") for r in answers}
        assert len(ids) == 1, [(r.status_code, r.text) for r in answers]
        job_id = ids.pop()
        first = [r for r in answers if r.headers.get("Idempotent-Replayed") != "true"]
        assert len(first) == 1 and first[0].status_code == 202, [(r.status_code, r.headers) for r in first]
        for r in answers:  # a replay answers the job as it is: 202 while it runs, 200 once it has ended
            assert (r.status_code, r.json()["status"] in ENDED) in ((202, False), (200, True)), r.text
        print(f"\n50 POSTs with one Idempotency-Key over 3 processes: one job; answers "
              f"{sorted(r.status_code for r in answers).count(202)} x 202, the other replays 200 (the job had ended)")
        assert all(r.headers["Location"] == f"/v1/jobs/{job_id}" for r in answers)
        job = follow(Replicas(gateways), job_id, 120)
        assert job["status"] == "succeeded", job
        assert [j[0] for j in stored_jobs(postgres_url)] == [job_id]
        assert container_status(lxd_daemon, name) == "Running"
        listed = httpx.get(f"{gateways[1].base}/v1/containers", headers={"Cache-Control": "no-cache"},
                           timeout=30).json()["items"]
        assert [c["name"] for c in listed if c["name"].startswith(name)] == [name]
        # sent again after the job ended, to each process: the same job, marked replayed, no new one
        for g in gateways:
            again = httpx.post(f"{g.base}/v1/containers", json=create_body(name), headers={"Idempotency-Key": key},
                               params={"wait": 5}, timeout=30)
            assert again.status_code == 200 and again.json()["id"] == job_id, again.text
            assert again.headers.get("Idempotent-Replayed") == "true"
        assert len(stored_jobs(postgres_url)) == 1
    finally:
        delete_containers(gateways[0], [name])


def test_a_token_revoked_through_one_process_is_refused_by_another_and_a_ticket_opens_one_stream_anywhere(
        start_replicas: StartReplicas, postgres_url: str, tmp_path: Path) -> None:
    _, root = TokenStore(tmp_path / "a" / "tokens.json").create("root", [Scope.admin])
    a, b, c = start_replicas(postgres_url, auth=True, LXDGW_EXTENSIONS=EXTENSION)
    admin = {"Authorization": f"Bearer {root}"}
    with httpx.Client(timeout=30) as http:
        made = http.post(f"{a.base}/v1/tokens", json={"name": "ops", "scopes": ["write"]}, headers=admin)
        assert made.status_code == 201, made.text
        ops = {"Authorization": f"Bearer {made.json()['token']}"}
        assert http.get(f"{b.base}/v1/whoami", headers=ops).json()["name"] == "ops"  # made on a: b knows it at once
        assert http.get(f"{c.base}/v1/whoami", headers=ops).status_code == 200

        # a ticket issued by a opens a stream once, on b; a second use fails on every process
        r = http.post(f"{c.base}/v1/test-jobs", json={"steps": 2, "interval": 0.1}, params={"wait": 30}, headers=ops)
        assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
        job_id = r.json()["id"]
        ticket = http.post(f"{a.base}/v1/tickets", headers=ops).json()["ticket"]
        code, types, end = sse_end(b, job_id, ticket=ticket)
        assert code == 200 and types[-1] == "end" and end is not None and end["status"] == "succeeded", types
        for g in (a, b, c):
            assert sse_end(g, job_id, ticket=ticket)[0] == 401
        # an unused ticket of a token dies with it, on every process
        spare = http.post(f"{a.base}/v1/tickets", headers=ops).json()["ticket"]

        r = http.post(f"{a.base}/v1/test-jobs", json={"steps": 600, "interval": 1}, headers=ops)
        assert r.status_code == 202, r.text
        long_job = r.json()["id"]
        revoked = http.delete(f"{a.base}/v1/tokens/ops", headers=admin)
        assert revoked.status_code == 204, revoked.text
        for g in (b, c, a):  # the next request, on each process
            refused = http.get(f"{g.base}/v1/whoami", headers=ops)
            assert refused.status_code == 401, (g.base, refused.text)
            assert refused.headers["content-type"].startswith("application/problem+json")
        assert sse_end(b, job_id, ticket=spare)[0] == 401

        # long-polls in flight when their process stops answer at once with the job as it is (the process that runs
        # it, and one that reads it from the database), not when the server's grace for open requests runs out
        def poll(g: GatewayProcess) -> tuple[httpx.Response, float]:
            r = httpx.get(f"{g.base}/v1/jobs/{long_job}", params={"wait": 60}, headers=admin, timeout=70)
            return r, time.monotonic()

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            polls = [pool.submit(poll, g) for g in (a, c)]
            time.sleep(1.0)
            stopping = time.monotonic()
            for g in (a, c):
                g.proc.send_signal(signal.SIGTERM)
            answers = [f.result() for f in polls]
        print(f"\nlong-polls answered {', '.join(f'{t - stopping:.3f}s' for _, t in answers)} after SIGTERM")
        for r, answered in answers:
            assert r.status_code == 200 and r.json()["status"] == "running", r.text
            assert answered - stopping < 0.9  # the grace for open requests is 1 s
        a.stop()
        c.stop()
        job = follow(Replicas([b]), long_job, 2 * LEASE + 10, headers=admin)  # b takes the job of a over and settles it
        assert job["status"] == "failed" and job["error"]["type"].endswith("/rolled-back"), job


def test_a_rolling_restart_of_three_processes_during_creates_loses_no_job(
        start_replicas: StartReplicas, postgres_url: str, lxd_daemon: DaemonInfo) -> None:
    gateways = start_replicas(postgres_url)
    names = [f"roll-{uuid.uuid4().hex[:6]}-{i}" for i in range(20)]
    replicas = Replicas(gateways)

    def create(i: int) -> str:
        r = httpx.post(f"{gateways[i % 3].base}/v1/containers", json=create_body(names[i]), timeout=60)
        assert r.status_code == 202, r.text
        return str(r.json()["id"])

    try:
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            job_ids = list(pool.map(create, range(20)))
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(40) as pool:
            # each job long-polled on the processes in turn, and streamed (SSE) from one of them, going on from
            # another with Last-Event-ID when that one restarts
            followed = [pool.submit(follow, replicas, job_id, 150) for job_id in job_ids]
            streamed = [pool.submit(stream_to_end, replicas, job_id, 150, n + 1) for n, job_id in enumerate(job_ids)]
            for i in range(3):
                replicas.restart(i)
            restarted = time.monotonic() - started
            jobs = [f.result() for f in followed]
            streams = [f.result() for f in streamed]
        took = time.monotonic() - started
        print(f"\nstreams: {sum(s['reconnects'] for s in streams)} reconnects with Last-Event-ID over 20 jobs")
        for job, seen in zip(jobs, streams, strict=True):
            assert seen["types"][-1] == "end" and seen["end"]["status"] == job["status"], (job["id"], seen["types"])
            assert seen["ids"] == sorted(set(seen["ids"])), (job["id"], seen["ids"])  # no repeat, in order
        outcomes = {s: sum(j["status"] == s for j in jobs) for s in ENDED}
        print(f"\nrolling restart of 3 processes ({restarted:.1f}s) during 20 creates: all ended after {took:.1f}s: "
              f"{outcomes}; failed: {sorted({j['error']['detail'][:60] for j in jobs if j['status'] == 'failed'})}")
        for job, name in zip(jobs, names, strict=True):
            if job["status"] == "failed":
                assert job["error"]["type"].endswith(("/rolled-back", "/gateway-restarted")), job
                assert job["error"]["detail"], job
                assert container_status(lxd_daemon, name) is None, job
            else:
                assert job["status"] == "succeeded", job
                assert container_status(lxd_daemon, name) == "Running", job
        assert {row[1] for row in stored_jobs(postgres_url)} <= {"succeeded", "failed"}
        assert len(stored_jobs(postgres_url)) == 20
        # every process streams every job to its end now
        for g in gateways:
            for job in jobs[:5]:
                code, types, end = sse_end(g, job["id"])
                assert code == 200 and types[-1] == "end" and end is not None, (g.base, types)
                assert end["status"] == job["status"]
    finally:
        delete_containers(gateways[0], names)


def test_postgres_stopped_mid_creates_answers_503_at_once_and_every_job_settles_once_it_is_back(
        start_replicas: StartReplicas, own_postgres_server: PostgresServer, lxd_daemon: DaemonInfo) -> None:
    url = own_postgres_server.url()
    gateways = start_replicas(url)
    names = [f"pgdown-{uuid.uuid4().hex[:6]}-{i}" for i in range(6)]
    job_ids = []
    try:
        for i, name in enumerate(names):
            r = httpx.post(f"{gateways[i % 3].base}/v1/containers", json=create_body(name), timeout=60)
            assert r.status_code == 202, r.text
            job_ids.append(r.json()["id"])
        time.sleep(1.0)  # some creates are under way in LXD
        own_postgres_server.stop("immediate")
        stopped = time.monotonic()
        timings: dict[str, list[float]] = {"create": [], "job": [], "jobs": [], "containers": []}
        codes: dict[str, set[int]] = {k: set() for k in timings}

        def timed(what: str, send: Callable[[], httpx.Response]) -> httpx.Response:
            t = time.monotonic()
            r = send()
            timings[what].append(time.monotonic() - t)
            codes[what].add(r.status_code)
            return r

        with httpx.Client(timeout=10) as http:
            while time.monotonic() - stopped < LEASE + 2:  # past a lease: the processes fence their jobs
                for g in gateways:
                    r = timed("create", lambda g=g: http.post(f"{g.base}/v1/containers",
                                                              json=create_body(f"never-{uuid.uuid4().hex[:6]}")))
                    assert r.status_code == 503, r.text
                    assert r.headers["content-type"].startswith("application/problem+json"), r.text
                    assert r.json()["type"].endswith("/store-unavailable") and "Retry-After" in r.headers, r.text
                    r = timed("job", lambda g=g: http.get(f"{g.base}/v1/jobs/{job_ids[0]}"))
                    assert r.status_code == 503, r.text
                    r = timed("jobs", lambda g=g: http.get(f"{g.base}/v1/jobs"))
                    assert r.status_code == 503, r.text
                    timed("containers", lambda g=g: http.get(f"{g.base}/v1/containers"))
                time.sleep(0.2)
        print("\nPostgreSQL down: " + "; ".join(
            f"{what} {sorted(codes[what])} in at most {max(t):.3f}s ({len(t)} requests)"
            for what, t in timings.items()))
        assert max(max(t) for t in timings.values()) < 2.0
        assert codes["containers"] <= {200, 503}

        own_postgres_server.start()
        back = time.monotonic()
        jobs = [follow(Replicas(gateways), job_id, 90, retry=(503,)) for job_id in job_ids]
        print(f"PostgreSQL back: every job ended {time.monotonic() - back:.1f}s later: "
              f"{[j['status'] for j in jobs]}; failed: "
              f"{[j['error']['detail'] for j in jobs if j['status'] == 'failed']}")
        for job, name in zip(jobs, names, strict=True):
            check_fresh_outcome(lxd_daemon, job, name)
        assert {row[1] for row in stored_jobs(url)} <= {"succeeded", "failed"}
        # the processes, never restarted, take new jobs again
        for g in gateways:
            r = httpx.post(f"{g.base}/v1/containers", json=create_body(f"never-{uuid.uuid4().hex[:6]}"),
                           params={"remote": "nowhere"}, timeout=30)
            assert r.status_code == 404, r.text
            r = httpx.get(f"{g.base}/v1/jobs", timeout=30)
            assert r.status_code == 200, r.text
        after = names[0] + "-after"
        names.append(after)
        r = httpx.post(f"{gateways[2].base}/v1/containers", json=create_body(after), params={"wait": 120},
                       timeout=130)
        assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    finally:
        if not (own_postgres_server.socket_dir / ".s.PGSQL.5432").exists():
            own_postgres_server.start()
        delete_containers(gateways[0], names)


def check_fresh_outcome(daemon: DaemonInfo, job: dict[str, Any], name: str) -> None:
    """Succeeded and running, or failed naming why and gone."""
    if job["status"] == "succeeded":
        assert container_status(daemon, name) == "Running", job
        return
    assert job["status"] == "failed", job
    assert job["error"]["detail"], job
    assert container_status(daemon, name) is None, job
