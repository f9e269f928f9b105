"""The job database over TLS, named by the URL alone: a gateway process (`python -m app`) with
`LXDGW_DATABASE_URL=postgresql://...@127.0.0.1:PORT/db?sslmode=verify-full&sslrootcert=ca.pem` stores tokens and
runs jobs on a PostgreSQL server that accepts TCP connections over TLS only; with another CA than the one that
signed the server's certificate, it refuses to start and says why, without the URL's password."""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.locallxd.daemon import free_port
from tests.support.gateway import ROOT, gateway_env, running_gateway
from tests.support.postgres import PostgresServer, ServerTls, private_postgres

pytestmark = pytest.mark.postgres

EXTENSION = '["tests.jobs.extension_sleep"]'


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(directory: Path, name: str) -> tuple[Path, ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA: its certificate is written to `directory/<name>.pem`."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    path = directory / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, key, cert


def make_server_cert(directory: Path, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate) -> ServerTls:
    """A server certificate for 127.0.0.1 and localhost, signed by the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (directory / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "server.key").write_bytes(_pem(key))
    return ServerTls(directory / "server.crt", directory / "server.key")


class TlsDatabase:
    def __init__(self, server: PostgresServer, ca: Path, other_ca: Path) -> None:
        self.server, self.ca, self.other_ca = server, ca, other_ca

    def url(self, dbname: str, ca: Path, password: str = "") -> str:
        url = self.server.tcp_url(dbname, sslmode="verify-full", sslrootcert=str(ca))
        return url.replace("postgres@", f"postgres:{password}@") if password else url

    def ssl_sessions(self, dbname: str) -> list[str]:
        """Whether each of the gateway's connections to `dbname` uses TLS ('t' or 'f'), as the server sees them."""
        out = self.server.psql("SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                               f"WHERE a.datname = '{dbname}' AND a.application_name = 'lxd-gateway'")
        return out.split()


@pytest.fixture(scope="module")
def tls_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsDatabase]:
    """A private PostgreSQL on 127.0.0.1 over TLS only, its certificate signed by a CA made here; and another CA."""
    directory = tmp_path_factory.mktemp("pg-tls")
    ca, ca_key, ca_cert = make_ca(directory, "database-ca")
    other_ca, _, _ = make_ca(directory, "other-ca")
    for path in (ca, other_ca):
        path.chmod(0o644)  # read by the gateway process
    directory.chmod(0o755)
    with private_postgres(tls=make_server_cert(directory, ca_key, ca_cert)) as server:
        yield TlsDatabase(server, ca, other_ca)


def _new_database(db: TlsDatabase, name: str) -> str:
    db.server.psql(f"CREATE DATABASE {name} TEMPLATE template0")
    return name


def _cli(database_url: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LXDGW_")}
    env.update({"LXDGW_DATABASE_URL": database_url, "LXDGW_DATA_DIR": str(data_dir)})
    return subprocess.run([sys.executable, "-m", "app", "tokens", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def test_a_gateway_keeps_its_jobs_and_tokens_on_postgresql_over_verified_tls(tls_database: TlsDatabase,
                                                                            tmp_path: Path) -> None:
    name = _new_database(tls_database, "tls_ok")
    url = tls_database.url(name, tls_database.ca)
    plain = tls_database.server.tcp_url(name, sslmode="disable")
    refused = _cli(plain, tmp_path / "cli", "list")
    assert refused.returncode != 0 and "no encryption" in refused.stderr  # the server takes TCP over TLS only

    created = _cli(url, tmp_path / "cli", "create", "ops", "--scope", "write")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    with running_gateway(str(tmp_path / "no-lxd.sock"), tmp_path / "gw", auth=True, LXDGW_DATABASE_URL=url,
                         LXDGW_EXTENSIONS=EXTENSION, LXDGW_RATE_LIMIT="") as gateway:
        headers = {"Authorization": f"Bearer {secret}"}
        whoami = httpx.get(f"{gateway.base}/v1/whoami", headers=headers, timeout=10)
        assert whoami.status_code == 200 and whoami.json()["name"] == "ops"  # the token stored over TLS
        r = httpx.post(f"{gateway.base}/v1/test-jobs", json={"steps": 2, "interval": 0.05}, headers=headers,
                       timeout=10)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        deadline = time.monotonic() + 15
        while (job := httpx.get(f"{gateway.base}/v1/jobs/{job_id}", headers=headers, timeout=10).json())[
                "status"] != "succeeded":
            assert job["status"] in ("queued", "running") and time.monotonic() < deadline, job
            time.sleep(0.05)
        assert job["result"] == {"steps": 2}
        sessions = tls_database.ssl_sessions(name)
        assert sessions and set(sessions) == {"t"}, sessions  # every connection of the gateway is over TLS
    stored = tls_database.server.psql("SELECT status FROM jobs WHERE id = '" + job_id + "'", dbname=name)
    assert stored == "succeeded"  # in the database the URL named, not in a local file
    assert not (tmp_path / "gw" / "jobs.sqlite3").exists()


def test_a_server_certificate_from_another_ca_is_refused_at_start_up(tls_database: TlsDatabase,
                                                                     tmp_path: Path) -> None:
    name = _new_database(tls_database, "tls_wrong_ca")
    url = tls_database.url(name, tls_database.other_ca, password="do-not-print-me")
    env = gateway_env(str(tmp_path / "no-lxd.sock"), tmp_path / "gw", free_port(), LXDGW_DATABASE_URL=url)
    r = subprocess.run([sys.executable, "-m", "app", "serve"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=60)
    output = r.stdout + r.stderr
    assert r.returncode != 0, output
    assert "cannot reach the job database" in output and "certificate verify failed" in output, output
    assert f"127.0.0.1:{tls_database.server.port}/{name}" in output  # which database
    assert "do-not-print-me" not in output
    assert "Traceback" not in output
