"""Every file in deploy/ (and the Dockerfile) passes its linter and uses real settings names."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.locallxd.daemon import ensure_binary
from app.lxd.pem import Certificate
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent


def _run(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_dockerfile_passes_hadolint() -> None:
    r = _run(BIN / "hadolint", "Dockerfile")
    assert r.returncode == 0, r.stdout + r.stderr


def test_yaml_passes_yamllint() -> None:
    r = _run(BIN / "yamllint", "-s", "-c", ".yamllint.yaml", "deploy", ".yamllint.yaml", ".hadolint.yaml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_kubernetes_manifests_validate() -> None:
    r = _run(BIN / "kubernetes-validate", "--strict", *sorted((DEPLOY / "kubernetes").glob("*.yaml")))
    assert r.returncode == 0, r.stdout + r.stderr
    kinds = set(re.findall(r"^kind: (\w+)", (DEPLOY / "kubernetes" / "lxd-gateway.yaml").read_text(), re.M))
    assert kinds == {"Deployment", "Service", "ConfigMap", "Secret"}


def test_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    nginx = ensure_binary("nginx", "nginx-light")
    cert = Certificate.generate()
    (tmp_path / "lxd-gateway.crt").write_bytes(cert.cert_pem)
    (tmp_path / "lxd-gateway.key").write_bytes(cert.key_pem)
    site = (DEPLOY / "nginx" / "lxd-gateway.conf").read_text().replace("/etc/nginx/tls/", f"{tmp_path}/")
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  include {tmp_path}/site.conf;\n}}\n")
    r = _run(nginx, "-t", "-p", tmp_path, "-c", tmp_path / "nginx.conf")
    assert r.returncode == 0, r.stderr
    assert "proxy_buffering off" in site and "proxy_read_timeout 330s" in site  # longer than the longest wait


def test_systemd_unit_is_hardened() -> None:
    unit = (DEPLOY / "systemd" / "lxd-gateway.service").read_text()
    for directive in ("ProtectSystem=strict", "NoNewPrivileges=yes", "Group=lxd", "ExecStart="):
        assert directive in unit


@pytest.mark.parametrize("path", sorted(p for p in [*DEPLOY.rglob("*"), ROOT / "Dockerfile"] if p.is_file()),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_deploy_files_use_real_settings_names(path: Path) -> None:
    known = {f"LXDGW_{name.upper()}" for name in Settings.model_fields}
    used = set(re.findall(r"LXDGW_[A-Z_]+", path.read_text()))
    assert used <= known, f"unknown settings in {path.name}: {sorted(used - known)}"
