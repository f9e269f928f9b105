"""The command line (`python -m app`, the same as `lxd-gateway`): only `serve` starts anything; `--version`,
`--help` and a missing command answer at once; the tokens commands work on the tokens file and say what failed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LXDGW_DATA_DIR": str(tmp_path / "data"), "LXDGW_BIND": "127.0.0.1:1"}
    env.pop("LXDGW_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


def test_version_help_and_no_command_start_nothing(tmp_path: Path) -> None:
    start = time.monotonic()
    r = run(tmp_path, "--version")
    assert r.returncode == 0 and r.stdout.startswith("lxd-gateway "), r.stdout + r.stderr
    assert time.monotonic() - start < 10
    for args in (("--help",), ("-h",), ("serve", "--help"), ("tokens", "--help"), ("db", "copy", "--help")):
        r = run(tmp_path, *args)
        assert r.returncode == 0 and "Usage:" in r.stdout, (args, r.stdout, r.stderr)
    r = run(tmp_path, "serve", "--help")
    assert "WEB_CONCURRENCY" in r.stdout
    r = run(tmp_path)
    assert r.returncode == 2 and "serve" in r.stdout + r.stderr  # the help, as a usage error: no command given
    r = run(tmp_path, "nonsense")
    assert r.returncode == 2 and "No such command" in r.stderr
    assert not (tmp_path / "data").exists()  # nothing was set up, nothing served


def test_tokens_create_list_revoke_and_their_errors(tmp_path: Path) -> None:
    r = run(tmp_path, "tokens", "create", "ci", "--scope", "write", "--project", "builds")
    assert r.returncode == 0, r.stderr
    secret = r.stdout.strip()
    assert secret and "not shown again" in r.stderr
    listed = [json.loads(line) for line in run(tmp_path, "tokens", "list").stdout.splitlines()]
    assert [(t["name"], t["scopes"], t["projects"]) for t in listed] == [("ci", ["write"], ["builds"])]
    assert secret not in json.dumps(listed)
    table = run(tmp_path, "tokens", "list", "-o", "table")
    assert table.returncode == 0 and "ci" in table.stdout and "builds" in table.stdout, table.stderr
    again = run(tmp_path, "tokens", "create", "ci", "--scope", "read")
    assert again.returncode == 1 and "a token named 'ci' exists" in again.stderr
    bad = run(tmp_path, "tokens", "create", "x", "--scope", "root")
    assert bad.returncode == 2 and "root" in bad.stderr
    rule = run(tmp_path, "tokens", "create", "x", "--scope", "write", "--allow", "no.such.rule")
    assert rule.returncode == 2 and "unknown policy rule 'no.such.rule'" in rule.stderr
    assert run(tmp_path, "tokens", "revoke", "ci").returncode == 0
    gone = run(tmp_path, "tokens", "revoke", "ci")
    assert gone.returncode == 1 and "no token named 'ci'" in gone.stderr
    assert run(tmp_path, "tokens", "list").stdout.strip() == ""
