"""What the OpenAPI document says beyond the routes: tags in a sensible order with their descriptions, and the
streaming routes (websockets and Server-Sent Events) under the `x-websockets` extension, since OpenAPI has no
websocket operations and FastAPI leaves them out."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIWebSocketRoute
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.routing import WebSocketRoute

JOB_MESSAGE = ("`{type: snapshot|progress|status|output|end, seq, job, data?}`; `snapshot` and `end` carry the whole "
               "job; `output` data is `{stream, text}` or `{stream, b64}`")
JOB_ACCESS = ("only jobs within the token's remote and project limits (another job is a 404); `output` messages and "
              "the output in a job's `result` only for the token that started the job and admin tokens")
TERMINAL_MESSAGES = [
    "client → server, first text frame: `{command, environment, user, group, cwd, width, height, interactive}`",
    "both ways, binary frames: the terminal's bytes",
    "client → server, text frames: `{type: resize, width, height}`, `{type: signal, signal}`, `{type: eof}` "
    "(closes stdin)",
    "server → client, last text frame: `{type: exit, exit_code}`, then close 1000",
]

STREAMS: dict[str, dict[str, Any]] = {
    "/v1/jobs/{job_id}/ws": {
        "tag": "jobs", "protocol": "websocket", "scope": "read",
        "summary": "Follow one job",
        "messages": ["server → client, first: the job as it is now (`snapshot`)",
                     f"server → client, then one per change: {JOB_MESSAGE}",
                     "closes with 1000 after the final state; a reader too slow to keep up is closed with 1013",
                     "an ended job: `snapshot`, then `end`, then close 1000", JOB_ACCESS],
    },
    "/v1/jobs/ws": {
        "tag": "jobs", "protocol": "websocket", "scope": "read",
        "summary": "Follow every job (optionally `?kind=`), for dashboards",
        "messages": [f"server → client: {JOB_MESSAGE}", JOB_ACCESS],
    },
    "/v1/jobs/{job_id}/events": {
        "tag": "jobs", "protocol": "sse", "scope": "read",
        "summary": "Follow one job as Server-Sent Events",
        "messages": ["`event:` the message type, `id:` its seq, `data:` the message as on the websocket",
                     "`Last-Event-ID` resumes after that seq; a comment heartbeat every 15 s",
                     "an ended job: `snapshot` (seq one less than `end`), then `end`", JOB_ACCESS],
    },
    "/v1/events": {
        "tag": "events", "protocol": "websocket", "scope": "read",
        "summary": "LXD's lifecycle events, filtered by `remote`, `project` and `type`",
        "messages": ["server → client: each LXD event as LXD sends it (`{type, timestamp, metadata, project, "
                     "location}`)"],
    },
    "/v1/containers/{name}/exec/ws": {
        "tag": "exec", "protocol": "websocket", "scope": "write",
        "summary": "Run a command interactively in a container",
        "messages": TERMINAL_MESSAGES,
    },
    "/v1/containers/{name}/console": {
        "tag": "exec", "protocol": "websocket", "scope": "write",
        "summary": "Attach to a container's console",
        "messages": TERMINAL_MESSAGES,
    },
}

STREAM_AUTH = ("Authorize with the `Authorization: Bearer` header, or (browsers) `?ticket=` with a one-time ticket "
               "from `POST /v1/tickets`.")


def _streams_of(tag: str) -> str:
    lines = [f"* `{'SSE' if s['protocol'] == 'sse' else 'WS'} {path}`: {s['summary']}"
             for path, s in STREAMS.items() if s["tag"] == tag]
    if not lines:
        return ""
    return ("\n\nStreams (listed under `x-websockets` in this document, and in the AsyncAPI document "
            "`/asyncapi.json`):\n\n" + "\n".join(lines) + "\n\n" + STREAM_AUTH)


TAGS: list[tuple[str, str]] = [
    ("containers", "Containers: list, create (a job), read with ETag, merge-patch, delete, actions, addresses, "
                   "devices, rename, copy, publish, console log."),
    ("exec", "Commands in containers: as a job with captured output, or interactively over a websocket."),
    ("files", "Files in containers: streamed download and upload, delete."),
    ("snapshots", "Container snapshots: list, create, restore, delete (jobs)."),
    ("images", "The local image store (list, read, export, aliases whose names may hold `/`), finding OS images on "
               "the configured image servers (`image.find`), copying (`image.copy`), streamed uploads "
               "(`image.import`) and deletes (`image.delete`)."),
    ("profiles", "LXD profiles with ETag/If-Match and merge-patch; their NICs; the root disk and network checks "
                 "containers rely on."),
    ("networks", "LXD networks: list, create, delete, and giving a bridge IPv4 (admin for changes)."),
    ("storage", "Storage pools (admin for changes) and their custom volumes."),
    ("projects", "The LXD projects of a remote; pick one with `?project=` on every resource route."),
    ("jobs", "Every long-running action is a job: list, read (long-poll with `wait`), cancel, stream."),
    ("events", "LXD's lifecycle events, passed through."),
    ("certificates", "LXD's trust store, new client key pairs and trust tokens (admin)."),
    ("server", "The LXD server: facts, config (merged under its ETag), HTTPS listener, certificate, proxies."),
    ("remotes", "The LXD/Incus endpoints the gateway talks to; add one by URL and trust token (admin)."),
    ("tokens", "API tokens, the caller's identity and one-time stream tickets."),
    ("audit", "Who did what (admin)."),
    ("operations", "Probes and metrics: no token needed."),
]


def openapi_tags() -> list[dict[str, str]]:
    """`openapi_tags` for the app: the order Swagger UI shows, each with its description and streams."""
    return [{"name": name, "description": text + _streams_of(name)} for name, text in TAGS]


def _websocket_routes(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path, route) of every websocket route, looking into included routers."""
    for route in routes:
        if isinstance(route, APIWebSocketRoute | WebSocketRoute):
            yield prefix + route.path, route
        elif (inner := getattr(route, "original_router", None)) is not None:
            context = getattr(route, "include_context", None)
            yield from _websocket_routes(inner.routes, prefix + (getattr(context, "prefix", "") or ""))


