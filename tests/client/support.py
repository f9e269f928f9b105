"""Helpers of the client's tests: the gateway they talk to, and the command line run as a subprocess (not a
terminal: plain output), as a CI job runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.containers.support import unique
from tests.support.gateway import GatewayProcess

PREFIX = "lgc-"  # every container of these tests; removed after each module


def cli_path() -> str:
    """The installed `lxd-gateway-client` entry point beside this interpreter (`pip install -e ./client`)."""
    path = Path(sys.executable).parent / "lxd-gateway-client"
    assert path.exists(), f"{path} is missing: install the client (`pip install -e ./client`, done by make test)"
    return str(path)


@dataclass
class Gateway:
    process: GatewayProcess
    token: str
    admin: str

    @property
    def url(self) -> str:
        return self.process.base

    def env(self, token: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LXDGW_")}
        env.update({"LXDGW_URL": self.url, "LXDGW_TOKEN": token or self.token, "COLUMNS": "200"})
        return env

    def cli(self, *args: str, input: str | bytes | None = None, token: str | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run the command line to its end (stdout and stderr captured, not a terminal)."""
        data = input.encode() if isinstance(input, str) else input
        run = subprocess.run([cli_path(), *args], env=self.env(token), input=data,
                             stdin=None if data is not None else subprocess.DEVNULL, capture_output=True,
                             timeout=timeout)
        return subprocess.CompletedProcess(run.args, run.returncode, run.stdout.decode(errors="replace"),
                                           run.stderr.decode(errors="replace"))

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """Start the command line (as a person would from a shell: Ctrl-C (SIGINT) interrupts it even when this test
        runs as a background job, whose children inherit SIGINT ignored)."""
        return subprocess.Popen([cli_path(), *args], env=self.env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=_default_sigint)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def new_name() -> str:
    return unique(PREFIX.rstrip("-"))
