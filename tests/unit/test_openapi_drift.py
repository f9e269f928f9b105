"""The committed OpenAPI document is exactly what the app serves (`make openapi` rewrites it)."""

from __future__ import annotations

from pathlib import Path

from app.openapi_dump import current_schema, render

COMMITTED = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


def test_committed_openapi_matches_the_app() -> None:
    assert COMMITTED.read_text() == render(current_schema()), (
        "openapi/openapi.json is out of date: run `make openapi` and commit it")
