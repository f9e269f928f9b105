"""`lxd-gateway-client` as a subprocess against a real gateway process and the real LXD: what a CI job sees
(output, progress, exit codes)."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
from pathlib import Path

import pytest
from lxdgw_client import Client
from lxdgw_client.cli import EXIT_CANCELLED, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TIMEOUT, EXIT_UNREACHABLE

from tests.client.support import Gateway, cli_path, new_name
from tests.containers.support import free_port


@pytest.fixture(scope="module")
def running(gateway: Gateway) -> str:
    """A running container, launched through the command line."""
    name = new_name()
    run = gateway.cli("launch", name, "--image", "busybox", "--wait")
    assert run.returncode == 0, run.stderr
    return name


def test_launch_with_wait_shows_progress_and_exits_0(gateway: Gateway) -> None:
    name = new_name()
    run = gateway.cli("launch", name, "--image", "busybox", "--config", "user.role=ci", "--profile", "default",
                      "--wait", "--idempotency-key", f"{name}-create")
    assert run.returncode == 0, run.stderr
    # progress on stderr, as plain lines (not a terminal): the job's own stages, from its stream
    progress = [line for line in run.stderr.splitlines() if line.startswith("progress: ")]
    assert progress, run.stderr
    assert any("container" in line.lower() or "image" in line.lower() for line in progress), progress
    assert run.stdout.startswith("job ") and " container.create succeeded " in run.stdout, run.stdout
    with Client(gateway.url, gateway.token) as gw:
        c = gw.containers.get(name)
        assert c.status == "Running" and c.config["user.role"] == "ci"
    # the same key again answers the same job: no second container, the same id printed
    again = gateway.cli("launch", name, "--image", "busybox", "--config", "user.role=ci", "--profile", "default",
                        "--idempotency-key", f"{name}-create", "-o", "json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["id"] == run.stdout.split()[1]

    deleted = gateway.cli("delete", name, "--wait", "-o", "json")
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout)["status"] == "succeeded"


def _on_a_terminal(gateway: Gateway, *args: str) -> tuple[int, str]:
    """Run the command line with stdout and stderr on a pseudo-terminal, as a person would: the exit code and what
    it wrote, without its colour and cursor codes."""
    primary, secondary = pty.openpty()
    env = gateway.env() | {"TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    proc = subprocess.Popen([cli_path(), *args], env=env, stdin=subprocess.DEVNULL, stdout=secondary,
                            stderr=secondary)
    os.close(secondary)
    screen = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        screen += chunk
    os.close(primary)
    return proc.wait(60), re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode(errors="replace"))


def test_on_a_terminal_launch_shows_a_live_progress_bar_and_ls_a_table(gateway: Gateway) -> None:
    name = new_name()
    code, screen = _on_a_terminal(gateway, "launch", name, "--image", "busybox", "--wait")
    assert code == 0, screen
    assert "━" in screen and "100%" in screen, screen  # rich's bar, redrawn as the job's stream moves
    assert "container.create succeeded" in screen
    code, screen = _on_a_terminal(gateway, "ls", name)
    assert code == 0, screen
    assert "┃ NAME" in screen and name in screen and "Running" in screen, screen
    assert gateway.cli("delete", name, "--wait").returncode == 0


def test_ls_plain_and_json(gateway: Gateway, running: str) -> None:
    plain = gateway.cli("ls", "lgc")
    assert plain.returncode == 0, plain.stderr
    lines = [line.split("\t") for line in plain.stdout.splitlines()]
    assert lines[0] == ["NAME", "STATUS", "IPV4", "PROFILES", "REMOTE"]
    assert next(cells[:2] for cells in lines if cells[0] == running) == [running, "Running"]
    as_json = gateway.cli("ls", "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    items = json.loads(as_json.stdout)
    assert {"name": running, "status": "Running", "remote": "local"}.items() <= \
        next(c for c in items if c["name"] == running).items()


def test_exec_streams_output_and_exits_with_the_command_code(gateway: Gateway, running: str) -> None:
    run = gateway.cli("exec", running, "--", "sh", "-c", "echo hi; echo oops >&2; exit 3")
    assert run.returncode == 3, run.stderr
    assert run.stdout == "hi\n"
    assert "oops" in run.stderr
    # standard input is passed (as text)
    cat = gateway.cli("exec", running, "--", "sh", "-c", "tr a-z A-Z", input="from stdin\n")
    assert (cat.returncode, cat.stdout) == (0, "FROM STDIN\n"), cat.stderr


def test_exec_output_arrives_while_the_command_runs(gateway: Gateway, running: str) -> None:
    key = f"{running}-streamed"
    command = ["sh", "-c", "echo first; sleep 5; echo second"]
    proc = gateway.popen("exec", "--idempotency-key", key, running, "--", *command)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "first\n"
        with Client(gateway.url, gateway.token) as gw:  # the same job, by its key: still running
            assert gw.containers.exec(running, command, idempotency_key=key).status == "running"
        assert proc.wait(60) == 0
        assert proc.stdout.read() == "second\n"
    finally:
        proc.kill()
        proc.wait()


def test_ctrl_c_on_exec_cancels_its_job(gateway: Gateway, running: str) -> None:
    key = f"{running}-interrupted"
    proc = gateway.popen("exec", "--idempotency-key", key, running, "--", "sh", "-c", "echo started; sleep 120")
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "started\n"  # it streams the job now
        with Client(gateway.url, gateway.token) as gw:
            job = gw.containers.exec(running, ["sh", "-c", "echo started; sleep 120"], idempotency_key=key)
            assert job.status == "running"  # the same job, replayed by its key
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == EXIT_INTERRUPTED
            assert gw.jobs.wait(job, timeout=30).status == "cancelled"
    finally:
        proc.kill()
        proc.wait()


def test_a_launch_that_fails_exits_1_and_prints_the_problem(gateway: Gateway) -> None:
    name = new_name()
    run = gateway.cli("launch", name, "--image", "no-such-alias-anywhere", "--wait")
    assert run.returncode == EXIT_FAILED, (run.stdout, run.stderr)
    assert " container.create failed" in run.stdout
    error = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert error and "Image not found" in error[0], run.stderr


def test_jobs_watch_a_job_cancelled_elsewhere_exits_3(gateway: Gateway, running: str) -> None:
    with Client(gateway.url, gateway.token) as gw:
        job = gw.containers.exec(running, ["sleep", "120"])
        watch = gateway.popen("jobs", "watch", job.id)
        try:
            assert watch.stderr is not None
            assert watch.stderr.readline().startswith(f"job {job.id} container.exec ")  # it follows the job now
            cancelled = gw.jobs.cancel(job)
            assert cancelled.id == job.id
            assert watch.wait(60) == EXIT_CANCELLED, watch.stderr.read()
            assert "cancelled" in watch.stderr.read()
        finally:
            watch.kill()
            watch.wait()
    # waiting for it now answers at once, with the same code
    waited = gateway.cli("jobs", "wait", job.id, "-o", "json")
    assert waited.returncode == EXIT_CANCELLED
    assert json.loads(waited.stdout)["status"] == "cancelled"


def test_jobs_ls_wait_and_cancel(gateway: Gateway, running: str) -> None:
    with Client(gateway.url, gateway.token) as gw:
        job = gw.containers.exec(running, ["sleep", "60"])
    listed = gateway.cli("jobs", "ls", "--kind", "container.exec", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert job.id in [j["id"] for j in json.loads(listed.stdout)]
    timed_out = gateway.cli("jobs", "wait", job.id, "--timeout", "1")
    assert timed_out.returncode == EXIT_TIMEOUT, timed_out.stderr
    assert "still running" in timed_out.stderr
    cancel = gateway.cli("jobs", "cancel", job.id, "--wait", "-o", "json")
    assert cancel.returncode == 0, cancel.stderr
    assert json.loads(cancel.stdout)["status"] == "cancelled"
    again = gateway.cli("jobs", "cancel", job.id)
    assert again.returncode == EXIT_FAILED and "409" in again.stderr, again.stderr


def test_start_and_stop(gateway: Gateway, running: str) -> None:
    stopped = gateway.cli("stop", running, "--force", "--wait")
    assert stopped.returncode == 0, stopped.stderr
    assert "container.stop succeeded" in stopped.stdout
    started = gateway.cli("start", running, "--wait", "-o", "json")
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["kind"] == "container.start"
    with Client(gateway.url, gateway.token) as gw:
        assert gw.containers.get(running).status == "Running"


def test_file_push_and_pull(gateway: Gateway, running: str, tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    (tmp_path / "up.bin").write_bytes(data)
    pushed = gateway.cli("file", "push", str(tmp_path / "up.bin"), f"{running}/root/up.bin", "--mode", "0600",
                         "-o", "json")
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout)["size"] == len(data)
    pulled = gateway.cli("file", "pull", f"{running}/root/up.bin", str(tmp_path / "down.bin"))
    assert pulled.returncode == 0, pulled.stderr
    assert (tmp_path / "down.bin").read_bytes() == data
    (tmp_path / "note.txt").write_text("a note\n")
    assert gateway.cli("file", "push", str(tmp_path / "note.txt"), f"{running}/root/note.txt").returncode == 0
    to_stdout = gateway.cli("file", "pull", f"{running}/root/note.txt", "-")
    assert (to_stdout.returncode, to_stdout.stdout) == (0, "a note\n"), to_stdout.stderr
    missing = gateway.cli("file", "pull", f"{running}/no/such/file", str(tmp_path / "x"))
    assert missing.returncode == EXIT_FAILED and "404" in missing.stderr, missing.stderr


def test_images_find_and_copy(gateway: Gateway) -> None:
    found = gateway.cli("images", "find", "busybox", "--wait", "-o", "json")
    assert found.returncode == 0, found.stderr
    result = json.loads(found.stdout)["result"]
    assert result["local"] is True and result["fingerprint"]
    alias = new_name()
    copied = gateway.cli("images", "copy", "busybox", "--from", "mirror", "--alias", alias, "--wait")
    assert copied.returncode == 0, copied.stderr
    assert "image.copy succeeded" in copied.stdout
    with Client(gateway.url, gateway.admin) as gw:
        aliases = gw.request("GET", "/v1/images/aliases").json()["items"]
        assert alias in [a["name"] for a in aliases]
        gw.request("DELETE", f"/v1/images/aliases/{alias}")


def test_unreachable_and_unauthorised_exit_4(gateway: Gateway) -> None:
    env_url = f"http://127.0.0.1:{free_port()}"
    down = gateway.cli("--url", env_url, "ls")
    assert down.returncode == EXIT_UNREACHABLE and "cannot reach the gateway" in down.stderr, down.stderr
    wrong = gateway.cli("ls", token="lxdgw_not-a-real-token-at-all-000000")
    assert wrong.returncode == EXIT_UNREACHABLE and "401" in wrong.stderr, wrong.stderr


def test_usage_errors_exit_2(gateway: Gateway) -> None:
    assert gateway.cli("launch", "x").returncode == 2  # --image is required
    assert gateway.cli("launch", "x", "--image", "busybox", "--config", "novalue").returncode == 2
    assert gateway.cli("file", "pull", "no-path-given", "-").returncode == 2
    helped = gateway.cli("--help")
    assert helped.returncode == 0 and "Exit codes" in helped.stdout
