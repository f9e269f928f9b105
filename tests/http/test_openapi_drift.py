"""The committed OpenAPI document is exactly what the app serves (`make openapi` rewrites it)."""

from __future__ import annotations

from pathlib import Path

from app.openapi_dump import current_schema, render

COMMITTED = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


def test_committed_openapi_matches_the_app() -> None:
    assert COMMITTED.read_text() == render(current_schema()), (
        "openapi/openapi.json is out of date: run `make openapi` and commit it")


def test_bundled_swagger_ui_renders_openapi_3_1() -> None:
    from swagger_ui_bundle import swagger_ui_path

    version = Path(str(swagger_ui_path)).name.removeprefix("swagger-ui-")
    assert current_schema()["openapi"].startswith("3.1")
    assert int(version.split(".")[0]) >= 5, f"Swagger UI {version} cannot render OpenAPI 3.1"
