"""`app.lxd` stands alone: no FastAPI, jobs, API, settings or core imports."""

from __future__ import annotations

import ast
from pathlib import Path

import app.lxd

FORBIDDEN = ("fastapi", "starlette", "app.jobs", "app.api", "app.settings", "app.core")


def test_lxd_package_imports_nothing_of_the_service() -> None:
    root = Path(app.lxd.__file__).parent
    bad: list[str] = []
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{path.name}: {n}" for n in names if n.startswith(FORBIDDEN)]
    assert bad == []
