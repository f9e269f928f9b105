"""Every file in deploy/ (and the Dockerfile) passes its linter and uses real settings names."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.locallxd.daemon import ensure_binary
from app.lxd.pem import Certificate
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent


def _run(*cmd: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)


def _documents(path: Path) -> dict[str, dict[str, Any]]:
    """The manifests of a multi-document YAML file by kind."""
    return {d["kind"]: d for d in yaml.safe_load_all(path.read_text()) if d}


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


def _nginx_t(tmp_path: Path, site: str) -> subprocess.CompletedProcess[str]:
    nginx = ensure_binary("nginx", "nginx-light")
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  include {tmp_path}/site.conf;\n}}\n")
    return _run(nginx, "-t", "-p", tmp_path, "-c", tmp_path / "nginx.conf")


def test_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    cert = Certificate.generate()
    (tmp_path / "lxd-gateway.crt").write_bytes(cert.cert_pem)
    (tmp_path / "lxd-gateway.key").write_bytes(cert.key_pem)
    site = (DEPLOY / "nginx" / "lxd-gateway.conf").read_text().replace("/etc/nginx/tls/", f"{tmp_path}/")
    r = _nginx_t(tmp_path, site)
    assert r.returncode == 0, r.stderr
    assert "proxy_buffering off" in site and "proxy_read_timeout 330s" in site  # longer than the longest wait


def _location(site: str, pattern: str) -> str:
    """The body of the `location ~ <pattern>` block of an nginx config."""
    match = re.search(r"location ~ " + re.escape(pattern) + r" \{(.*?)\n    \}", site, re.S)
    assert match, f"no location {pattern}"
    return match[1]


def test_replicas_nginx_config_balances_three_replicas_and_passes_nginx_t(tmp_path: Path) -> None:
    site = (DEPLOY / "nginx" / "lxd-gateway-replicas.conf").read_text()
    upstream = re.search(r"upstream lxd_gateway_replicas \{(.*?)\}", site, re.S)
    assert upstream and re.findall(r"server (gateway-\d):8080", upstream[1]) == ["gateway-1", "gateway-2",
                                                                                 "gateway-3"]
    # the compose services' names resolve only on the compose network: nginx -t resolves them on loopback here
    r = _nginx_t(tmp_path, re.sub(r"gateway-(\d):8080", r"127.0.0.1:808\1", site))
    assert r.returncode == 0, r.stderr
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in site
    assert "proxy_read_timeout 330s" in site  # longer than the longest ?wait=
    websockets = _location(site, "^/v1/(jobs/ws|jobs/[^/]+/ws|events|containers/[^/]+/(exec/ws|console))$")
    assert "proxy_set_header Upgrade $http_upgrade;" in websockets
    assert "proxy_set_header Connection $connection_upgrade;" in websockets
    assert "proxy_read_timeout 3600s;" in websockets
    sse = _location(site, "^/v1/jobs/[^/]+/events$")
    assert "proxy_buffering off;" in sse and "proxy_read_timeout 3600s;" in sse


def _compose_config(path: Path) -> subprocess.CompletedProcess[str]:
    compose = ensure_binary("docker-compose", "docker-compose")
    env = {**os.environ, "LXD_GATEWAY_DB_PASSWORD": "0123abcd", "LXD_SOCKET_GID": "997"}
    return _run(compose, "-f", path, "config", env=env)


@pytest.mark.parametrize("name", ["compose.yaml", "replicas.yaml"])
def test_compose_files_pass_docker_compose_config(name: str) -> None:
    r = _compose_config(DEPLOY / "compose" / name)
    assert r.returncode == 0, r.stderr


def test_replicas_compose_runs_three_gateways_on_postgresql_behind_nginx() -> None:
    path = DEPLOY / "compose" / "replicas.yaml"
    r = _compose_config(path)
    assert r.returncode == 0, r.stderr
    services = yaml.safe_load(r.stdout)["services"]
    single = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())["services"]["lxd-gateway"]
    assert services["postgres"]["image"] == "postgres:15"
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/db_password"
    gateways = sorted(name for name in services if name.startswith("gateway-"))
    assert gateways == ["gateway-1", "gateway-2", "gateway-3"]
    for name in gateways:
        service = services[name]
        env = service["environment"]
        assert env["LXDGW_DATABASE_URL"] == "postgresql://lxdgw:0123abcd@postgres:5432/lxdgw"  # from the environment
        assert env["LXDGW_SECRET_KEY_FILE"] == "/run/secrets/secret_key"
        assert env["LXD_SOCKET"] == single["environment"]["LXD_SOCKET"]
        assert "ports" not in service  # reached through nginx only
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name, service in yaml.safe_load(path.read_text())["services"].items():  # as written (before interpolation)
        if name.startswith("gateway-"):
            assert single["volumes"][0] in service["volumes"]  # the LXD socket, mounted as the single one does
            assert service["group_add"] == single["group_add"] and service["build"] == single["build"]
    nginx = yaml.safe_load(path.read_text())["services"]["nginx"]
    assert nginx["volumes"] == ["../nginx/lxd-gateway-replicas.conf:/etc/nginx/conf.d/default.conf:ro"]
    assert set(nginx["depends_on"]) == set(gateways)
    raw = path.read_text()
    assert "LXDGW_SECRET_KEY:" not in raw and "POSTGRES_PASSWORD:" not in raw  # secrets come from files or env
    assert "${LXD_GATEWAY_DB_PASSWORD:?" in raw


def test_kubernetes_replicas_deployment_reads_its_secrets_and_probes_real_endpoints() -> None:
    docs = _documents(DEPLOY / "kubernetes" / "lxd-gateway-replicas.yaml")
    assert set(docs) == {"ConfigMap", "Deployment", "PodDisruptionBudget", "Service"}
    deployment = docs["Deployment"]["spec"]
    assert deployment["replicas"] == 3
    assert deployment["strategy"]["type"] == "RollingUpdate"
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 1
    (container,) = deployment["template"]["spec"]["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert set(refs) == {"LXDGW_DATABASE_URL", "LXDGW_SECRET_KEY"}
    assert {r["name"] for r in refs.values()} == {"lxd-gateway-replicas"}
    paths = set(json.loads((ROOT / "openapi" / "openapi.json").read_text())["paths"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert {"/readyz", "/livez"} <= paths
    pdb = docs["PodDisruptionBudget"]["spec"]
    assert pdb.get("maxUnavailable") == 1 or pdb.get("minAvailable") == 2
    labels = deployment["template"]["metadata"]["labels"]
    assert pdb["selector"]["matchLabels"] == deployment["selector"]["matchLabels"] == labels
    assert docs["Service"]["spec"]["selector"] == labels


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
