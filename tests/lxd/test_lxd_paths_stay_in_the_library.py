"""LXD's URL paths are written in app.lxd only: every other package reaches LXD through its typed calls.

app.locallxd (which brings up a local LXD for `make run` without the gateway's client) and schema examples
(`used_by` lists as LXD returns them) are the exceptions."""

from __future__ import annotations

import re
from pathlib import Path

APP = Path(__file__).resolve().parents[3] / "app"
LXD_PATH = re.compile(r"""(?<![\w])f?["']/1\.0\b""")


def test_no_lxd_path_outside_app_lxd() -> None:
    offending = []
    for source in sorted(APP.rglob("*.py")):
        package = source.relative_to(APP).parts[0]
        if package in ("lxd", "locallxd"):
            continue
        for number, line in enumerate(source.read_text().splitlines(), 1):
            if LXD_PATH.search(line) and "examples=" not in line:
                offending.append(f"{source.relative_to(APP.parent)}:{number}: {line.strip()}")
    assert offending == []


def test_the_check_sees_a_path() -> None:
    assert LXD_PATH.search('client.request("GET", "/1.0/instances")')
    assert LXD_PATH.search("f'/1.0/instances/{name}'")
    assert not LXD_PATH.search('"https://host/1.0"')
