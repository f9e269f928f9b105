"""The trust store and trust tokens against the real daemon: add from PEM, list, get, delete; a real token
created on the admin side, then enrolment with it by a fresh client certificate over HTTPS."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from app.locallxd.daemon import DaemonInfo
from app.lxd import Client, NotFound
from app.lxd.certificates import FingerprintMismatch, InvalidToken, TrustToken, enrol, fingerprint_of
from app.lxd.pem import Certificate
from tests.support.cleanup import unique


def write_cert(tmp: Path, name: str) -> tuple[Certificate, str, str]:
    cert = Certificate.generate(name)
    crt, key = tmp / f"{name}.crt", tmp / f"{name}.key"
    crt.write_bytes(cert.cert_pem)
    key.write_bytes(cert.key_pem)
    return cert, str(crt), str(key)


async def test_add_list_get_delete(lxd: Client, lxd_daemon: DaemonInfo) -> None:
    cert = Certificate.generate(unique("add"))
    fp = fingerprint_of(cert.cert_pem)
    added = await lxd.certificates.add(cert.cert_pem, name=cert.name, restricted=True, projects=["default"])
    try:
        assert (added.fingerprint, added.name, added.restricted, added.projects) == (fp, cert.name, True,
                                                                                   ["default"])
        assert fp in [c.fingerprint for c in await lxd.certificates.list()]
        got = await lxd.certificates.get(fp[:16])
        assert got.fingerprint == fp and got.etag
        await lxd.certificates.patch(fp, {"restricted": False}, etag=got.etag)
        assert (await lxd.certificates.get(fp)).restricted is False
    finally:
        await lxd.certificates.delete(fp)
    with pytest.raises(NotFound):
        await lxd.certificates.get(fp)
    harness = fingerprint_of(Path(lxd_daemon.client_cert).read_text())
    assert harness in [c.fingerprint for c in await lxd.certificates.list()]


async def test_token_create_list_revoke(lxd: Client, lxd_daemon: DaemonInfo) -> None:
    name = unique("tok")
    tok = await lxd.certificates.create_token(name)
    assert tok.fingerprint == lxd_daemon.server_fingerprint and tok.secret and tok.operation_id
    assert f"127.0.0.1:{lxd_daemon.https_port}" in tok.addresses
    decoded = json.loads(base64.b64decode(tok.encode()))
    assert set(decoded) >= {"client_name", "fingerprint", "addresses", "secret", "expires_at"}
    assert TrustToken.decode(tok.encode()).secret == tok.secret
    assert name in [t.client_name for t in await lxd.certificates.tokens()]
    await lxd.certificates.revoke_token(tok)
    assert name not in [t.client_name for t in await lxd.certificates.tokens()]


async def test_enrol_with_a_real_token(lxd: Client, lxd_daemon: DaemonInfo, tmp_path: Path) -> None:
    name = unique("enrol")
    cert, crt, key = write_cert(tmp_path, name)
    token = (await lxd.certificates.create_token(name)).encode()
    fp = fingerprint_of(cert.cert_pem)
    try:
        result = await enrol(token, client_cert=crt, client_key=key)
        assert result.url == lxd_daemon.https_url and not result.already_trusted
        assert result.server_fingerprint == lxd_daemon.server_fingerprint
        assert fingerprint_of(result.server_cert_pem) == lxd_daemon.server_fingerprint
        async with Client.https(result.url, client_cert=crt, client_key=key,
                                server_fingerprint=result.server_fingerprint) as c:
            assert await c.server.trusted()
            assert lxd_daemon.image_fingerprint in [i.fingerprint for i in await c.images.list()]
        trusted = await lxd.certificates.get(fp)
        assert trusted.name == name
        again = await enrol(token, client_cert=crt, client_key=key)  # the token is spent, but we are trusted
        assert again.already_trusted
    finally:
        await lxd.certificates.delete(fp)


async def test_enrol_refuses_a_server_with_another_certificate(lxd: Client, image_server: DaemonInfo,
                                                               tmp_path: Path) -> None:
    name = unique("mitm")
    _, crt, key = write_cert(tmp_path, name)
    tok = await lxd.certificates.create_token(name)
    try:
        # the token's fingerprint is the main daemon's; the image server presents its own certificate
        with pytest.raises(FingerprintMismatch):
            await enrol(tok.encode(), client_cert=crt, client_key=key,
                        address=f"127.0.0.1:{image_server.https_port}")
        assert name in [t.client_name for t in await lxd.certificates.tokens()]  # nothing was sent
    finally:
        await lxd.certificates.revoke_token(tok)
    with pytest.raises(InvalidToken):
        await enrol("not a token", client_cert=crt, client_key=key)


async def test_https_client_reads_the_trust_store(lxd_https: Client, lxd_daemon: DaemonInfo) -> None:
    assert lxd_daemon.server_fingerprint != ""
    assert any(c.name == "harness" for c in await lxd_https.certificates.list())
