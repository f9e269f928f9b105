"""What the OpenAPI document says beyond the routes: tags in a sensible order with their descriptions, and the
streaming routes (websockets and Server-Sent Events) under the `x-websockets` extension, since OpenAPI has no
websocket operations and FastAPI leaves them out."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIWebSocketRoute
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
    return "\n\nStreams (listed under `x-websockets` in this document):\n\n" + "\n".join(lines) + "\n\n" + STREAM_AUTH


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


def problems_everywhere(schema: dict[str, Any]) -> None:
    """Every error response documented as what the gateway sends: `application/problem+json` (FastAPI's default
    422 entry describes a bare `{"detail": ...}` body the gateway never answers)."""
    ref = {"$ref": "#/components/schemas/Problem"}
    for ops in schema.get("paths", {}).values():
        for op in ops.values():
            responses = op.get("responses", {})
            if "401" in responses:  # a route that takes a credential is rate limited (per token, or per address)
                responses.setdefault("429", {"description": "Too many requests (see `Retry-After`)", "headers": {
                    "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}})
            if "503" in responses:  # LXD unreachable; it can be too slow as well
                responses.setdefault("504", {"description": "LXD did not answer in time"})
            if "requestBody" in op:
                responses.setdefault("400", {"description": "The body cannot be read as its content type says "
                                                            "(e.g. JSON that is not UTF-8)"})
                responses.setdefault("413", {"description": "The request body is too large"})
            for code, response in op.get("responses", {}).items():
                if code.isdigit() and int(code) >= 400:
                    content = response.setdefault("content", {})
                    content.pop("application/json", None)
                    content["application/problem+json"] = {"schema": ref}
                    if code == "422":
                        response["description"] = "Validation failed (the problem's `errors` lists each field)"
    schemas = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
