"""What `pip install` gives, each in a fresh virtual environment: the server's `lxd-gateway` command, whose
`--version` and `--help` answer at once and start nothing; and the client distribution alone, which brings its
command and none of the server (no FastAPI)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _venv(where: Path, *install: str) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=120)
    pip = subprocess.run([str(where / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", *install],
                         capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stderr[-3000:]
    return where / "bin"


def test_pip_install_gives_the_lxd_gateway_command(tmp_path: Path) -> None:
    bin_ = _venv(tmp_path / "server", str(ROOT))
    start = time.monotonic()
    r = subprocess.run([str(bin_ / "lxd-gateway"), "--version"], capture_output=True, text=True, timeout=30,
                       cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "LXDGW_BIND": "127.0.0.1:1"})
    took = time.monotonic() - start
    assert r.returncode == 0 and r.stdout.strip() == "lxd-gateway 0.1.0", (r.stdout, r.stderr)
    assert took < 10, f"--version took {took:.1f}s"
    r = subprocess.run([str(bin_ / "lxd-gateway"), "--help"], capture_output=True, text=True, timeout=30,
                       cwd=tmp_path)
    assert r.returncode == 0 and all(c in r.stdout for c in ("serve", "tokens", "db")), r.stdout
    assert "Uvicorn running" not in r.stdout + r.stderr
    r = subprocess.run([str(bin_ / "python"), "-c", "import importlib.resources as r; "
                        "print(r.files('app.ui').joinpath('static').is_dir())"], capture_output=True, text=True,
                       timeout=30, cwd=tmp_path)
    assert r.stdout.strip() == "True", r.stderr  # the console's assets are in the installed package


def test_the_client_installs_alone_without_the_server(tmp_path: Path) -> None:
    bin_ = _venv(tmp_path / "client", str(ROOT / "client"))
    r = subprocess.run([str(bin_ / "lxd-gateway-client"), "--help"], capture_output=True, text=True, timeout=60,
                       cwd=tmp_path)
    assert r.returncode == 0 and "launch" in r.stdout and "exec" in r.stdout, r.stdout + r.stderr
    for module in ("fastapi", "uvicorn", "app"):
        r = subprocess.run([str(bin_ / "python"), "-c", f"import {module}"], capture_output=True, text=True,
                           timeout=30, cwd=tmp_path)
        assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr, (module, r.stderr)
