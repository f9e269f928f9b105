from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.lxd.discovery import discover_socket
from app.main import create_app
from app.settings import RemoteSettings, Settings, SettingsError, searched_sources


def test_defaults() -> None:
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.bind == "127.0.0.1:8080" and s.bind_port == 8080
    assert s.tokens_path == s.data_dir / "tokens.json"
    assert s.image_alias_template == "juju/{series}/{arch}"


def test_remotes_from_env_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LXDGW_REMOTES", '[{"name": "a", "url": "unix:///x.sock"}, '
                                        '{"name": "b", "url": "unix:///y.sock", "default": true}]')
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert [r.name for r in s.effective_remotes() if r.default] == ["b"]


def test_no_remote_means_discovered_local_socket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LXD_SOCKET", str(tmp_path / "nowhere.socket"))
    remotes = Settings(_env_file=None).effective_remotes()  # type: ignore[call-arg]
    assert len(remotes) == 1 and remotes[0].name == "local" and remotes[0].default
    assert remotes[0].url.startswith("unix://")


def test_https_remote_must_pin_or_say_insecure() -> None:
    with pytest.raises(ValidationError, match="pin"):
        RemoteSettings(name="r", url="https://h:8443", client_cert=Path("c"), client_key=Path("k"))
    r = RemoteSettings(name="r", url="https://h:8443", client_cert=Path("c"), client_key=Path("k"),
                       server_fingerprint="AB" * 32)
    assert r.server_fingerprint == "ab" * 32


def test_invalid_settings_fail_with_one_line() -> None:
    r = subprocess.run([sys.executable, "-m", "app", "serve"], env={"LXDGW_BIND": "nonsense", "PATH": "/usr/bin"},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0, r.stderr
    assert "LXDGW_BIND" in r.stderr and "Traceback" not in r.stderr


def test_socket_discovery_order() -> None:
    env = {"LXD_DIR": "/d", "INCUS_DIR": "/i"}
    found = {"/d/unix.socket", "/var/lib/lxd/unix.socket", "/i/unix.socket"}
    assert discover_socket(env=env, exists=found.__contains__) == "/d/unix.socket"
    assert discover_socket("/explicit", env=env, exists=lambda p: True) == "/explicit"
    assert discover_socket(env={"INCUS_DIR": "/i"}, exists={"/i/unix.socket"}.__contains__) == "/i/unix.socket"
    assert discover_socket(env={}, exists=lambda p: False) == "/var/snap/lxd/common/lxd/unix.socket"


def test_policy_allow_refuses_an_unknown_rule(tmp_path: Path) -> None:
    allowed = Settings(_env_file=None, data_dir=tmp_path, policy_allow=["device.proxy", "profile:gpu"])  # type: ignore[call-arg]
    assert create_app(allowed) is not None
    with pytest.raises(SettingsError, match=r"LXDGW_POLICY_ALLOW: unknown policy rules: security\.privilegd"):
        create_app(Settings(_env_file=None, data_dir=tmp_path, policy_allow=["security.privilegd"]))  # type: ignore[call-arg]


def test_default_image_sources_are_ubuntus_for_every_backend_and_linuxcontainers_for_incus() -> None:
    sources = Settings(_env_file=None).image_sources  # type: ignore[call-arg]
    assert [(s.name, s.url, s.protocol, s.backends) for s in sources] == [
        ("cloud-images-releases", "https://cloud-images.ubuntu.com/releases", "simplestreams", []),
        ("cloud-images-daily", "https://cloud-images.ubuntu.com/daily", "simplestreams", []),
        ("images-linuxcontainers", "https://images.linuxcontainers.org", "simplestreams", ["incus"])]
    assert [s.name for s in searched_sources(sources, None, "lxd")] == ["cloud-images-releases", "cloud-images-daily"]
    assert [s.name for s in searched_sources(sources, None, "incus")] == [s.name for s in sources]
    named = searched_sources(sources, ["images-linuxcontainers", "cloud-images-daily", "nope"], "lxd")
    assert [s.name for s in named] == ["images-linuxcontainers", "cloud-images-daily"]  # named: always used


def test_image_sources_from_the_environment_may_name_their_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LXDGW_IMAGE_SOURCES", '[{"name": "a", "url": "https://a", "backends": ["incus"]},'
                                              ' {"name": "b", "url": "https://b", "protocol": "lxd"}]')
    sources = Settings(_env_file=None).image_sources  # type: ignore[call-arg]
    assert [(s.name, s.serves("lxd"), s.serves("incus")) for s in sources] == [("a", False, True), ("b", True, True)]
