"""Remotes added at run time (by URL and trust token), kept in the data directory so they survive a restart.

Layout under `<data_dir>`: `remotes.json` (a list of remote specs) and `remotes/<name>/` holding the client
certificate and key the gateway made for that remote (mode 0600) and the server certificate it pinned.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from app.lxd.pem import Certificate
from app.lxd.registry import RemoteSpec
from app.store.datadir import FILE_MODE

log = logging.getLogger(__name__)

INDEX = "remotes.json"
CERT_DIR = "remotes"


class RemoteStore:
    """The persisted run-time remotes of one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.index = self.data_dir / INDEX

    def load(self) -> list[RemoteSpec]:
        if not self.index.exists():
            return []
        try:
            raw = json.loads(self.index.read_text())
        except (OSError, ValueError) as exc:
            log.error("cannot read %s, ignoring the remotes added at run time: %s", self.index, exc)
            return []
        specs = []
        for entry in raw if isinstance(raw, list) else []:
            try:
                specs.append(RemoteSpec(**{k: v for k, v in entry.items() if k in RemoteSpec.__dataclass_fields__}))
            except TypeError as exc:
                log.error("ignoring a malformed entry of %s: %s", self.index, exc)
        return specs

    def names(self) -> set[str]:
        return {s.name for s in self.load()}

    def _write(self, specs: list[RemoteSpec]) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.index.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(s) for s in specs], indent=2) + "\n")
        os.chmod(tmp, 0o600)
        tmp.replace(self.index)

    def save(self, spec: RemoteSpec) -> None:
        specs = [s for s in self.load() if s.name != spec.name]
        self._write([*specs, spec])

    def remove(self, name: str) -> bool:
        specs = self.load()
        kept = [s for s in specs if s.name != name]
        if len(kept) != len(specs):
            self._write(kept)
        shutil.rmtree(self.cert_dir(name), ignore_errors=True)
        return len(kept) != len(specs)

    def cert_dir(self, name: str) -> Path:
        return self.data_dir / CERT_DIR / name

    def write_identity(self, name: str, cert: Certificate) -> tuple[str, str]:
        """Write the client certificate and key made for remote `name` (both must be there); their paths."""
        cert.validate()
        directory = self.cert_dir(name)
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        cert_path, key_path = directory / "client.crt", directory / "client.key"
        cert_path.write_bytes(cert.cert_pem)
        os.chmod(cert_path, FILE_MODE)
        with contextlib.suppress(FileNotFoundError):
            key_path.unlink()
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(cert.key_pem)
        return str(cert_path), str(key_path)

    def write_server_cert(self, name: str, pem: str) -> str:
        path = self.cert_dir(name) / "server.crt"
        path.write_text(pem)
        os.chmod(path, FILE_MODE)
        return str(path)


def persisted_remotes(data_dir: Path, taken: set[str]) -> list[RemoteSpec]:
    """The run-time remotes of `data_dir`, minus any whose name a configured remote has taken (with a warning)."""
    out: list[RemoteSpec] = []
    for spec in RemoteStore(data_dir).load():
        if spec.name in taken:
            log.warning("remote %r added at run time is shadowed by a configured remote of the same name", spec.name)
            continue
        out.append(RemoteSpec(**{**asdict(spec), "default": False}))
    return out
