"""`Client` and `AsyncClient` against a real gateway process and the real LXD: containers, exec, files, job streams
(with resume) and errors."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from lxdgw_client import (
    AsyncClient,
    Client,
    Container,
    GatewayError,
    GatewayUnreachable,
    Job,
    JobFailed,
    JobWaitTimeout,
    Page,
    Unauthorized,
)

from tests.client.support import Gateway, new_name
from tests.containers.support import free_port


@pytest.fixture(scope="module")
def running(gateway: Gateway) -> str:
    name = new_name()
    with Client(gateway.url, gateway.token) as gw:
        job = gw.jobs.wait(gw.containers.create(name, "busybox"), timeout=120, check=True)
        assert job.status == "succeeded"
    return name


def test_container_lifecycle(gateway: Gateway) -> None:
    name = new_name()
    with Client(gateway.url, gateway.token) as gw:
        created = gw.containers.create(name, "busybox", config={"user.tier": "test"}, start=False, wait=120)
        assert isinstance(created, Job) and created.status == "succeeded", created
        assert created.kind == "container.create" and created.resource == f"/v1/containers/{name}"
        c = gw.containers.get(name)
        assert isinstance(c, Container) and c.status == "Stopped" and c.metadata == {"tier": "test"}
        page = gw.containers.list(prefix=name)
        assert isinstance(page, Page) and [x.name for x in page.items] == [name] and page.next_cursor is None
        started = gw.jobs.wait(gw.containers.start(name), timeout=60, check=True)
        assert started.kind == "container.start"
        assert gw.containers.get(name).status == "Running"
        assert name in [x.name for x in gw.containers.list_all(status=["Running"])]
        gw.jobs.wait(gw.containers.stop(name, force=True), timeout=60, check=True)
        assert gw.containers.get(name).status == "Stopped"
        gw.jobs.wait(gw.containers.delete(name), timeout=60, check=True)
        with pytest.raises(GatewayError) as missing:
            gw.containers.get(name)
    assert missing.value.status == 404 and missing.value.title and name in (missing.value.detail or "")
    assert missing.value.problem is not None and missing.value.problem.request_id


def test_every_job_request_carries_an_idempotency_key(gateway: Gateway, running: str) -> None:
    with Client(gateway.url, gateway.token) as gw:
        first = gw.containers.exec(running, ["true"], idempotency_key=f"{running}-k1")
        replay = gw.containers.exec(running, ["true"], idempotency_key=f"{running}-k1")
        assert replay.id == first.id
        # without a key given, each call is a new job (a new key each time), never a replay of another
        a, b = gw.containers.exec(running, ["true"]), gw.containers.exec(running, ["true"])
        assert len({first.id, a.id, b.id}) == 3
        # the same key with another request is a conflict
        with pytest.raises(GatewayError) as clash:
            gw.containers.exec(running, ["false"], idempotency_key=f"{running}-k1")
        assert clash.value.status == 409
        for job in (first, a, b):
            gw.jobs.wait(job, timeout=60)


def test_exec_result_and_output_stream(gateway: Gateway, running: str) -> None:
    with Client(gateway.url, gateway.token) as gw:
        job = gw.containers.exec(running, ["sh", "-c", "echo one; echo two >&2; read x; echo got $x; exit 7"],
                                 stdin="input\n", environment={"LANG": "C"})
        messages = list(gw.jobs.stream(job))
        assert messages[-1].type == "end" and messages[-1].job.status == "succeeded"
        seqs = [m.seq for m in messages]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        out = b"".join(m.output[1] for m in messages if m.output and m.output[0] == "stdout")
        err = b"".join(m.output[1] for m in messages if m.output and m.output[0] == "stderr")
        assert (out, err) == (b"one\ngot input\n", b"two\n")
        result = gw.jobs.get(job).exec_result()
        assert (result.exit_code, result.stdout, result.stderr) == (7, "one\ngot input\n", "two\n")


def test_a_stream_resumes_after_a_seq_without_repeats(gateway: Gateway, running: str) -> None:
    with Client(gateway.url, gateway.token) as gw:
        job = gw.containers.exec(running, ["sh", "-c", "for i in 1 2 3 4 5; do echo $i; sleep 0.2; done"])
        seen = []
        for message in gw.jobs.stream(job):  # read the first three messages, then drop the stream
            seen.append(message)
            if len(seen) == 3:
                break
        rest = list(gw.jobs.stream(job, after=seen[-1].seq))  # Last-Event-ID
        assert rest and all(m.seq > seen[-1].seq for m in rest)
        assert rest[-1].type == "end"
        out = b"".join(m.output[1] for m in (*seen, *rest) if m.output)
        assert out == b"1\n2\n3\n4\n5\n"
        # an ended job's stream: its snapshot, then end
        ended = list(gw.jobs.stream(job, after=None))
        assert [m.type for m in ended] == ["snapshot", "end"] and ended[-1].job.status == "succeeded"


def test_files_push_pull_delete(gateway: Gateway, running: str, tmp_path: Path) -> None:
    data = b"\x00\xffbinary" * 10_000
    (tmp_path / "a.bin").write_bytes(data)
    with Client(gateway.url, gateway.token) as gw:
        written = gw.containers.push(running, "/root/a.bin", tmp_path / "a.bin", mode=0o640)
        assert (written.path, written.size) == ("/root/a.bin", len(data))
        sink = io.BytesIO()
        assert gw.containers.pull(running, "/root/a.bin", sink) == len(data)
        assert sink.getvalue() == data
        gw.containers.push(running, "/root/b.txt", (chunk for chunk in (b"one ", b"two")))
        gw.containers.pull(running, "/root/b.txt", tmp_path / "b.txt")
        assert (tmp_path / "b.txt").read_bytes() == b"one two"
        with pytest.raises(IsADirectoryError):
            gw.containers.pull(running, "/root", io.BytesIO())
        gw.containers.delete_file(running, "/root/b.txt")
        with pytest.raises(GatewayError) as gone:
            gw.containers.pull(running, "/root/b.txt", io.BytesIO())
        assert gone.value.status == 404


def test_wait_timeout_cancel_and_failed_jobs(gateway: Gateway, running: str) -> None:
    with Client(gateway.url, gateway.token) as gw:
        job = gw.containers.exec(running, ["sleep", "60"])
        with pytest.raises(JobWaitTimeout) as late:
            gw.jobs.wait(job, timeout=1)
        assert isinstance(late.value, GatewayError) and isinstance(late.value, TimeoutError)
        assert late.value.job.status == "running"
        gw.jobs.cancel(job)
        assert gw.jobs.wait(job, timeout=60).status == "cancelled"
        with pytest.raises(GatewayError) as ended:
            gw.jobs.cancel(job)
        assert ended.value.status == 409
        failed = gw.containers.exec(running, ["sleep", "30"], timeout=0.5)
        with pytest.raises(JobFailed) as why:
            gw.jobs.wait(failed, timeout=60, check=True)
        assert why.value.job.status == "failed" and why.value.problem is not None
        assert why.value.type is not None and why.value.type.endswith("exec-timeout")
        assert failed.id in [j.id for j in gw.jobs.list(kind="container.exec", limit=100).items]


def test_errors_carry_the_problem(gateway: Gateway) -> None:
    with Client(gateway.url, gateway.token) as gw:
        with pytest.raises(GatewayError) as invalid:
            gw.containers.create("-bad name-", "busybox")
        assert invalid.value.status == 422 and invalid.value.problem is not None
        assert invalid.value.problem.errors and invalid.value.problem.errors[0].field
        with pytest.raises(GatewayError) as forbidden:
            gw.request("GET", "/v1/tokens")  # admin only
        assert forbidden.value.status == 403
        assert gw.whoami()["name"] == "ci"
    with Client(gateway.url, "lxdgw_wrong-token-000000000000000000000") as gw, pytest.raises(Unauthorized) as bad:
        gw.containers.list()
    assert bad.value.status == 401 and isinstance(bad.value, GatewayError)
    with Client(f"http://127.0.0.1:{free_port()}", gateway.token) as gw, pytest.raises(GatewayUnreachable) as down:
        gw.containers.list()
    assert down.value.status is None and isinstance(down.value, GatewayError)


def test_url_and_token_from_the_environment(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LXDGW_URL", gateway.url)
    monkeypatch.setenv("LXDGW_TOKEN", gateway.token)
    with Client() as gw:
        assert gw.base_url == gateway.url
        assert gw.whoami()["name"] == "ci"


# -- the same through AsyncClient ----------------------------------------------------------------------------------

async def test_async_containers_exec_files_and_streams(gateway: Gateway, running: str, tmp_path: Path) -> None:
    async with AsyncClient(gateway.url, gateway.token) as gw:
        c = await gw.containers.get(running)
        assert c.status == "Running"
        assert running in [x.name for x in (await gw.containers.list(prefix=running)).items]
        job = await gw.containers.exec(running, ["sh", "-c", "echo async; exit 2"])
        messages = [m async for m in gw.jobs.stream(job)]
        assert messages[-1].type == "end"
        assert b"".join(m.output[1] for m in messages if m.output) == b"async\n"
        done = await gw.jobs.wait(job, timeout=30, check=True)
        assert done.exec_result().exit_code == 2
        (tmp_path / "up.txt").write_bytes(b"async file")
        written = await gw.containers.push(running, "/root/async.txt", tmp_path / "up.txt")
        assert written.size == 10

        async def chunks() -> AsyncIterator[bytes]:
            yield b"streamed "
            yield b"up"

        await gw.containers.push(running, "/root/async2.txt", chunks())
        sink = io.BytesIO()
        await gw.containers.pull(running, "/root/async2.txt", sink)
        assert sink.getvalue() == b"streamed up"
        found = await gw.jobs.wait(await gw.images.find(alias="busybox"), timeout=60, check=True)
        assert found.result["local"] is True


async def test_async_lifecycle_and_errors(gateway: Gateway) -> None:
    name = new_name()
    async with AsyncClient(gateway.url, gateway.token) as gw:
        created = await gw.jobs.wait(await gw.containers.create(name, "busybox"), timeout=120, check=True)
        assert created.result["name"] == name
        stopped = await gw.containers.stop(name, force=True, wait=60)
        assert stopped.status == "succeeded"
        deleted = await gw.containers.delete(name)
        assert [m.type async for m in gw.jobs.stream(deleted)][-1] == "end"
        with pytest.raises(GatewayError) as missing:
            await gw.containers.get(name)
        assert missing.value.status == 404
        with pytest.raises(JobFailed) as failed:
            await gw.jobs.wait(await gw.containers.create(new_name(), "no-such-alias"), timeout=60, check=True)
        assert failed.value.job.kind == "container.create" and failed.value.title == "Image not found"
    async with AsyncClient(f"http://127.0.0.1:{free_port()}") as down:
        with pytest.raises(GatewayUnreachable):
            await down.jobs.list()