def websocket_paths(app: FastAPI) -> dict[str, Any]:
    """The `x-websockets` extension: every websocket route of `app` (and the SSE route), with what it exchanges."""
    out: dict[str, Any] = {}
    for path, route in _websocket_routes(app.routes):
        known = STREAMS.get(path, {})
        doc = (getattr(getattr(route, "endpoint", None), "__doc__", None) or "").strip()
        out[path] = {"summary": known.get("summary") or doc.split("\n")[0] or path,
                     "protocol": "websocket", "tag": known.get("tag", ""), "scope": known.get("scope", ""),
                     "messages": known.get("messages", []), "auth": STREAM_AUTH}
    for path, known in STREAMS.items():
        if known["protocol"] == "sse":
            out[path] = {"summary": known["summary"], "protocol": "sse", "tag": known["tag"],
                         "scope": known["scope"], "messages": known["messages"], "auth": STREAM_AUTH,
                         "operation": f"GET {path}"}
    return dict(sorted(out.items()))


PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
INFO = {
    "contact": {"name": "lxd-gateway", "url": "https://lxd-gateway.dev/"},
    "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
}
SERVERS = [
    {"url": "/", "description": "the gateway that serves this document"},
    {"url": "http://127.0.0.1:8080", "description": "a gateway on its default address (`LXDGW_BIND`)"},
]
TIMESTAMP = re.compile(r".+_at|time|timestamp")
"""Names of the string fields that hold an RFC 3339 time."""


