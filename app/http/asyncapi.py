"""The AsyncAPI 3.0 document of the gateway's streams (`GET /asyncapi.json`, committed as openapi/asyncapi.json):
the job websockets and Server-Sent Events, LXD's events websocket, the exec and console websockets, and the
collections' `?watch=true` Server-Sent Events. Its schemas are the OpenAPI document's (a job is the same `Job`
union), so the two documents never disagree.

The document describes the gateway: it `send`s what a client receives and `receive`s what a client sends.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from app.http.openapi import INFO, STREAM_AUTH, STREAMS

VERSION = "3.0.0"
LICENSE = {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"}
SCHEMA_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": SCHEMA_REF + name}


def _msg(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/messages/{name}"}


def _obj(properties: dict[str, Any], required: list[str], description: str = "", **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "required": required, **extra}
    if description:
        schema["description"] = description
    return schema


def _const(value: str) -> dict[str, Any]:
    return {"type": "string", "const": value}


ERROR_FRAME = _obj({"type": _const("error"), "status": {"type": "integer", "examples": [404]},
                    "detail": {"type": "string", "examples": ["container 'web1' not found"]}},
                   ["type", "status", "detail"],
                   "Why the stream ends (then the websocket closes with 4000 + `status`; on a refused handshake the "
                   "close code alone says it)")

STREAM_SCHEMAS: dict[str, dict[str, Any]] = {
    "JobMessage": _obj(
        {"type": {"type": "string", "enum": ["snapshot", "progress", "status", "output", "end"]},
         "seq": {"type": "integer", "minimum": 0, "description": "increases by one with every change of the job"},
         "job": {**_ref("Job"), "description": "the job as it is after the change (as `GET /v1/jobs/{id}` shows it "
                                              "to the caller)"},
         "data": {"description": "`progress`: the progress block; `output`: a chunk of output; `status`: what "
                                 "changed", "anyOf": [_ref("JobProgress"), _ref("JobOutputChunk"),
                                                      _ref("JobStatusChange")]}},
        ["type", "seq", "job"], "One message of a job stream; `snapshot` and `end` carry no `data`."),
    "JobOutputChunk": _obj(
        {"stream": {"type": "string", "enum": ["stdout", "stderr"]},
         "text": {"type": "string", "description": "the chunk, when it is UTF-8"},
         "b64": {"type": "string", "contentEncoding": "base64", "description": "the chunk, when it is not UTF-8"}},
        ["stream"], "A chunk of a job's output (only to the token that started the job and admin tokens)"),
    "JobStatusChange": _obj(
        {"status": _ref("JobStatus"),
         "cancel_requested": {"type": "boolean", "description": "a cancel was asked for"},
         "lxd_operation": _ref("LxdOperationRef")},
        [], "What changed: the status, a cancel request, or an LXD operation the job started"),
    "LxdEvent": _obj(
        {"type": {"type": "string", "examples": ["lifecycle"], "description": "`lifecycle` or `operation`"},
         "timestamp": {"type": "string", "format": "date-time"},
         "metadata": {"type": "object", "description": "LXD's event metadata (`action`, `source`, `context`...)"},
         "project": {"type": "string", "examples": ["default"]},
         "location": {"type": "string", "examples": ["none"]},
         "remote": {"type": "string", "examples": ["local"], "description": "the remote it came from"}},
        ["type", "timestamp", "metadata"], "An LXD event as LXD sends it, with the remote it came from"),
    "EventsSubscribed": _obj(
        {"type": _const("subscribed"), "remote": {"type": "string"}, "project": {"type": "string"},
         "filter": {"type": "array", "items": {"type": "string"}}},
        ["type", "remote", "project", "filter"], "The first message: what the stream follows"),
    "EventsGap": _obj({"type": _const("gap"), "dropped": {"type": "integer", "minimum": 1}}, ["type", "dropped"],
                      "Events were dropped because the reader was too slow"),
    "StreamError": ERROR_FRAME,
    "TerminalStart": _obj(
        {"command": {"type": "array", "items": {"type": "string"}, "minItems": 1, "default": ["/bin/sh"]},
         "environment": {"type": "object", "additionalProperties": {"type": "string"}},
         "user": {"type": ["integer", "null"], "minimum": 0}, "group": {"type": ["integer", "null"], "minimum": 0},
         "cwd": {"type": ["string", "null"]},
         "width": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 80},
         "height": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 24},
         "interactive": {"type": "boolean", "default": True}},
        [], "The first text frame (the console reads `width` and `height` only)"),
    "TerminalBytes": {"type": "string", "format": "binary", "description": "the terminal's bytes (binary frames)"},
    "TerminalResize": _obj({"type": _const("resize"), "width": {"type": "integer", "minimum": 1},
                            "height": {"type": "integer", "minimum": 1}}, ["type", "width", "height"]),
    "TerminalSignal": _obj({"type": _const("signal"), "signal": {
        "type": ["integer", "string"], "examples": ["SIGINT", 15]}}, ["type", "signal"]),
    "TerminalEof": _obj({"type": _const("eof")}, ["type"], "Closes the command's standard input"),
    "TerminalExit": _obj({"type": _const("exit"), "exit_code": {"type": ["integer", "null"]}}, ["type", "exit_code"],
                         "The last text frame; then close 1000"),
}


def _messages() -> dict[str, dict[str, Any]]:
    def m(name: str, title: str, summary: str, payload: str, content_type: str = "application/json",
          **extra: Any) -> tuple[str, dict[str, Any]]:
        return name, {"name": name, "title": title, "summary": summary, "contentType": content_type,
                      "payload": _ref(payload), **extra}

    return dict([
        m("jobMessage", "Job message", "A change of a job (websocket text frame)", "JobMessage"),
        m("jobEvent", "Job event (SSE)", "A change of a job as a Server-Sent Event: `event:` the message type, "
          "`id:` its seq, `data:` the message", "JobMessage", "text/event-stream",
          headers=_obj({"Last-Event-ID": {"type": "string", "description": "resume after this seq"}}, [])),
        m("lxdEvent", "LXD event", "One of LXD's events", "LxdEvent"),
        m("eventsSubscribed", "Subscribed", "What the stream follows (first)", "EventsSubscribed"),
        m("eventsGap", "Gap", "Events were dropped", "EventsGap"),
        m("streamError", "Error", "Why the stream ends", "StreamError"),
        m("terminalStart", "Start", "The command and the terminal size (first text frame)", "TerminalStart"),
        m("terminalInput", "Input", "Bytes to the terminal", "TerminalBytes", "application/octet-stream"),
        m("terminalOutput", "Output", "Bytes from the terminal", "TerminalBytes", "application/octet-stream"),
        m("terminalResize", "Resize", "A new terminal size", "TerminalResize"),
        m("terminalSignal", "Signal", "A signal for the command", "TerminalSignal"),
        m("terminalEof", "End of input", "Close the command's standard input", "TerminalEof"),
        m("terminalExit", "Exit", "The command's exit code (last)", "TerminalExit"),
    ])


def _watch_channels(openapi: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """(path, item schema) of every collection that streams its changes with `?watch=true`, by channel id."""
    out: dict[str, tuple[str, str]] = {}
    for path, ops in openapi.get("paths", {}).items():
        content = ops.get("get", {}).get("responses", {}).get("200", {}).get("content", {})
        page = content.get("application/json", {}).get("schema", {}).get("$ref", "")
        if "text/event-stream" not in content or not page:
            continue
        items = openapi["components"]["schemas"][page.rsplit("/", 1)[1]]["properties"]["items"]["items"]["$ref"]
        name = path.rstrip("/").rsplit("/", 1)[1]
        out[f"{name}Watch"] = (path, items.rsplit("/", 1)[1])
    return out


def _reachable(schemas: dict[str, Any], roots: list[Any]) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(SCHEMA_REF):
                name = ref.removeprefix(SCHEMA_REF)
                if name not in seen and name in schemas:
                    seen[name] = schemas[name]
                    walk(schemas[name])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(roots)
    return dict(sorted(seen.items()))


def _asyncapi_schema(node: Any) -> Any:
    """An OpenAPI 3.1 schema as an AsyncAPI schema: the discriminator is the property's name alone."""
    if isinstance(node, dict):
        out = {k: _asyncapi_schema(v) for k, v in node.items()}
        if isinstance(out.get("discriminator"), dict):
            out["discriminator"] = out["discriminator"]["propertyName"]
        return out
    if isinstance(node, list):
        return [_asyncapi_schema(v) for v in node]
    return node


