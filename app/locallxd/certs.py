"""Client certificate files for the harness's HTTPS listeners."""

from __future__ import annotations

import os
from pathlib import Path

from app.lxd.pem import Certificate


def write_client_certificate(cert_path: Path, key_path: Path) -> tuple[str, str]:
    """Generate an ECDSA P-384 client certificate, write both PEM files, return their paths."""
    cert = Certificate.generate("harness", common_name="lxd-gateway-harness")
    cert_path.write_bytes(cert.cert_pem)
    key_path.write_bytes(cert.key_pem)
    os.chmod(key_path, 0o600)
    return str(cert_path), str(key_path)
