"""Every route of the contract (`../shared/API.md` when it sits beside the repository, else the list below) is in
the committed `openapi/openapi.json` (websockets under `x-websockets`) with its documented problem responses, and
the operations of this part of the API teach: a summary, tags, and a description and an example on every field."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT.parent / "shared" / "API.md"
OPENAPI = ROOT / "openapi" / "openapi.json"
PUBLIC = {"/livez", "/readyz", "/metrics"}
TAUGHT_TAGS = {"images", "profiles", "certificates", "server", "remotes", "storage", "networks", "projects"}

# The contract's routes, as committed, for a checkout without ../shared/API.md.
COMMITTED_ROUTES = """
GET /v1/jobs; GET /v1/jobs/{}; DELETE /v1/jobs/{}; WS /v1/jobs/{}/ws; WS /v1/jobs/ws; GET /v1/jobs/{}/events
GET /v1/remotes; POST /v1/remotes; DELETE /v1/remotes/{}; GET /v1/projects; GET /v1/tokens; POST /v1/tokens
DELETE /v1/tokens/{}; GET /v1/whoami; POST /v1/tickets; GET /v1/audit; GET /v1/server; PATCH /v1/server/config
POST /v1/server/https-listener; GET /v1/server/certificate; PUT /v1/server/proxies; GET /v1/storage-pools
POST /v1/storage-pools; DELETE /v1/storage-pools/{}; GET /v1/storage-pools/{}/volumes
POST /v1/storage-pools/{}/volumes; DELETE /v1/storage-pools/{}/volumes/{}; GET /v1/networks; POST /v1/networks
DELETE /v1/networks/{}; POST /v1/networks/{}/ensure-ipv4; GET /v1/containers; POST /v1/containers/remove
POST /v1/containers; GET /v1/containers/{}; PATCH /v1/containers/{}; DELETE /v1/containers/{}
POST /v1/containers/{}/start; POST /v1/containers/{}/stop; POST /v1/containers/{}/restart
POST /v1/containers/{}/freeze; POST /v1/containers/{}/unfreeze; GET /v1/containers/{}/addresses
POST /v1/containers/{}/exec; WS /v1/containers/{}/console; WS /v1/containers/{}/exec/ws
GET /v1/containers/{}/files; PUT /v1/containers/{}/files; DELETE /v1/containers/{}/files
POST /v1/containers/{}/devices; POST /v1/containers/{}/rename; POST /v1/containers/{}/copy
POST /v1/containers/{}/publish; GET /v1/containers/{}/logs; GET /v1/containers/{}/snapshots
POST /v1/containers/{}/snapshots; POST /v1/containers/{}/snapshots/{}/restore
DELETE /v1/containers/{}/snapshots/{}; GET /v1/image-sources; GET /v1/images; GET /v1/images/{}
GET /v1/images/{}/export; GET /v1/images/aliases; POST /v1/images/find; POST /v1/images; POST /v1/images/upload
DELETE /v1/images/{}; POST /v1/images/aliases; DELETE /v1/images/aliases/{}; GET /v1/profiles; POST /v1/profiles
GET /v1/profiles/{}; PUT /v1/profiles/{}; PATCH /v1/profiles/{}; DELETE /v1/profiles/{}
GET /v1/profiles/{}/nics; POST /v1/profiles/{}/ensure-storage; POST /v1/profiles/{}/verify-network
GET /v1/certificates; POST /v1/certificates; GET /v1/certificates/{}; DELETE /v1/certificates/{}
POST /v1/certificates/generate; POST /v1/certificates/tokens; WS /v1/events
"""


# Routes the contract's "Round 2 additions" name for an issue that has not built them yet. Each stays listed only
# while it is truly missing (a test below fails once it exists, so the entry is then removed).
NOT_YET_BUILT: set[tuple[str, str]] = set()


def _norm(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path.split("?", 1)[0].strip())


def parse_contract(text: str) -> set[tuple[str, str]]:
    """(method, path) of every row of the contract's route tables (`WS` for websockets)."""
    routes: set[tuple[str, str]] = set()
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not re.fullmatch(r"(GET|POST|PUT|PATCH|DELETE|WS)( / (GET|POST|PUT|PATCH|DELETE))*",
                                              cells[0]):
            continue
        methods = [m.strip() for m in cells[0].split("/")]
        paths = re.findall(r"`([^`]+)`", cells[1])
        full: list[str] = []
        for p in paths:
            if p.startswith("/v1/"):
                full.append(p)
            elif p.startswith("/") and full:  # `/stop` after `/v1/containers/{name}/start`
                full.append(full[0].rsplit("/", 1)[0] + p)
        if len(methods) == len(full) and len(full) > 1 and methods[0] != methods[1]:
            pairs = list(zip(methods, full, strict=True))
        elif 1 < len(full) < len(methods):  # `GET / POST / DELETE` of `/v1/tokens` · `/v1/tokens/{name}`
            pairs = [(m, full[0]) for m in methods[:-1]] + [(methods[-1], full[-1])]
        else:
            pairs = [(m, p) for m in methods for p in full]
        routes.update((m, _norm(p)) for m, p in pairs)
    routes.update(("WS", _norm(p)) for p in re.findall(r"`WS (/v1/[^`]+)`", text))  # streams named in the prose
    return routes


def committed_routes() -> set[tuple[str, str]]:
    out = set()
    for item in COMMITTED_ROUTES.replace("\n", ";").split(";"):
        if item.strip():
            method, path = item.split()
            out.add((method, path))
    return out


