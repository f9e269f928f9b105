"""The AsyncAPI 3.0 document of the streams (committed as openapi/asyncapi.json, checked for drift beside the
OpenAPI one): served at `GET /asyncapi.json` (no token needed), valid per the AsyncAPI 3.0.0 JSON Schema
(tests/http/data, as published in the `@asyncapi/specs` package, Apache-2.0), one channel per stream of the OpenAPI
document's `x-websockets` and per `?watch=true` collection, and its job messages are the gateway's own."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft7Validator

from app.jobs.bus import JobEvent
from app.jobs.models import Job, JobStatus
from app.main import create_app
from app.settings import RemoteSettings, Settings

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "openapi" / "asyncapi.json"
OPENAPI = ROOT / "openapi" / "openapi.json"
SPEC = Path(__file__).resolve().parent / "data" / "asyncapi-3.0.0.schema.json"


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return json.loads(COMMITTED.read_text())


def payload_validator(doc: dict[str, Any], schema: str) -> Draft7Validator:
    return Draft7Validator({**doc, "$ref": f"#/components/schemas/{schema}"},
                           format_checker=Draft7Validator.FORMAT_CHECKER)


def test_the_document_is_valid_asyncapi_3(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in Draft7Validator(
        json.loads(SPEC.read_text())).iter_errors(doc)]
    assert not errors, errors[:5]


def test_every_stream_has_its_channel(doc: dict[str, Any]) -> None:
    openapi = json.loads(OPENAPI.read_text())
    addresses = {c["address"]: c for c in doc["channels"].values()}
    assert set(openapi["x-websockets"]) <= set(addresses)
    watched = {c["address"] for cid, c in doc["channels"].items()
               if doc["operations"][f"{cid}.send"].get("bindings", {}).get("http", {}).get("query", {})
               .get("required") == ["watch"]}
    assert watched == {"/v1/containers", "/v1/images"}
    for cid, channel in doc["channels"].items():
        for ref in channel["messages"].values():
            message = doc["components"]["messages"][ref["$ref"].rsplit("/", 1)[1]]
            assert message["payload"]["$ref"].rsplit("/", 1)[1] in doc["components"]["schemas"], cid
    actions = {(op["channel"]["$ref"].rsplit("/", 1)[1], op["action"]) for op in doc["operations"].values()}
    assert {("exec", "receive"), ("exec", "send"), ("jobWs", "send"), ("events", "send")} <= actions
    assert doc["components"]["schemas"]["Job"]["discriminator"] == "kind"


def test_job_messages_fit_the_document(doc: dict[str, Any]) -> None:
    validator = payload_validator(doc, "JobMessage")
    job = Job(id="3f6e", kind="container.exec", status=JobStatus.running, created_at=datetime.now(UTC),
              started_at=datetime.now(UTC), remote="local", project="default")
    messages = [JobEvent.of("snapshot", 1, job).message(),
                JobEvent.of("progress", 2, job, job.progress.model_dump()).message(),
                JobEvent.of("output", 3, job, {"stream": "stdout", "text": "hi\n"}).message(),
                JobEvent.of("status", 4, job, {"status": "running"}).message(),
                JobEvent.of("end", 5, job).message()]
    for message in messages:
        assert not list(validator.iter_errors(message)), message
    assert list(validator.iter_errors({**messages[0], "type": "other"}))


async def test_asyncapi_json_is_served_without_a_token(tmp_path: Path) -> None:
    settings = Settings(remotes=[RemoteSettings(name="local", url="unix:///nonexistent", default=True)],
                        data_dir=tmp_path, auth_enabled=True, _env_file=None)  # type: ignore[call-arg]
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        r = await client.get("/asyncapi.json")
        assert r.status_code == 200, r.text
        assert r.json() == json.loads(COMMITTED.read_text())
        assert (await client.get("/v1/whoami")).status_code == 401
