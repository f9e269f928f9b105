"""TLS defaults of the transport: 1.3 at least, the client identity loaded, pinning never skipped silently."""

from __future__ import annotations

import ssl
from pathlib import Path

from app.lxd.pem import Certificate
from app.lxd.transport import Transport


def test_tls_13_is_the_floor_unless_asked(tmp_path: Path) -> None:
    cert = Certificate.generate()
    (tmp_path / "c.crt").write_bytes(cert.cert_pem)
    (tmp_path / "c.key").write_bytes(cert.key_pem)
    t = Transport("https://127.0.0.1:8443", client_cert=str(tmp_path / "c.crt"), client_key=str(tmp_path / "c.key"),
                  server_fingerprint="a" * 64)
    assert t._base_context(verify=False).minimum_version == ssl.TLSVersion.TLSv1_3
    legacy = Transport("https://127.0.0.1:8443", client_cert=str(tmp_path / "c.crt"),
                       client_key=str(tmp_path / "c.key"), server_fingerprint="a" * 64,
                       min_tls=ssl.TLSVersion.TLSv1_2)
    assert legacy._base_context(verify=False).minimum_version == ssl.TLSVersion.TLSv1_2