def contract_routes() -> set[tuple[str, str]]:
    return parse_contract(CONTRACT.read_text()) if CONTRACT.exists() else committed_routes()


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json.loads(OPENAPI.read_text())


def _operations(schema: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m.upper(), _norm(p)): op for p, ops in schema["paths"].items() for m, op in ops.items()}


def test_the_contract_parses_to_the_committed_list() -> None:
    if CONTRACT.exists():
        assert parse_contract(CONTRACT.read_text()) >= committed_routes()


def test_every_contract_route_is_documented_with_its_problems(schema: dict[str, Any]) -> None:
    ops = _operations(schema)
    websockets = {_norm(p): w for p, w in schema.get("x-websockets", {}).items()}
    missing = []
    for method, path in sorted(contract_routes() - NOT_YET_BUILT):
        if method == "WS":
            if path not in websockets or websockets[path]["protocol"] != "websocket":
                missing.append(f"WS {path}")
            else:
                assert websockets[path]["summary"] and websockets[path]["messages"], path
            continue
        op = ops.get((method, path))
        if op is None:
            missing.append(f"{method} {path}")
            continue
        assert op.get("summary"), f"{method} {path} has no summary"
        problems = {int(code): r for code, r in op["responses"].items() if code.isdigit() and int(code) >= 400}
        assert problems, f"{method} {path} documents no problem responses"
        for code, r in problems.items():
            assert r["content"]["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}, (
                f"{method} {path} {code}")
        if path not in PUBLIC and 401 not in problems:
            missing.append(f"{method} {path}: 401 not documented")
        if ("{}" in path or op.get("requestBody")) and not {404, 422} & set(problems):
            missing.append(f"{method} {path}: neither 404 nor 422 documented")
    assert not missing, f"contract routes missing from openapi/openapi.json, or their problems: {missing}"


def test_routes_not_yet_built_are_really_missing(schema: dict[str, Any]) -> None:
    built = set(_operations(schema)) & NOT_YET_BUILT
    assert not built, f"remove these from NOT_YET_BUILT, they exist now: {sorted(built)}"
    if CONTRACT.exists():
        assert parse_contract(CONTRACT.read_text()) >= NOT_YET_BUILT


def test_sse_route_is_also_under_the_extension(schema: dict[str, Any]) -> None:
    sse = {p: w for p, w in schema["x-websockets"].items() if w["protocol"] == "sse"}
    assert _norm(next(iter(sse))) == "/v1/jobs/{}/events"


def test_tags_are_ordered_and_described(schema: dict[str, Any]) -> None:
    tags = [t["name"] for t in schema["tags"]]
    assert tags[:2] == ["containers", "exec"] and tags.index("images") < tags.index("profiles")
    assert all(t["description"] for t in schema["tags"])
    used = {t for ops in schema["paths"].values() for op in ops.values() for t in op.get("tags", [])}
    assert used <= set(tags), used - set(tags)
    jobs = next(t for t in schema["tags"] if t["name"] == "jobs")["description"]
    assert "WS /v1/jobs/{job_id}/ws" in jobs and "SSE /v1/jobs/{job_id}/events" in jobs


def _schemas_of(node: Any, schema: dict[str, Any], seen: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            name = ref.rsplit("/", 1)[1]
            if name not in seen:
                seen.add(name)
                if name != "Job":  # a job's kinds carry other resources' schemas (the job engine's own test)
                    _schemas_of(schema["components"]["schemas"][name], schema, seen)
        for v in node.values():
            _schemas_of(v, schema, seen)
    elif isinstance(node, list):
        for v in node:
            _schemas_of(v, schema, seen)


def test_every_field_of_these_resources_has_a_description_and_an_example(schema: dict[str, Any]) -> None:
    names: set[str] = set()
    for ops in schema["paths"].values():
        for op in ops.values():
            if TAUGHT_TAGS & set(op.get("tags", [])):
                assert op.get("summary") and op.get("operationId"), op
                _schemas_of(op.get("requestBody"), schema, names)
                _schemas_of({k: v for k, v in op["responses"].items() if k in ("200", "201")}, schema, names)
    names -= {"Problem", "ValidationItem", "Job", "JobProgress", "LxdOperationRef", "JobStatus"}
    assert names
    lacking = []
    for name in sorted(names):
        for field, prop in schema["components"]["schemas"][name].get("properties", {}).items():
            if name.startswith("Page_") and field in ("items", "next_cursor"):
                continue
            if not prop.get("description") and "$ref" not in prop:
                lacking.append(f"{name}.{field}: description")
            if "examples" not in prop and "example" not in prop and "$ref" not in prop:
                lacking.append(f"{name}.{field}: example")
    assert not lacking, lacking


def test_rate_limits_and_body_errors_are_documented_where_they_can_happen(schema: dict[str, Any]) -> None:
    """Every route that takes a credential can answer 429 (the rate limits), every route with a body 400
    (unreadable) and 413 (too large), and every route that can find LXD unreachable (503) can find it too slow
    (504)."""
    missing = []
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            codes = set(op.get("responses", {}))
            if "401" in codes and "429" not in codes:
                missing.append(f"{method.upper()} {path}: 429")
            if "requestBody" in op and not {"400", "413"} <= codes:
                missing.append(f"{method.upper()} {path}: 400/413")
            if "503" in codes and "504" not in codes:
                missing.append(f"{method.upper()} {path}: 504")
    assert not missing, missing