def _parameters(address: str) -> dict[str, Any]:
    return {name: {"description": {"job_id": "the job's id", "name": "the container's name"}.get(name, name)}
            for name in re.findall(r"\{(\w+)\}", address)}


QUERY = {
    "remote": {"type": "string", "description": "the remote (default: the default remote)"},
    "project": {"type": "string", "description": "the LXD project", "default": "default"},
    "ticket": {"type": "string", "description": "a one-time ticket from `POST /v1/tickets` (browsers), instead of "
                                                "the `Authorization` header"},
}


def _ws_binding(**query: dict[str, Any]) -> dict[str, Any]:
    return {"ws": {"method": "GET", "query": {"type": "object", "properties": {**query, "ticket": QUERY["ticket"]}},
                   "bindingVersion": "0.1.0"}}


def asyncapi_document(openapi: dict[str, Any]) -> dict[str, Any]:
    """The AsyncAPI document of the streams of the app whose OpenAPI document is `openapi`."""
    ws, http = {"$ref": "#/servers/websocket"}, {"$ref": "#/servers/http"}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}

    def channel(cid: str, address: str, server: dict[str, str], description: str, sends: list[str],
                receives: tuple[str, ...] = (), bindings: dict[str, Any] | None = None,
                http_query: dict[str, Any] | None = None) -> None:
        """The channel `cid`; `http_query`: a Server-Sent Events stream, opened by a GET with that query."""
        messages = list(dict.fromkeys([*sends, *receives]))
        channels[cid] = {"address": address, "description": description, "servers": [server],
                         "messages": {m: _msg(m) for m in messages}}
        if params := _parameters(address):
            channels[cid]["parameters"] = params
        if bindings:
            channels[cid]["bindings"] = bindings
        for action, names in (("send", sends), ("receive", receives)):
            if names:
                operations[f"{cid}.{action}"] = {
                    "action": action, "channel": {"$ref": f"#/channels/{cid}"},
                    "summary": ("what the gateway sends" if action == "send" else "what the client sends"),
                    "messages": [{"$ref": f"#/channels/{cid}/messages/{m}"} for m in names]}
                if http_query is not None:
                    operations[f"{cid}.{action}"]["bindings"] = {"http": {
                        "method": "GET", "query": {"type": "object", **http_query}, "bindingVersion": "0.3.0"}}

    def text(path: str) -> str:
        known = STREAMS[path]
        return f"{known['summary']} (scope `{known['scope']}`).\n\n" + "\n".join(f"* {m}" for m in known["messages"])

    channel("jobWs", "/v1/jobs/{job_id}/ws", ws, text("/v1/jobs/{job_id}/ws"), ["jobMessage"],
            bindings=_ws_binding())
    channel("jobsWs", "/v1/jobs/ws", ws, text("/v1/jobs/ws"), ["jobMessage"],
            bindings=_ws_binding(kind={"type": "string", "description": "only jobs of this kind"}))
    channel("jobEvents", "/v1/jobs/{job_id}/events", http, text("/v1/jobs/{job_id}/events"), ["jobEvent"],
            http_query={"properties": {"ticket": QUERY["ticket"]}})
    channel("events", "/v1/events", ws, text("/v1/events"), ["eventsSubscribed", "lxdEvent", "eventsGap",
                                                              "streamError"],
            bindings=_ws_binding(remote=QUERY["remote"], project=QUERY["project"], type={
                "type": "array", "items": {"type": "string"},
                "description": "`lifecycle` (default), `operation`, or lifecycle actions (`instance-started`)"}))
    terminal_in = ("terminalStart", "terminalInput", "terminalResize", "terminalSignal", "terminalEof")
    for cid, path in (("exec", "/v1/containers/{name}/exec/ws"), ("console", "/v1/containers/{name}/console")):
        channel(cid, path, ws, text(path), ["terminalOutput", "terminalExit", "streamError"], terminal_in,
                bindings=_ws_binding(remote=QUERY["remote"], project=QUERY["project"]))
    watch_schemas: dict[str, Any] = {}
    watch_messages: dict[str, Any] = {}
    for cid, (path, item) in _watch_channels(openapi).items():
        resync = f"{item}Resync"
        watch_schemas[resync] = _obj({"items": {"type": "array", "items": _ref(item)}}, ["items"],
                                     f"`event: resync`: the whole collection of `{item}`")
        watch_messages[f"{cid}Resync"] = {
            "name": f"{cid}Resync", "title": "Resync", "contentType": "text/event-stream",
            "summary": "`event: resync`, `id:` the version, `data:` the full list (first, and when a resume is "
                       "older than the changes kept)", "payload": _ref(resync)}
        watch_messages[f"{cid}Change"] = {
            "name": f"{cid}Change", "title": "Change", "contentType": "text/event-stream",
            "summary": "`event: added|modified|deleted`, `id:` the version, `data:` the object (a deleted one as "
                       "last seen)", "payload": _ref(item)}
        channel(cid, path, http,
                f"`GET {path}?watch=true`: the collection's changes as Server-Sent Events; send the last `id` back "
                "as `Last-Event-ID` to resume; a comment heartbeat every 15 s.", [f"{cid}Resync", f"{cid}Change"],
                http_query={"properties": {"watch": {"type": "boolean", "const": True}, "remote": QUERY["remote"],
                                           "project": QUERY["project"], "ticket": QUERY["ticket"]},
                            "required": ["watch"]})
    messages = {**_messages(), **watch_messages}
    schemas = copy.deepcopy(openapi.get("components", {}).get("schemas", {}))
    own = {**STREAM_SCHEMAS, **watch_schemas}
    components_schemas = {**_reachable(schemas, [own]), **own}
    return {
        "asyncapi": VERSION,
        "info": {"title": f"{openapi['info']['title']} streams", "version": openapi["info"]["version"],
                 "description": "The websockets and Server-Sent Events of the gateway (its REST API is the OpenAPI "
                                "document at `/openapi.json`). " + STREAM_AUTH,
                 "contact": copy.deepcopy(INFO["contact"]), "license": LICENSE},
        "defaultContentType": "application/json",
        "servers": {
            "websocket": {"host": "127.0.0.1:8080", "protocol": "ws", "description": "the gateway on its default "
                          "address (`LXDGW_BIND`; `wss` behind TLS)",
                          "security": [{"$ref": "#/components/securitySchemes/bearer"},
                                       {"$ref": "#/components/securitySchemes/ticket"}]},
            "http": {"host": "127.0.0.1:8080", "protocol": "http", "description": "the gateway, for Server-Sent "
                     "Events (`text/event-stream`)",
                     "security": [{"$ref": "#/components/securitySchemes/bearer"},
                                  {"$ref": "#/components/securitySchemes/ticket"}]},
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": _asyncapi_schema(components_schemas),
            "messages": messages,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API token"},
                "ticket": {"type": "httpApiKey", "name": "ticket", "in": "query",
                           "description": "A one-time ticket from `POST /v1/tickets`"},
            },
        },
    }


def install_asyncapi(app: FastAPI) -> None:
    """`GET /asyncapi.json`: the AsyncAPI document, public like `/openapi.json`."""

    document: dict[str, Any] = {}

    @app.get("/asyncapi.json", include_in_schema=False)
    async def asyncapi() -> JSONResponse:
        if not document:
            document.update(asyncapi_document(app.openapi()))
        return JSONResponse(document)
