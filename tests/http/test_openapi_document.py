"""The committed OpenAPI document is valid OpenAPI 3.1 (openapi-spec-validator), a client generates from it without
a warning (openapi-python-client), and it types what the gateway answers: a `Job` per kind, its `error` a problem,
times as `date-time`, the problem responses of every route by one rule."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from app.main import JOB_KINDS

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = ROOT / "openapi" / "openapi.json"
PUBLIC = {"/livez", "/readyz", "/metrics"}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json.loads(OPENAPI.read_text())


def _ops(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m.upper(), p, op) for p, ops in schema["paths"].items() for m, op in ops.items()]


def test_the_document_is_valid_openapi_3_1(schema: dict[str, Any]) -> None:
    validate(schema)
    assert schema["openapi"].startswith("3.1")


def test_a_python_client_generates_without_a_warning(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"post_hooks": []}))
    run = subprocess.run(
        [Path(sys.executable).with_name("openapi-python-client"), "generate", "--path", str(OPENAPI),
         "--output-path", str(tmp_path / "client"), "--config", str(config)],
        capture_output=True, text=True, timeout=120, check=False)
    printed = run.stdout + run.stderr
    assert run.returncode == 0, printed
    assert "warning" not in printed.lower(), printed
    models = {p.stem for p in (tmp_path / "client").rglob("models/*.py")}
    assert {"container_create_job", "container_exec_job", "image_find_job", "other_job", "job_problem"} <= models


def test_info_names_servers_contact_and_license(schema: dict[str, Any]) -> None:
    assert schema["info"]["license"] == {"name": "Apache-2.0", "identifier": "Apache-2.0"}
    assert schema["info"]["contact"]["url"]
    assert schema["servers"] and all(s["url"] for s in schema["servers"])
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")


def test_every_route_documents_the_problems_it_can_give(schema: dict[str, Any]) -> None:
    missing = []
    for method, path, op in _ops(schema):
        codes = set(op["responses"])
        headers = {p["name"].lower() for p in op.get("parameters", []) if p["in"] == "header"}
        want = {"500"}
        if path not in PUBLIC:
            want |= {"401", "429"}
        if "503" in codes and path not in PUBLIC:
            want |= {"502", "504"}
        if "requestBody" in op:
            want |= {"400", "413"}
        if "if-match" in headers:
            want.add("412")
        if "{" in path:
            want.add("404")
        if re.search(r"/containers|/images|/profiles|/networks|/storage-pools|/projects|"
                     r"/certificates|/server", path):
            want.add("503")  # every route of an LXD resource reaches LXD
        if lacking := want - codes:
            missing.append(f"{method} {path}: {sorted(lacking)}")
        for code, response in op["responses"].items():
            if int(code) >= 400:
                assert response["content"] == {"application/problem+json": {
                    "schema": {"$ref": "#/components/schemas/Problem"}}}, f"{method} {path} {code}"
    assert not missing, missing


def test_job_is_a_union_discriminated_on_kind(schema: dict[str, Any]) -> None:
    schemas = schema["components"]["schemas"]
    job = schemas["Job"]
    mapping = job["discriminator"]["mapping"]
    assert job["discriminator"]["propertyName"] == "kind"
    assert set(mapping) == {k.name for k in JOB_KINDS}, "every kind of the gateway has its schema"
    assert [v["$ref"] for v in job["oneOf"]][-1] == "#/components/schemas/OtherJob"
    for kind, ref in mapping.items():
        variant = schemas[ref.rsplit("/", 1)[1]]
        props = variant["properties"]
        assert props["kind"]["const"] == kind
        for field in ("params", "result"):
            refs = [b["$ref"] for b in props[field]["anyOf"] if "$ref" in b]
            assert refs and refs[0].rsplit("/", 1)[1] in schemas, f"{kind} {field}"
        assert props["error"]["anyOf"][0] == {"$ref": "#/components/schemas/JobProblem"}
    other = schemas["OtherJob"]["properties"]["kind"]
    assert set(other["not"]["enum"]) == set(mapping)
    exec_result = schemas["ExecResult"]["properties"]
    assert {"stdout", "stderr", "output_omitted"} <= set(exec_result)
    assert schemas["JobProblem"]["properties"]["type"] == schemas["Problem"]["properties"]["type"]


def test_times_are_date_time(schema: dict[str, Any]) -> None:
    lacking = []
    for name, sub in schema["components"]["schemas"].items():
        for field, prop in sub.get("properties", {}).items():
            if re.fullmatch(r".+_at|time", field):
                branches = [prop, *prop.get("anyOf", [])]
                if not any(b.get("format") == "date-time" for b in branches):
                    lacking.append(f"{name}.{field}")
    assert not lacking, lacking
    assert schema["components"]["schemas"]["ContainerCreateJob"]["properties"]["created_at"]["format"] == "date-time"


def test_no_inline_defs(schema: dict[str, Any]) -> None:
    text = json.dumps(schema)
    assert "$defs" not in text
    assert "#/components/schemas/DirEntry" in text and "DirEntry" in schema["components"]["schemas"]
