"""`LXDGW_DATABASE_URL`: which job database the gateway uses, never showing its password, and what the API answers
while a shared database is unreachable."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import ValidationError

from app.main import create_app
from app.settings import RemoteSettings, Settings
from app.startup import StartupError, check_data_dir
from app.store.database import describe, job_store, redact_url
from app.store.jobs import SQLiteJobStore
from tests.support.postgres import PostgresServer

NO_LXD = [RemoteSettings(name="local", url="unix:///nonexistent/unix.socket", default=True)]


def settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path / "data", auth_enabled=False, remotes=NO_LXD,  # type: ignore[call-arg]
                    **kw)


def test_the_default_is_the_sqlite_file_in_the_data_directory(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert s.job_database == ("sqlite", str(tmp_path / "data" / "jobs.sqlite3"))
    store = job_store(s)
    assert isinstance(store, SQLiteJobStore) and store.path == tmp_path / "data" / "jobs.sqlite3"


def test_sqlite_urls_take_relative_and_absolute_paths(tmp_path: Path) -> None:
    assert settings(tmp_path, database_url="sqlite:///db/jobs.sqlite3").job_database == ("sqlite",
                                                                                         "db/jobs.sqlite3")
    assert settings(tmp_path, database_url="sqlite:////var/lib/gw/jobs.sqlite3").job_database == (
        "sqlite", "/var/lib/gw/jobs.sqlite3")


@pytest.mark.parametrize("url", ["mysql://x@h/db", "sqlite://", "sqlite:///", "jobs.sqlite3"])
def test_other_urls_are_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(ValidationError, match="sqlite:///<path> or postgresql://"):
        settings(tmp_path, database_url=url)


def test_the_password_is_never_shown(tmp_path: Path) -> None:
    url = "postgresql://gw:pa55-w0rd@db.example:5432/jobs?sslmode=verify-full&sslrootcert=/ca.pem"
    s = settings(tmp_path, database_url=url)
    assert s.job_database == ("postgresql", url)
    assert "pa55-w0rd" not in repr(s) and "pa55-w0rd" not in str(s.model_dump())
    assert describe(s) == "postgresql://gw:***@db.example:5432/jobs?sslmode=verify-full&sslrootcert=/ca.pem"
    assert redact_url("postgresql:///jobs?host=/run/pg&user=gw&password=pa55-w0rd") == \
        "postgresql:///jobs?host=/run/pg&user=gw&password=***"
    assert redact_url("postgres://gw@db/jobs") == "postgres://gw@db/jobs"


def test_an_unreachable_database_stops_the_start_naming_it_without_its_password(tmp_path: Path) -> None:
    s = settings(tmp_path, database_url="postgresql://gw:pa55-w0rd@/jobs?host=/nonexistent/pg-socket-dir")
    started = time.monotonic()
    with pytest.raises(StartupError) as caught:
        check_data_dir(s)
    message = str(caught.value)
    assert time.monotonic() - started < 10
    assert "pa55-w0rd" not in message and "cannot reach the job database postgresql://gw:***@/jobs" in message
    assert "LXDGW_DATABASE_URL" in message


def test_the_start_up_check_migrates_a_new_database(tmp_path: Path, postgres_url: str) -> None:
    check_data_dir(settings(tmp_path, database_url=postgres_url))
    assert (tmp_path / "data").is_dir() and not (tmp_path / "data" / "jobs.sqlite3").exists()


async def test_gateways_share_the_database_and_answer_503_while_it_is_down(
        tmp_path: Path, postgres_server: PostgresServer, postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    from app.store.postgres import PostgresJobStore

    caplog.set_level(logging.DEBUG)
    url = postgres_url.replace("postgresql://postgres@", "postgresql://postgres:pa55-w0rd@")  # the server trusts
    # two gateway processes on one data directory and one database: the second is welcome (no lock file)
    first, second = (create_app(settings(tmp_path, database_url=url)) for _ in range(2))
    async with LifespanManager(first), LifespanManager(second):
        assert isinstance(first.state.jobs.store, PostgresJobStore)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=first), base_url="http://gw") as a, \
                httpx.AsyncClient(transport=httpx.ASGITransport(app=second), base_url="http://gw") as b:
            for client in (a, b):
                assert (await client.get("/v1/jobs")).status_code == 200
            postgres_server.stop("immediate")
            try:
                for client in (a, b, a):
                    started = time.monotonic()
                    r = await client.get("/v1/jobs")
                    assert time.monotonic() - started < 2.5
                    assert r.status_code == 503, r.text
                    problem = r.json()
                    assert problem["type"].endswith("/store-unavailable") and r.headers["retry-after"] == "5"
                    assert problem["detail"].startswith("the job database is unreachable")
                ready = await a.get("/readyz")
                assert ready.status_code == 503 and not ready.json()["store"]["writable"]
            finally:
                postgres_server.start()
            deadline = time.monotonic() + 5
            while (r := await b.get("/v1/jobs")).status_code != 200:
                assert time.monotonic() < deadline, r.text
                await asyncio.sleep(0.1)
    assert "store-unavailable" in caplog.text or "unreachable" in caplog.text
    assert "pa55-w0rd" not in caplog.text  # neither in the gateway's lines nor in the driver's
