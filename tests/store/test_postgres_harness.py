"""The private PostgreSQL harness (tests/support/postgres.py) says what is wrong instead of skipping."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.locallxd.daemon import HarnessError
from tests.support import postgres


def test_missing_binaries_without_root_name_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres, "find_bindir", lambda: None)
    monkeypatch.setattr(postgres.os, "geteuid", lambda: 1000)
    with pytest.raises(HarnessError, match="apt-get install postgresql"):
        postgres.ensure_postgres()


def test_a_server_that_cannot_start_is_an_error_with_its_output(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    initdb = bindir / "initdb"
    initdb.write_text("#!/bin/sh\necho 'initdb: cannot create directory' >&2\nexit 1\n")
    initdb.chmod(0o755)
    monkeypatch.setattr(postgres, "find_bindir", lambda: bindir)
    monkeypatch.setattr(postgres.os, "geteuid", lambda: 1000)  # run the fake as this user
    with pytest.raises(HarnessError, match=r"initdb failed .*cannot create directory"), postgres.private_postgres():
        pass
