"""The CI templates in examples/ci: valid YAML by the house's yamllint rules, valid by the GitHub workflow and GitLab
CI schemas (check-jsonschema's bundled copies, no network), and shaped as their comments promise (the container is
always deleted, `exec` never reads the runner's standard input)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "examples" / "ci"
GITHUB = CI / "github-actions.yml"
GITLAB = CI / "gitlab-ci.yml"


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def commands(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("lxd-gateway-client")]


def test_yamllint_passes_strictly() -> None:
    run = subprocess.run([sys.executable, "-m", "yamllint", "--strict", "-c", str(ROOT / ".yamllint.yaml"),
                          str(CI)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize(("path", "schema"), [(GITHUB, "vendor.github-workflows"), (GITLAB, "vendor.gitlab-ci")])
def test_valid_by_the_ci_schema(path: Path, schema: str) -> None:
    tool = Path(sys.executable).parent / "check-jsonschema"
    run = subprocess.run([str(tool), "--builtin-schema", schema, str(path)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_github_workflow_always_deletes_the_container() -> None:
    steps = load(GITHUB)["jobs"]["test"]["steps"]
    runs = [s for s in steps if "run" in s]
    assert runs[-1]["if"] == "always()" and commands(runs[-1]["run"])[0].startswith('lxd-gateway-client delete')
    assert all("if" not in s for s in runs[:-1]), "only the clean-up runs after a failure"
    used = [c for s in runs for c in commands(s["run"])]
    assert any(c.startswith("lxd-gateway-client launch") and "--wait" in c for c in used)
    assert all(" -n " in c for c in used if c.startswith("lxd-gateway-client exec"))
    assert all("--idempotency-key" in c for c in used if c.split()[1] in ("launch", "delete"))
    env = load(GITHUB)["jobs"]["test"]["env"]
    assert "secrets.LXDGW_TOKEN" in env["LXDGW_TOKEN"]


def test_gitlab_job_always_deletes_the_container() -> None:
    job = load(GITLAB)["test-in-lxd"]
    assert [c.split()[1] for c in job["after_script"]] == ["delete"]
    assert [c.split()[1] for c in job["script"] if c.startswith("lxd-gateway-client")] == \
        ["launch", "file", "exec", "exec"]
    assert all(" -n " in c for c in job["script"] if c.startswith("lxd-gateway-client exec"))
    assert job["before_script"] == ['pip install "$CLIENT_PACKAGE"']
