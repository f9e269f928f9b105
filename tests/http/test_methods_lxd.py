"""405 answers list every method a path has, and a method a path lacks is a 405 even when the path also fits
another route's template (`GET /v1/images/find` is not an image named "find")."""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

import httpx
import jsonschema

from app.locallxd.daemon import DaemonInfo
from app.lxd.client import Client

METHODS = ("get", "put", "post", "patch", "delete")


def _sample(path: str, operations: dict[str, Any]) -> str:
    """`path` with each parameter set to its documented example (a value valid for every route of the path)."""
    examples: dict[str, str] = {}
    for op in operations.values():
        for p in op.get("parameters", []):
            if p["in"] == "path":
                ex = p.get("example") or (p.get("examples") or [None])[0] or (p["schema"].get("examples") or [None])[0]
                if ex is not None and p["name"] not in examples:
                    examples[p["name"]] = str(ex)
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: examples.get(m.group(1), "a1"), path)


def _fits(url: str, path: str, operations: dict[str, Any]) -> bool:
    """Whether `url` fits the documented `path` with parameters valid per their schema (the last one may hold `/`)."""
    patterns = {p["name"]: p["schema"].get("pattern") for op in operations.values()
                for p in op.get("parameters", []) if p["in"] == "path"}
    want, have = path.strip("/").split("/"), url.strip("/").split("/")
    if len(have) > len(want) and not want[-1].startswith("{"):
        return False
    if len(have) > len(want):
        have = [*have[:len(want) - 1], "/".join(have[len(want) - 1:])]
    if len(have) != len(want):
        return False
    for w, h in zip(want, have, strict=True):
        if w.startswith("{"):
            pattern = patterns.get(w.strip("{}"))
            if pattern and not re.search(pattern, h):
                return False
        elif w != h:
            return False
    return True


async def test_405_allow_header_lists_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    items = {path: {m: op for m, op in item.items() if m in METHODS} for path, item in doc["paths"].items()}
    checked = 0
    wrong: list[str] = []
    for path, operations in items.items():
        url = _sample(path, operations)
        # a path can fit several documented paths (a container may be named "remove"): it has all their methods
        methods = {m for other, ops in items.items() if _fits(url, other, ops) for m in ops}
        for method in METHODS:
            if method in methods:
                continue
            r = await client.request(method.upper(), url, json={})
            checked += 1
            allow = sorted(m.strip().lower() for m in r.headers.get("allow", "").split(",") if m.strip())
            if r.status_code != 405 or allow != sorted(methods):
                wrong.append(f"{method.upper()} {url}: {r.status_code} Allow={allow} (has {sorted(methods)})")
            elif not r.headers["content-type"].startswith("application/problem+json"):
                wrong.append(f"{method.upper()} {url}: {r.headers['content-type']}")
    assert not wrong, "\n".join(wrong)
    assert checked > 200


async def test_get_on_a_post_only_path_that_fits_a_get_template_is_405(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/images/find")
    assert r.status_code == 405 and r.headers["allow"] == "POST", r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    # a path whose parameter is valid for the template is still that route (a container may be named "remove")
    r = await client.get("/v1/containers/remove")
    assert r.status_code == 404 and r.json()["type"].endswith("/container-not-found"), r.text


async def test_an_empty_cursor_is_the_first_page(client: httpx.AsyncClient) -> None:
    for path in ("/v1/jobs", "/v1/audit", "/v1/profiles", "/v1/containers"):
        r = await client.get(path, params={"cursor": ""})
        assert r.status_code == 200, (path, r.text)
        assert r.json() == (await client.get(path)).json() or path in ("/v1/jobs", "/v1/audit")


async def test_job_events_conform_to_the_documented_event_schema(client: httpx.AsyncClient,
                                                                 lxd_daemon: DaemonInfo) -> None:
    doc = (await client.get("/openapi.json")).json()
    schema = doc["paths"]["/v1/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]["text/event-stream"][
        "schema"]
    name = f"lgw-ev{secrets.token_hex(3)}"
    async with Client.unix(lxd_daemon.socket_path) as lxd:
        await lxd.instances.create(name, image=lxd_daemon.image_alias)
    r = await client.delete(f"/v1/containers/{name}", params={"wait": 60})
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    r = await client.get(f"/v1/jobs/{r.json()['id']}/events")
    events = []
    for block in r.text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if fields:
            events.append(fields)
    assert events and events[-1]["event"] == "end"
    for event in events:
        jsonschema.validate(event, schema)
        assert json.loads(event["data"])["seq"] == int(event["id"])


async def test_a_body_that_is_not_utf8_json_is_a_documented_400(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    r = await client.post("/v1/profiles", content=b"\xa4\xbe", headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert "400" in doc["paths"]["/v1/profiles"]["post"]["responses"]
    assert r.headers["content-type"].startswith("application/problem+json")
