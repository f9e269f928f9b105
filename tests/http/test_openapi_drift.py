"""The committed OpenAPI and AsyncAPI documents are exactly what the app serves (`make openapi` rewrites the
OpenAPI one, `python -m app.openapi_dump --asyncapi` the AsyncAPI one)."""

from __future__ import annotations

from pathlib import Path

from app.openapi_dump import current_asyncapi, current_schema, render

COMMITTED = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"
COMMITTED_ASYNCAPI = COMMITTED.with_name("asyncapi.json")


def test_committed_openapi_matches_the_app() -> None:
    assert COMMITTED.read_text() == render(current_schema()), (
        "openapi/openapi.json is out of date: run `make openapi` and commit it")


def test_committed_asyncapi_matches_the_app() -> None:
    assert COMMITTED_ASYNCAPI.read_text() == render(current_asyncapi()), (
        "openapi/asyncapi.json is out of date: run `python -m app.openapi_dump --asyncapi > openapi/asyncapi.json` "
        "and commit it")


def test_bundled_swagger_ui_renders_openapi_3_1() -> None:
    from swagger_ui_bundle import swagger_ui_path

    version = Path(str(swagger_ui_path)).name.removeprefix("swagger-ui-")
    assert current_schema()["openapi"].startswith("3.1")
    assert int(version.split(".")[0]) >= 5, f"Swagger UI {version} cannot render OpenAPI 3.1"
