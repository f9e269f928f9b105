"""The end-to-end CI example of docs/api.md, extracted and run verbatim with bash against a real gateway process
(`python -m app`, as `make run` starts it) in front of the private LXD."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from pathlib import Path

from app.locallxd.daemon import DaemonInfo
from tests.containers.support import ROOT, free_port, remove_all, start_gateway, stop_gateway, unique


def ci_example() -> str:
    text = (ROOT / "docs" / "api.md").read_text()
    m = re.search(r"<!-- ci-example:begin -->\s*```sh\n(.*?)```\s*<!-- ci-example:end -->", text, re.S)
    assert m, "docs/api.md has no ci-example block"
    return m.group(1)


def test_readme_ci_example_runs_verbatim(tmp_path: Path, lxd_daemon: DaemonInfo) -> None:
    script = ci_example()
    assert "Idempotency-Key" in script and "wait=" in script and "/exec" in script and "/files" in script
    port = free_port()
    proc = start_gateway(lxd_daemon, tmp_path / "data", port, tmp_path / "gateway.log")
    name = unique("trm")
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LXDGW_")}
        env.update({"GW": f"http://127.0.0.1:{port}", "NAME": name})
        work = tmp_path / "ci"
        work.mkdir()
        run = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True,
                             timeout=240)
        assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
        assert run.stdout == "built\n"
        assert (work / "artifact.txt").read_text() == "built\n"
        # and it cleaned up after itself
        left = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                               f"http://127.0.0.1:{port}/v1/containers/{name}"], capture_output=True, text=True)
        assert left.stdout == "404"
    finally:
        stop_gateway(proc)
        asyncio.run(remove_all(lxd_daemon.socket_path, name))
