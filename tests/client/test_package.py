"""The client distribution kept in step with the gateway: the same version, every operation of the OpenAPI document
either offered by a method or listed as not offered, the same methods sync and async, and nothing of the server."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx
import lxdgw_client
import pytest
from lxdgw_client import AsyncClient, Client
from lxdgw_client._sse import ServerEvent, SSEParser
from lxdgw_client.operations import NOT_OFFERED, OPERATIONS

ROOT = Path(__file__).resolve().parents[2]


def _operation_ids() -> set[str]:
    document = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    return {op["operationId"] for item in document["paths"].values() for op in item.values()
            if isinstance(op, dict) and "operationId" in op}


def test_the_client_has_the_gateways_version() -> None:
    server = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    client = tomllib.loads((ROOT / "client" / "pyproject.toml").read_text())["project"]
    assert client["version"] == server
    assert lxdgw_client.__version__ == server, "the installed client is not this tree's: pip install -e ./client"
    assert json.loads((ROOT / "openapi" / "openapi.json").read_text())["info"]["version"] == server


def test_the_client_depends_on_httpx_pydantic_typer_rich_only() -> None:
    client = tomllib.loads((ROOT / "client" / "pyproject.toml").read_text())["project"]
    names = {dep.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip() for dep in client["dependencies"]}
    assert names == {"httpx", "pydantic", "typer", "rich"}
    assert client["scripts"] == {"lxd-gateway-client": "lxdgw_client.cli:main"}


def test_the_client_imports_nothing_of_the_server() -> None:
    code = ("import sys, lxdgw_client, lxdgw_client.cli; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('app', 'fastapi', 'starlette', 'uvicorn')); "
            "print(bad); sys.exit(1 if bad else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_operation_is_offered_or_said_not_to_be() -> None:
    ids = _operation_ids()
    assert not set(OPERATIONS) & set(NOT_OFFERED), "an operation is in both tables"
    assert sorted(ids - set(OPERATIONS) - set(NOT_OFFERED)) == [], "operations of the gateway the client does not " \
        "name: map each to a method in OPERATIONS or give the reason in NOT_OFFERED"
    assert sorted((set(OPERATIONS) | set(NOT_OFFERED)) - ids) == [], "operations the gateway no longer has"
    assert all(reason.strip() for reason in NOT_OFFERED.values())


def _method(client: Any, path: str) -> Any:
    target = client
    for part in path.split("."):
        target = getattr(target, part)
    return target


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_each_offered_operation_has_a_sync_and_an_async_method(operation: str) -> None:
    sync, async_ = Client("http://gw"), AsyncClient("http://gw")
    s, a = _method(sync, OPERATIONS[operation]), _method(async_, OPERATIONS[operation])
    assert callable(s) and not inspect.iscoroutinefunction(s) and not inspect.isasyncgenfunction(s)
    assert inspect.iscoroutinefunction(a) or inspect.isasyncgenfunction(a)
    assert list(inspect.signature(s).parameters) == list(inspect.signature(a).parameters)
    sync.close()


def test_sync_and_async_clients_offer_the_same_methods() -> None:
    def surface(obj: object) -> set[str]:
        return {n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n))}

    sync, async_ = Client("http://gw"), AsyncClient("http://gw")
    for ns in ("containers", "jobs", "images"):
        assert surface(getattr(sync, ns)) == surface(getattr(async_, ns)), ns
    assert surface(sync) - {"close"} == surface(async_) - {"aclose"}
    sync.close()


def test_sse_parser_reads_events_comments_and_multiline_data() -> None:
    parser = SSEParser()
    lines = [": heartbeat", "", "event: progress", "id: 3", 'data: {"a":', "data: 1}", "", "retry: 10",
             "data:x", ""]
    events = [e for line in lines if (e := parser.feed(line)) is not None]
    assert events == [ServerEvent("progress", "3", '{"a":\n1}'), ServerEvent("message", "3", "x")]


def _job(status: str = "running") -> dict[str, Any]:
    return {"id": "j1", "kind": "container.exec", "status": status, "created_at": "2026-01-01T00:00:00Z"}


def _sse(seq: int, type_: str, status: str = "running", data: dict[str, Any] | None = None) -> str:
    message: dict[str, Any] = {"type": type_, "seq": seq, "job": _job(status)}
    if data is not None:
        message["data"] = data
    return f"event: {type_}\nid: {seq}\ndata: {json.dumps(message)}\n\n"


class _DroppingStream:
    """A job stream that the gateway closes after two messages (as it does a reader too slow to keep up); the
    client resumes with Last-Event-ID and gets the rest, no message twice."""

    def __init__(self) -> None:
        self.last_event_ids: list[str | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.last_event_ids.append(request.headers.get("last-event-id"))
        if len(self.last_event_ids) == 1:
            body = _sse(1, "snapshot") + _sse(2, "output", data={"stream": "stdout", "text": "a"})
        else:
            body = ": heartbeat\n\n" + _sse(3, "output", data={"stream": "stdout", "b64": "Yg=="}) + \
                _sse(4, "end", "succeeded")
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})


def test_a_dropped_stream_is_resumed_from_the_last_seq() -> None:
    handler = _DroppingStream()
    with Client("http://gw", transport=httpx.MockTransport(handler)) as gw:
        messages = list(gw.jobs.stream("j1"))
    assert [m.seq for m in messages] == [1, 2, 3, 4]
    assert b"".join(m.output[1] for m in messages if m.output) == b"ab"
    assert handler.last_event_ids == ["0", "2"]


async def test_a_dropped_stream_is_resumed_from_the_last_seq_async() -> None:
    handler = _DroppingStream()
    async with AsyncClient("http://gw", transport=httpx.MockTransport(handler)) as gw:
        messages = [m async for m in gw.jobs.stream("j1", after=None)]
    assert [m.type for m in messages] == ["snapshot", "output", "output", "end"]
    assert handler.last_event_ids == [None, "2"]


def test_the_command_prints_its_version_and_its_exit_codes() -> None:
    from tests.client.support import cli_path

    version = subprocess.run([cli_path(), "--version"], capture_output=True, text=True, timeout=60)
    assert (version.returncode, version.stdout) == (0, f"{lxdgw_client.__version__}\n")
    helped = subprocess.run([cli_path(), "--help"], capture_output=True, text=True, timeout=60,
                            env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert helped.returncode == 0 and "Exit codes: 0 success;" in helped.stdout, helped.stdout


def test_models_keep_fields_they_do_not_name() -> None:
    from lxdgw_client import Container, Job

    job = Job.model_validate({**_job("failed"), "error": {"type": "x", "title": "T", "status": 502, "more": 1},
                              "new_field": {"a": 1}})
    assert job.model_extra == {"new_field": {"a": 1}}
    assert job.error is not None and job.error.model_extra == {"more": 1} and job.error.status == 502
    c = Container.model_validate({"name": "c", "status": "Running", "gpu": "none"})
    assert c.model_dump()["gpu"] == "none"
