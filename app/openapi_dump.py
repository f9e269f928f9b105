"""Print the app's OpenAPI document as committed in openapi/openapi.json (`make openapi`); with `--asyncapi`, the
AsyncAPI document of its streams as committed in openapi/asyncapi.json."""

from __future__ import annotations

import json
import sys
from typing import Any

from app.http.asyncapi import asyncapi_document
from app.main import create_app
from app.settings import RemoteSettings, Settings


def current_schema() -> dict[str, Any]:
    settings = Settings(remotes=[RemoteSettings(name="local", url="unix:///nonexistent", default=True)],
                        _env_file=None)  # type: ignore[call-arg]
    return create_app(settings).openapi()


def current_asyncapi() -> dict[str, Any]:
    return asyncapi_document(current_schema())


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(current_asyncapi() if "--asyncapi" in sys.argv[1:] else current_schema()), end="")
