"""Which harness directories count as left behind by a finished run: a directory that names its owner process
(`owner.pid`, as the tests' private PostgreSQL does) is left alone while that process lives, however old it is."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from app.locallxd.daemon import DIR_PREFIX, STATELESS_GRACE, stale_dirs


def _old_dir(base: Path, name: str, owner: int | None) -> Path:
    d = base / f"{DIR_PREFIX}{name}"
    d.mkdir()
    if owner is not None:
        (d / "owner.pid").write_text(str(owner))
    past = time.time() - STATELESS_GRACE - 60
    os.utime(d, (past, past))
    return d


def test_a_directory_whose_owner_lives_is_not_stale_however_old(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    mine = _old_dir(tmp_path, "pg-live", os.getpid())
    gone = _old_dir(tmp_path, "pg-dead", dead.pid)
    nameless = _old_dir(tmp_path, "old", None)
    stale = set(stale_dirs(tmp_path))
    assert mine not in stale
    assert gone in stale and nameless in stale
