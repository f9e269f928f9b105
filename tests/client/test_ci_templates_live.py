"""The CI templates run for real: their shell steps, in their order and with their failure rules (GitHub: a failed
step skips the rest but `if: always()`; GitLab: `after_script` runs whatever `script` did), against a gateway
process and the real LXD, with the busybox image and a test command of ours. The install step is left out: the
client is already installed beside this interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from lxdgw_client import Client, GatewayError

from tests.client.support import Gateway, new_name
from tests.client.test_ci_templates import GITHUB, GITLAB


def _env(gateway: Gateway, declared: dict[str, Any], tmp: Path, **values: str) -> dict[str, str]:
    """The job's environment: what the template declares, with the values a CI system would fill in given here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LXDGW_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for key, value in declared.items():
        env[key] = str(value)
    env.update({"LXDGW_URL": gateway.url, "LXDGW_TOKEN": gateway.token, "RUNNER_TEMP": str(tmp)}, **values)
    return env


def _bash(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], env=env, cwd=cwd,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)


def _sources(tmp: Path) -> Path:
    work = tmp / "checkout"
    work.mkdir()
    (work / "README.md").write_text("the repository under test\n")
    return work


def _gone(gateway: Gateway, name: str) -> bool:
    with Client(gateway.url, gateway.token) as gw:
        try:
            gw.containers.get(name)
        except GatewayError as exc:
            return exc.status == 404
    return False


def run_github(gateway: Gateway, tmp: Path, **values: str) -> list[tuple[str, subprocess.CompletedProcess[str]]]:
    job = yaml.safe_load(GITHUB.read_text())["jobs"]["test"]
    env = _env(gateway, job["env"], tmp, **values)
    work = _sources(tmp)
    ran: list[tuple[str, subprocess.CompletedProcess[str]]] = []
    failed = False
    for step in job["steps"]:
        if "run" not in step or step["name"] == "Install the client":
            continue
        if failed and step.get("if") != "always()":
            continue
        result = _bash(step["run"], env, work)
        ran.append((step["name"], result))
        failed = failed or result.returncode != 0
    return ran


def test_github_workflow_runs_the_tests_and_deletes_the_container(gateway: Gateway, tmp_path: Path) -> None:
    name = new_name()
    ran = run_github(gateway, tmp_path, NAME=name, IMAGE="busybox",
                     TEST_COMMAND='test -f README.md && echo "tests ran in $(pwd)"')
    assert [n for n, _ in ran] == ["Launch the container", "Copy the sources in", "Run the tests",
                                   "Delete the container"]
    for step, result in ran:
        assert result.returncode == 0, (step, result.stdout, result.stderr)
    assert dict(ran)["Run the tests"].stdout == "tests ran in /root/src\n"
    assert "progress: " in dict(ran)["Launch the container"].stderr
    assert _gone(gateway, name)


def test_github_workflow_deletes_the_container_when_the_tests_fail(gateway: Gateway, tmp_path: Path) -> None:
    name = new_name()
    ran = dict(run_github(gateway, tmp_path, NAME=name, IMAGE="busybox", TEST_COMMAND="echo failing; exit 3"))
    assert ran["Run the tests"].returncode == 3 and ran["Run the tests"].stdout == "failing\n"
    assert ran["Delete the container"].returncode == 0, ran["Delete the container"].stderr
    assert _gone(gateway, name)


def test_gitlab_job_runs_after_script_when_the_tests_fail(gateway: Gateway, tmp_path: Path) -> None:
    job = yaml.safe_load(GITLAB.read_text())["test-in-lxd"]
    name = new_name()
    env = _env(gateway, job["variables"], tmp_path, NAME=name, IMAGE="busybox",
               TEST_COMMAND="test -f README.md && echo ran && exit 4")
    work = _sources(tmp_path)
    script = _bash("\n".join(job["script"]), env, work)  # each line must succeed, as GitLab runs them
    assert script.returncode == 4 and script.stdout.endswith("ran\n"), (script.stdout, script.stderr)
    after = _bash("\n".join(job["after_script"]), env, work)
    assert after.returncode == 0, after.stderr
    assert _gone(gateway, name)


def test_github_workflow_cleans_up_quietly_when_the_launch_failed(gateway: Gateway, tmp_path: Path) -> None:
    name = new_name()
    ran = run_github(gateway, tmp_path, NAME=name, IMAGE="no-such-image-alias", TEST_COMMAND="true")
    assert [n for n, _ in ran] == ["Launch the container", "Delete the container"]
    launch, delete = (result for _, result in ran)
    assert launch.returncode == 1 and "Image not found" in launch.stderr, launch.stderr
    assert delete.returncode == 0 and "nothing to delete" in delete.stderr, delete.stderr
    assert _gone(gateway, name)
