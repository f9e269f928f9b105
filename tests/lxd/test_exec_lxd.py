"""Exec and console against the real LXD, over every transport."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.lxd import Client, ExecTimeout, NotCancellable

pytestmark = pytest.mark.backends()  # the client's calls run on LXD and on Incus (X-Incus-* headers)


async def test_exit_code_and_separate_streams(client: Client, running: str) -> None:
    r = await client.exec.run(running, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (r.stdout, r.stderr, r.exit_code) == (b"out\n", b"err\n", 3)


async def test_five_megabytes_of_stdout_arrive_intact(client: Client, running: str) -> None:
    size = 5 * 1024 * 1024
    r = await client.exec.run(running, ["head", "-c", str(size), "/dev/urandom"])
    assert r.exit_code == 0 and len(r.stdout) == size and not r.stdout_truncated
    # the content survives: the container's own checksum matches ours
    await client.files.put(running, "/tmp/blob", r.stdout)
    check = await client.exec.run(running, ["md5sum", "/tmp/blob"])
    import hashlib

    assert check.stdout_text.split()[0] == hashlib.md5(r.stdout).hexdigest()


async def test_timeout_kills_the_process(client: Client, running: str) -> None:
    marker = "61.5"  # a sleep duration no other test uses, to find this very process
    t0 = time.monotonic()
    with pytest.raises(ExecTimeout) as info:
        await client.exec.run(running, ["sleep", marker], timeout=1)
    assert time.monotonic() - t0 < 5
    assert info.value.result is not None and info.value.result.timed_out
    deadline = time.monotonic() + 5
    while True:
        ps = await client.exec.run(running, ["ps"])
        if f"sleep {marker}" not in ps.stdout_text:
            break
        assert time.monotonic() < deadline, ps.stdout_text
        await asyncio.sleep(0.2)


async def test_stdin_is_passed_through_and_closed(client: Client, running: str) -> None:
    data = b"line one\nline two\n" * 1000
    r = await client.exec.run(running, ["cat"], stdin=data, timeout=20)
    assert r.exit_code == 0 and r.stdout == data
    r = await client.exec.run(running, ["wc", "-l"], stdin=b"a\nb\nc\n", timeout=20)
    assert r.stdout_text.strip() == "3"
    r = await client.exec.run(running, ["cat"], timeout=20)  # no stdin: EOF at once, cat ends
    assert r.exit_code == 0 and r.stdout == b""


async def test_streamed_output_cap_env_and_cwd(client: Client, running: str) -> None:
    chunks: list[bytes] = []
    r = await client.exec.run(running, ["sh", "-c", "echo $FOO; pwd; head -c 100000 /dev/zero"],
                              environment={"FOO": "bar"}, cwd="/tmp", max_output=1000, on_stdout=chunks.append)
    assert r.stdout.startswith(b"bar\n/tmp\n") and len(r.stdout) == 1000 and r.stdout_truncated
    assert sum(len(c) for c in chunks) == 100000 + len(b"bar\n/tmp\n")


async def test_signal_through_control_socket(client: Client, running: str) -> None:
    async with await client.exec.start(running, ["sleep", "30"]) as proc:
        await proc.signal(15)
        assert await proc.wait(10) == 143


async def test_exec_cannot_be_cancelled_but_cancelling_the_task_kills_it(client: Client, running: str) -> None:
    proc = await client.exec.start(running, ["sleep", "62.5"])
    async with proc:
        with pytest.raises(NotCancellable):
            await proc.operation.cancel()
        with pytest.raises(NotCancellable):  # LXD 5.0 itself answers 400 "This operation can't be cancelled"
            await client.operations.cancel(proc.id)
        task = asyncio.ensure_future(proc.wait())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert proc.operation.done  # killed: the operation ended
    ps = await client.exec.run(running, ["ps"])
    assert "sleep 62.5" not in ps.stdout_text


async def test_interactive_pty(client: Client, running: str) -> None:
    async with await client.exec.start(running, ["sh"], interactive=True, width=100, height=30) as proc:
        await proc.resize(120, 40)
        # LXD 5.0 may drop what a PTY holds when its process exits at once: let the output drain first
        await proc.write(b"stty size; echo marker-$((40+2)); sleep 0.5; exit 5\n")
        out = b""
        async for chunk in proc.stdout:
            out += chunk
        assert await proc.wait(10) == 5
    assert b"marker-42" in out and b"40 120" in out


async def test_console_attach(client: Client, running: str) -> None:
    async with await client.exec.console(running) as console:
        await console.resize(100, 30)
        await console.write(b"\n")
    assert console.operation.done


async def test_console_log(client: Client, fresh: str) -> None:
    # LXD 5.0.2 answers 500 for the log of a running container on this liblxc; a stopped one has its file
    await client.instances.start(fresh)
    await client.instances.stop(fresh, force=True)
    assert isinstance(await client.instances.console_log(fresh), str)
    await client.instances.clear_console_log(fresh)
