"""What an idle gateway has loaded: the app imports no module that only some paths need, and the server process
leaves out the modules it never uses (`app.footprint`). Each import check runs in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from asgi_lifespan import LifespanManager

from app import footprint
from app.main import create_app
from app.settings import RemoteSettings, Settings

ROOT = Path(__file__).resolve().parents[1]

ONLY_ON_SOME_PATHS = (
    "psycopg", "psycopg_pool",  # the PostgreSQL job store, opened only when configured
    "cryptography",  # parsing or making a certificate (certificate and remote routes, an HTTPS remote's identity)
    "pylxd",  # the benchmark's comparison
    "schemathesis", "hypothesis", "pytest", "selenium",  # test tools
    "jinja2",  # the docs page is rendered by FastAPI's own string template
)
NEVER_IN_THE_SERVER = ("trio", "rich", "pygments", "httpx._main", "pydantic.v1", "watchfiles")

LOADED = """
import json, sys
from pathlib import Path
{prepare}
from app.main import create_app
from app.settings import RemoteSettings, Settings
settings = Settings(_env_file=None, data_dir=Path(sys.argv[1]), auth_enabled=False,
                    remotes=[RemoteSettings(name="local", url="unix:///nonexistent/unix.socket", default=True)])
app = create_app(settings)
{after}
print(json.dumps(sorted(name for name, module in sys.modules.items() if module is not None)))
"""


def loaded_modules(tmp_path: Path, *, prepare: str = "", after: str = "") -> set[str]:
    code = LOADED.format(prepare=prepare, after=after)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "data")], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


def loaded_packages(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


def test_the_app_leaves_what_only_some_paths_need_unimported(tmp_path: Path) -> None:
    modules = loaded_modules(tmp_path)
    assert "fastapi" in modules and "app.main" in modules
    assert loaded_packages(modules, ONLY_ON_SOME_PATHS) == []


def test_the_server_process_imports_neither_those_nor_what_it_never_uses(tmp_path: Path) -> None:
    # what `python -m app` imports: footprint first, then uvicorn, the listener, the app; settled after start-up
    modules = loaded_modules(
        tmp_path,
        prepare="from app import footprint\nfootprint.leave_out_unused()\nimport uvicorn, app.http.listener",
        after="footprint.settle()")
    assert {"uvicorn", "httpcore", "anyio._backends._asyncio"} <= modules
    assert loaded_packages(modules, ONLY_ON_SOME_PATHS + NEVER_IN_THE_SERVER) == []


def test_a_certificate_is_still_parsed_and_made(tmp_path: Path) -> None:
    # cryptography is imported where it is used
    code = ("from app.lxd.pem import Certificate\nc = Certificate.generate('x', common_name='x')\n"
            "print(len(c.fingerprint()), c.x509().subject.rfc4514_string())")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=True)
    assert out.stdout.split() == ["64", "CN=x,O=linuxcontainers.org"]


def test_leave_out_unused_marks_only_what_is_not_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "lxdgw_absent_module", raising=False)
    marked = footprint.leave_out_unused(("json", "lxdgw_absent_module"))
    try:
        assert marked == ["lxdgw_absent_module"]
        assert sys.modules["json"] is not None
        with pytest.raises(ImportError):
            import lxdgw_absent_module  # type: ignore[import-not-found]  # noqa: F401
    finally:
        del sys.modules["lxdgw_absent_module"]


async def test_settle_runs_once_the_start_up_is_done(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", auth_enabled=False,  # type: ignore[call-arg]
                        remotes=[RemoteSettings(name="local", url="unix:///nonexistent/unix.socket", default=True)])
    app = create_app(settings)
    seen: list[bool] = []
    monkeypatch.setattr(footprint, "settle", lambda: seen.append(hasattr(app.state, "jobs")))
    footprint.settle_after_startup(app)
    async with LifespanManager(app):
        assert seen == [True]  # after the lifespan's start-up: the job engine was started
    assert seen == [True]
