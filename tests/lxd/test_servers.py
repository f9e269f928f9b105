"""§3 connection specs, §4.5/4.6 server facts, §8.1 listener decisions; §16 scenarios 1-6 and 14 (pure part)."""

from __future__ import annotations

import pytest

from app.lxd.discovery import DEBIAN_SOCKET, INCUS_RUN_SOCKET, SNAP_SOCKET, discover_socket
from app.lxd.models import ServerInfo
from app.lxd.pem import Certificate
from app.lxd.servers import (
    ConnectionSpecError,
    ServerSpec,
    ensure_host_port,
    ensure_https,
    https_listener_addresses,
    image_remote_protocol,
    is_ipv6_unsupported,
    is_not_found,
)

CERT = Certificate.from_pem(b"cert-pem", b"key-pem")


@pytest.mark.parametrize("address", ["http://somewhere", "https://somewhere", "somewhere"])
def test_s01_ensure_https(address: str) -> None:
    assert ensure_https(address) == "https://somewhere"


def test_s01_ensure_https_is_case_sensitive_and_replaces_once() -> None:
    assert ensure_https("HTTP://x") == "https://HTTP://x"
    assert ensure_https("http://a/http://b") == "https://a/http://b"


@pytest.mark.parametrize(("address", "expected"), [
    ("https://somewhere", "https://somewhere:8443"),
    ("somewhere", "https://somewhere:8443"),
    ("http://somewhere:0", "https://somewhere:0"),
    ("https://somewhere:123", "https://somewhere:123"),
    ("https://somewhere:123/", "https://somewhere:123"),
    ("https://somewhere:123///", "https://somewhere:123"),
    ("https://h/p", "https://h:8443/p"),
    ("https://[::1]", "https://[::1]:8443"),
    ("[::1]:9000", "https://[::1]:9000"),
    ("10.0.0.1", "https://10.0.0.1:8443"),
])
def test_s02_ensure_host_port(address: str, expected: str) -> None:
    assert ensure_host_port(address) == expected


@pytest.mark.parametrize("address", ["https://[::1", "https://h:notaport", "https://"])
def test_s02_ensure_host_port_refuses_unparseable(address: str) -> None:
    with pytest.raises(ConnectionSpecError):
        ensure_host_port(address)


def test_s03_socket_path_lxd_dir() -> None:
    assert discover_socket(env={"LXD_DIR": "foobar"}, exists=lambda p: False) == "foobar/unix.socket"


def test_s03_socket_path_snap_before_debian() -> None:
    assert discover_socket(env={}, exists=lambda p: p in (SNAP_SOCKET, DEBIAN_SOCKET)) == SNAP_SOCKET


def test_s03_socket_path_only_debian() -> None:
    assert discover_socket(env={}, exists=lambda p: p == DEBIAN_SOCKET) == DEBIAN_SOCKET


@pytest.mark.parametrize("env", [{"INCUS_SOCKET": "/srv/incus.socket"}, {"INCUS_DIR": "/srv/incus"}])
def test_explicit_incus_settings_win_over_discovered_lxd_sockets(env: dict[str, str]) -> None:
    wanted = env.get("INCUS_SOCKET") or "/srv/incus/unix.socket"
    everything = {SNAP_SOCKET, DEBIAN_SOCKET, INCUS_RUN_SOCKET, wanted}
    assert discover_socket(env=env, exists=lambda p: p in everything) == wanted
    assert discover_socket(env=env, exists=lambda p: p != wanted) == SNAP_SOCKET  # named but absent: found ones
    assert discover_socket(env={**env, "LXD_SOCKET": "/srv/lxd.socket"}, exists=lambda p: True) == "/srv/lxd.socket"


def test_without_settings_lxd_sockets_come_before_incus_ones() -> None:
    assert discover_socket(env={}, exists=lambda p: p in (DEBIAN_SOCKET, INCUS_RUN_SOCKET)) == DEBIAN_SOCKET
    assert discover_socket(env={}, exists=lambda p: p == INCUS_RUN_SOCKET) == INCUS_RUN_SOCKET


def test_s04_bad_image_remote_protocol() -> None:
    spec = ServerSpec(host="https://x", protocol="FOOBAR")
    with pytest.raises(ConnectionSpecError, match=r"^bad protocol supplied for connection: FOOBAR$"):
        image_remote_protocol(spec)


def test_s04_empty_image_remote_protocol() -> None:
    with pytest.raises(ConnectionSpecError, match=r"^bad protocol supplied for connection: $"):
        image_remote_protocol(ServerSpec(host="https://x"))


@pytest.mark.parametrize("protocol", ["lxd", "simplestreams"])
def test_s04_known_image_remote_protocols(protocol: str) -> None:
    assert image_remote_protocol(ServerSpec(host="https://x", protocol=protocol)) == protocol


def _info(name: str = "", clustered: bool = False, extensions: list[str] | None = None) -> dict:
    return {"api_extensions": extensions or [], "environment": {
        "server_name": name, "server_clustered": clustered, "certificate": "PEM", "kernel_architecture": "x86_64",
        "architectures": ["x86_64", "i686"], "server_version": "5.21.1"}}


def test_s05_server_name() -> None:
    assert ServerInfo.model_validate(_info("nuc8")).name_or_none == "nuc8"


def test_s05_unnamed_standalone_server_is_none() -> None:
    assert ServerInfo.model_validate(_info("")).name_or_none == "none"


def test_s05_unnamed_cluster_member_stays_empty() -> None:
    assert ServerInfo.model_validate(_info("", clustered=True)).name_or_none == ""


def test_s05_server_facts() -> None:
    facts = ServerInfo.model_validate(_info("n", extensions=["network", "clustering"]))
    assert facts.host_arch == "amd64"
    assert facts.supported_arches == ("amd64", "i386")
    assert facts.version == "5.21.1"
    assert facts.certificate == "PEM"
    assert facts.network_api and facts.cluster_supported


def test_s05_supported_arches_default_to_host_arch() -> None:
    info = _info("n")
    info["environment"]["architectures"] = []
    assert ServerInfo.model_validate(info).supported_arches == ("amd64",)


def test_s06_storage_supported() -> None:
    assert ServerInfo.model_validate(_info("n", extensions=["storage"])).storage_supported
    assert not ServerInfo.model_validate(_info("n", extensions=["network"])).storage_supported


def test_s14_https_listener_addresses() -> None:
    assert https_listener_addresses() == ["[::]", "0.0.0.0"]
    assert https_listener_addresses("10.1.2.3:8443") == ["10.1.2.3:8443"]


def test_s14_ipv6_unsupported_error_triggers_fallback() -> None:
    assert is_ipv6_unsupported("listen tcp [::]:8443: socket: address family not supported by protocol")
    assert not is_ipv6_unsupported("bad")
    assert not is_ipv6_unsupported("socket: address family not supported by protocol (really)")


class _StatusError(Exception):
    def __init__(self, msg: str, status_code: int) -> None:
        super().__init__(msg)
        self.status_code = status_code


def test_is_not_found() -> None:
    assert not is_not_found(None)
    assert is_not_found(Exception("Not Found"))
    assert is_not_found(_StatusError("Instance not found", 404))
    assert not is_not_found(Exception("x: not found"))
    assert not is_not_found(_StatusError("boom", 500))