def problems_everywhere(schema: dict[str, Any]) -> None:
    """Every error response documented as what the gateway sends (`application/problem+json`; FastAPI's default
    422 entry describes a bare `{"detail": ...}` body the gateway never answers), and the problems every route of a
    kind can give, by one rule:

    * any route: 500 (an unexpected error, answered as a problem with the request id);
    * a route that takes a credential (it documents 401): 429, the rate limits (per token, or per address for
      failed credentials) and, on the routes that start jobs, the per-token limit of unfinished jobs;
    * a route that reaches LXD (it documents 503, LXD unreachable): 502 (LXD answered what the gateway cannot use,
      or its operation failed) and 504 (LXD too slow);
    * a route that takes a body: 400 (unreadable) and 413 (too large);
    * a route that takes `If-Match`: 412 (the resource changed).
    """
    for ops in schema.get("paths", {}).values():
        for op in ops.values():
            responses = op.get("responses", {})
            headers = {p.get("name", "").lower() for p in op.get("parameters", []) if p.get("in") == "header"}
            responses.setdefault("500", {"description": "An unexpected error (the problem carries the request id)"})
            if "401" in responses:
                responses.setdefault("429", {"description": "Too many requests (see `Retry-After`)", "headers": {
                    "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}})
                if "503" in responses:
                    responses.setdefault("502", {"description": "LXD answered what the gateway cannot use, or "
                                                                "its operation failed"})
            if "503" in responses:  # LXD unreachable; it can be too slow as well
                responses.setdefault("504", {"description": "LXD did not answer in time"})
            if "requestBody" in op:
                responses.setdefault("400", {"description": "The body cannot be read as its content type says "
                                                            "(e.g. JSON that is not UTF-8)"})
                responses.setdefault("413", {"description": "The request body is too large"})
            if "if-match" in headers:
                responses.setdefault("412", {"description": "`If-Match` does not match the current ETag"})
            for code, response in responses.items():
                if code.isdigit() and int(code) >= 400:
                    response["content"] = {"application/problem+json": {"schema": dict(PROBLEM_REF)}}
                    if code == "422":
                        response["description"] = "Validation failed (the problem's `errors` lists each field)"
            op["responses"] = dict(sorted(responses.items()))
    schemas = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


def hoist_local_defs(schema: dict[str, Any]) -> None:
    """Move the `$defs` a schema carries inline (a model's own JSON schema put in a response) into
    `components/schemas`, and point their `#/$defs/...` references there: the document's root has no `$defs`."""
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})

    def lift(node: Any) -> None:
        if isinstance(node, dict):
            for name, sub in (node.pop("$defs", None) or {}).items():
                lift(sub)
                if schemas.setdefault(name, sub) != sub:
                    raise ValueError(f"two different schemas are named {name!r}")
            for value in node.values():
                lift(value)
        elif isinstance(node, list):
            for value in node:
                lift(value)

    def repoint(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                node["$ref"] = "#/components/schemas/" + ref.removeprefix("#/$defs/")
            for value in node.values():
                repoint(value)
        elif isinstance(node, list):
            for value in node:
                repoint(value)

    lift(schema)
    repoint(schema)


def timestamps(node: Any) -> None:
    """`format: date-time` on every string property named as a time (`created_at`, `time`, ...)."""
    if isinstance(node, dict):
        for name, prop in (node.get("properties") or {}).items():
            if isinstance(prop, dict) and TIMESTAMP.fullmatch(name):
                for branch in [prop, *prop.get("anyOf", [])]:
                    if branch.get("type") == "string" and "format" not in branch:
                        branch["format"] = "date-time"
        for value in node.values():
            timestamps(value)
    elif isinstance(node, list):
        for value in node:
            timestamps(value)


REF = "#/components/schemas/{model}"
OTHER_JOB = "OtherJob"


def _job_schema_name(kind: str) -> str:
    """`container.remove-many` -> `ContainerRemoveManyJob`."""
    return "".join(part.capitalize() for part in re.split(r"[.\-_]", kind) if part) + "Job"


def _without_null_defaults(node: Any) -> Any:
    """The schema without `default: null` (as FastAPI writes its components)."""
    if isinstance(node, dict):
        return {k: _without_null_defaults(v) for k, v in node.items() if not (k == "default" and v is None)}
    if isinstance(node, list):
        return [_without_null_defaults(v) for v in node]
    return node


def _merge(schemas: dict[str, Any], defs: dict[str, Any]) -> None:
    for name, sub in _without_null_defaults(defs).items():
        if schemas.setdefault(name, sub) != sub:
            raise ValueError(f"two different schemas are named {name!r}")


def job_union(schema: dict[str, Any], kinds: Iterable[Any], problem: type[BaseModel]) -> None:
    """`Job` as a union discriminated on `kind`: one schema per kind whose `params` and `result` models are known
    (`kinds`: each with `name`, `description`, `params`, `result`), and `OtherJob` for any other kind (one an
    extension added). The API answers the same JSON as before; this only says what each kind carries.

    `error` is the job's problem (`problem`, a `Problem`), the times are RFC 3339."""
    schemas = schema["components"]["schemas"]
    base = copy.deepcopy(schemas["Job"])
    props = base["properties"]
    problem_schema = problem.model_json_schema(ref_template=REF)
    _merge(schemas, problem_schema.pop("$defs", {}))
    schemas[problem.__name__] = _without_null_defaults(problem_schema)
    props["error"] = {"anyOf": [{"$ref": REF.format(model=problem.__name__)}, {"type": "null"}],
                      "description": props["error"].get("description", "")}
    created = props["created_at"]
    props["created_at"] = {"type": "string", "format": "date-time", "title": created.get("title", "Created At"),
                           "description": "when the job was accepted", "examples": ["2026-11-01T12:00:00.123Z"]}
    if "created_at" not in base.setdefault("required", []):
        base["required"].append("created_at")
    typed = [k for k in kinds if k.params is not None or k.result is not None]
    models = list(dict.fromkeys(m for k in typed for m in (k.params, k.result) if m is not None))
    modes: dict[Any, JsonSchemaMode] = {**{k.params: "validation" for k in typed},
                                        **{k.result: "serialization" for k in typed}}
    refs, defs = models_json_schema([(m, modes[m]) for m in models], ref_template=REF)
    _merge(schemas, defs.get("$defs", {}))
    variants: dict[str, str] = {}
    for k in typed:
        name = _job_schema_name(k.name)
        variant = copy.deepcopy(base)
        variant["title"] = name
        variant["description"] = f"A job of kind `{k.name}`" + (f": {k.description}" if k.description else ".")
        vprops = variant["properties"]
        vprops["kind"] = {"type": "string", "const": k.name, "description": "the action", "examples": [k.name]}
        for field, model in (("params", k.params), ("result", k.result)):
            if model is not None:
                vprops[field] = {"anyOf": [refs[(model, modes[model])], {"type": "null"}],
                                 "description": props[field].get("description", "")}
        _merge(schemas, {name: variant})
        variants[k.name] = REF.format(model=name)
    other = copy.deepcopy(base)
    other["title"] = OTHER_JOB
    other["description"] = "A job of a kind added by an extension: its `params` and `result` are the kind's own."
    other["properties"]["kind"] = {"type": "string", "not": {"enum": sorted(variants)},
                                   "description": "the action (a kind an extension added)",
                                   "examples": ["backup.run"]}
    _merge(schemas, {OTHER_JOB: other})
    schemas["Job"] = {
        "title": "Job",
        "description": base.get("description", "") + " Its `kind` says what `params` and `result` hold.",
        "oneOf": [*({"$ref": ref} for ref in variants.values()), {"$ref": REF.format(model=OTHER_JOB)}],
        "discriminator": {"propertyName": "kind", "mapping": variants},
    }


def complete_document(schema: dict[str, Any], app: FastAPI, *, job_kinds: Iterable[Any] = (),
                      job_problem: type[BaseModel] | None = None) -> None:
    """What the document says beyond FastAPI's output: servers, contact and license, the streams
    (`x-websockets`), the problem responses, `Job` as a union of its kinds, no inline `$defs`, and the times as
    `date-time`."""
    schema["info"].update(INFO)
    schema["servers"] = SERVERS
    schema["x-websockets"] = websocket_paths(app)
    problems_everywhere(schema)
    hoist_local_defs(schema)
    if job_problem is not None and "Job" in schema.get("components", {}).get("schemas", {}):
        job_union(schema, job_kinds, job_problem)
    timestamps(schema.get("components", {}))
