"""Print the app's OpenAPI document as committed in openapi/openapi.json (`make openapi`)."""

from __future__ import annotations

import json
from typing import Any

from app.main import create_app
from app.settings import RemoteSettings, Settings


def current_schema() -> dict[str, Any]:
    settings = Settings(remotes=[RemoteSettings(name="local", url="unix:///nonexistent", default=True)],
                        _env_file=None)  # type: ignore[call-arg]
    return create_app(settings).openapi()


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(current_schema()), end="")
