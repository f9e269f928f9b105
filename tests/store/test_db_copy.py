"""`python -m app db copy`: an embedded job database copied into PostgreSQL reads the same there, once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from app.command import main as command_main
from app.jobs.models import Job, JobCleanup, JobStatus, new_job_id, utcnow
from app.jobs.store import JobFilter
from app.store.jobs import SQLiteJobStore
from app.store.postgres import PostgresJobStore

ROOT = Path(__file__).resolve().parents[2]


async def fill(path: Path) -> list[str]:
    """An SQLite job database with every kind of row: ended jobs with output and cleanups, an unfinished one,
    idempotency keys and audit records."""
    store = SQLiteJobStore(path)
    await store.open()
    ids = []
    try:
        for i in range(5):
            job = Job(id=new_job_id(), kind="container.exec", status=JobStatus.queued, created_at=utcnow(),
                      remote="local", project="default", resource=f"/v1/containers/c{i}", requested_by="ci",
                      token_id="tok-1")
            await store.insert(job, params={"command": ["echo", str(i)]}, owner_id="old", lease_until=time.time(),
                               request_id=f"req-{i}")
            await store.save_checkpoint(job.id, "created", {"name": f"c{i}"})
            if i < 4:
                job.status, job.started_at, job.finished_at = JobStatus.succeeded, utcnow(), utcnow()
                job.result = {"exit_code": 0, "stdout": f"out {i}\u0000", "stderr": ""}
                if i == 3:
                    job.status, job.result = JobStatus.failed, None
                    job.error = {"type": "x", "detail": "boom"}
                    job.cleanup = JobCleanup(status="pending", detail="c3 not removed yet", updated_at=utcnow())
                await store.save(job, seq=i + 2)
            ids.append(job.id)
        await store.idempotency_reserve("tok", "k1", "fp1", owner_id="old", now=time.time(), ttl=3600)
        await store.idempotency_complete("tok", "k1", ids[0])
        for n in range(3):
            await store.audit_append({"time": f"2026-11-0{n + 1}T12:00:00.000Z", "token": "ci", "method": "POST",
                                      "path": "/v1/containers", "status": 202, "outcome": "accepted",
                                      "job_id": ids[n], "request_id": f"req-{n}"})
    finally:
        await store.close()
    return ids


async def snapshot(store: SQLiteJobStore | PostgresJobStore, ids: list[str]) -> dict[str, object]:
    loaded = {i: await store.load(i) for i in ids}
    return {
        "jobs": {i: (s.job.model_dump(mode="json"), s.params, s.checkpoints, s.seq, s.position, s.owner_id,
                     s.lease_until, s.request_id) for i, s in loaded.items() if s is not None},
        "listed": [(r.job.id, r.position, r.has_output) for r in await store.list(JobFilter(), limit=100)],
        "cleanups": [s.job.id for s in await store.pending_cleanups()],
        "audit": await store.audit_list(limit=100),
        "key": await store.idempotency_reserve("tok", "k1", "other", owner_id="new", now=time.time(), ttl=60),
    }


def test_a_copy_reads_the_same_and_is_refused_the_second_time(tmp_path: Path, postgres_url: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "jobs.sqlite3"
    ids = asyncio.run(fill(source))
    assert command_main(["db", "copy", "--from", f"sqlite:///{source}", "--to", postgres_url]) == 0
    assert "copied 5 jobs (3 with output), 1 idempotency keys and 3 audit records" in capsys.readouterr().err

    async def compare() -> None:
        sqlite = SQLiteJobStore(source)
        postgres = PostgresJobStore(postgres_url)
        await sqlite.open()
        await postgres.open()
        try:
            before, after = await snapshot(sqlite, ids), await snapshot(postgres, ids)
            assert after == before
            assert len(before["jobs"]) == 5 and before["key"][1] is False  # type: ignore[arg-type,index]
            # what the gateway stores next is numbered after the copied rows
            job = Job(id=new_job_id(), kind="k", status=JobStatus.queued, created_at=utcnow())
            await postgres.insert(job, params={}, owner_id="new", lease_until=0)
            assert (await postgres.list(JobFilter(), limit=1))[0].position > max(
                p for _, p, _ in before["listed"])  # type: ignore[attr-defined]
            assert await postgres.prune(utcnow() + timedelta(days=1)) == 4  # the ended ones, outputs with them
        finally:
            await postgres.close()
            await sqlite.close()

    asyncio.run(compare())
    assert command_main(["db", "copy", "--from", f"sqlite:///{source}", "--to", postgres_url]) == 1
    assert "already holds" in capsys.readouterr().err


def test_a_source_in_use_by_a_gateway_is_refused(tmp_path: Path, postgres_url: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "jobs.sqlite3"
    asyncio.run(fill(source))

    async def copy_while_open() -> int:
        store = SQLiteJobStore(source)
        await store.open()  # a running gateway holds the lock
        try:
            return await asyncio.to_thread(command_main, ["db", "copy", "--from", f"sqlite:///{source}",
                                                          "--to", postgres_url])
        finally:
            await store.close()

    assert asyncio.run(copy_while_open()) == 1
    assert "stop it before copying" in capsys.readouterr().err
    # once it stopped: `python -m app db copy` copies
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "app", "db", "copy", "--from", f"sqlite:///{source}", "--to",
                        postgres_url], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "copied 5 jobs" in r.stderr, r.stderr


def _data_dir_with_tokens_and_a_remote(data: Path) -> tuple[str, bytes]:
    """A data directory as an SQLite gateway leaves it: a token in the tokens file, a remote added at run time."""
    from app.lxd.pem import Certificate
    from app.lxd.registry import RemoteSpec
    from app.store.remotes import RemoteStore
    from app.store.tokens import Scope, TokenStore

    _, secret = TokenStore(data / "tokens.json").create("ci", [Scope.write])
    store = RemoteStore(data)
    cert = Certificate.generate("lxd-gateway-lxd2", common_name="lxd-gateway-lxd2")
    cert_path, key_path = store.write_identity("lxd2", cert)
    store.write_server_cert("lxd2", "-----BEGIN CERTIFICATE-----\nserver\n-----END CERTIFICATE-----\n")
    store.save(RemoteSpec(name="lxd2", url="https://192.0.2.1:8443", client_cert=cert_path, client_key=key_path,
                          server_fingerprint="ab" * 32))
    return secret, cert.key_pem


def test_tokens_and_remotes_are_copied_and_keys_need_the_secret_key(tmp_path: Path, postgres_url: str,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from cryptography.exceptions import InvalidTag

    from app.store.pg_state import decrypt_key, shared_state

    source = tmp_path / "jobs.sqlite3"
    asyncio.run(fill(source))
    token, key_pem = _data_dir_with_tokens_and_a_remote(tmp_path)
    monkeypatch.delenv("LXDGW_SECRET_KEY", raising=False)
    monkeypatch.delenv("LXDGW_SECRET_KEY_FILE", raising=False)
    assert command_main(["db", "copy", "--from", f"sqlite:///{source}", "--to", postgres_url]) == 1
    assert "need LXDGW_SECRET_KEY" in capsys.readouterr().err  # nothing is copied without the key
    key_file = tmp_path / "secret-key"
    key_file.write_text("a-secret-key-of-at-least-32-characters!\n")
    monkeypatch.setenv("LXDGW_SECRET_KEY_FILE", str(key_file))
    assert command_main(["db", "copy", "--from", f"sqlite:///{source}", "--to", postgres_url]) == 0
    assert "1 tokens and 1 remotes added at run time" in capsys.readouterr().err

    async def check() -> None:
        postgres = PostgresJobStore(postgres_url)
        await postgres.open()
        try:
            async with postgres.connection() as conn:
                row = await (await conn.execute("SELECT client_key, server_cert FROM remotes")).fetchone()
            blob = bytes(row["client_key"])  # type: ignore[index]
            assert key_pem not in blob and b"PRIVATE KEY" not in blob and "server" in row["server_cert"]  # type: ignore[index]
            with pytest.raises(InvalidTag):  # the database alone does not open the remote
                decrypt_key(b"not-the-secret-key-but-32-characters-long", "lxd2", blob)
            for secret, served in ((None, set()), (key_file.read_bytes().strip(), {"lxd2"})):
                state = shared_state(postgres_url, tokens_file=tmp_path / "tokens.json", secret=secret)
                await state.start(postgres)
                try:
                    assert state.tokens.authenticate(token) is not None  # copied, and not imported twice
                    assert [t.name for t in state.tokens.list()] == ["ci"]
                    assert state.remotes.names() == served
                finally:
                    await state.stop()
        finally:
            await postgres.close()

    asyncio.run(check())
