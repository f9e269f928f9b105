"""The gateway's job kinds are the ones `JOB_KINDS` lists where the app is made: nothing registers on import."""

from __future__ import annotations

from pathlib import Path

from app.jobs.kinds import CancelPolicy, JobKind, JobKinds
from app.main import JOB_KINDS, create_app
from app.settings import Settings

PRODUCT_KINDS = {
    "container.create", "container.delete", "container.remove-many", "container.start", "container.stop",
    "container.restart", "container.freeze", "container.unfreeze", "container.rename", "container.copy",
    "container.publish", "snapshot.create", "snapshot.restore", "snapshot.delete", "container.exec",
    "image.find", "image.copy", "image.import", "image.delete",
    "volume-snapshot.create", "volume-snapshot.restore", "volume-snapshot.delete",
}


def test_the_app_runs_exactly_the_listed_kinds(tmp_path: Path) -> None:
    app = create_app(Settings(_env_file=None, data_dir=tmp_path / "data"))  # type: ignore[call-arg]
    kinds: JobKinds = app.state.job_kinds
    assert set(kinds.names()) == PRODUCT_KINDS == {k.name for k in JOB_KINDS}
    assert len(JOB_KINDS) == len(PRODUCT_KINDS)
    assert kinds.get("container.create").cancel is CancelPolicy.ROLLBACK_AFTER_STEP
    assert kinds.get("container.exec").cancel is CancelPolicy.KILL_PROCESS
    assert kinds.get("snapshot.delete").description == "Delete a snapshot."


def test_two_apps_keep_their_own_kinds(tmp_path: Path) -> None:
    first = create_app(Settings(_env_file=None, data_dir=tmp_path / "a"))  # type: ignore[call-arg]
    second = create_app(Settings(_env_file=None, data_dir=tmp_path / "b"))  # type: ignore[call-arg]
    first.state.job_kinds.register(JobKind.of("test.only-here", JOB_KINDS[0].run))
    assert "test.only-here" in first.state.job_kinds.names()
    assert "test.only-here" not in second.state.job_kinds.names()
