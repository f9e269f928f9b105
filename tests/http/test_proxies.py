"""The client address per-address limits count against: X-Forwarded-For only from trusted proxies, read from the
right (the right-most address that is not a trusted proxy)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pydantic import ValidationError
from starlette.requests import Request

from app.http.auth import client_address
from app.http.proxies import client_of, trusted_networks
from app.settings import Settings

PROXIES = trusted_networks(("10.0.0.0/8", "127.0.0.1", "fd00::/8"))


@pytest.mark.parametrize(("peer", "header", "client"), [
    ("203.0.113.9", ["198.51.100.1"], "203.0.113.9"),  # an untrusted peer: its header is ignored
    ("127.0.0.1", [], "127.0.0.1"),  # a trusted peer without the header
    ("127.0.0.1", ["198.51.100.1"], "198.51.100.1"),
    ("127.0.0.1", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),  # what the client wrote itself is left of it
    ("10.1.2.3", ["6.6.6.6, 198.51.100.1, 10.9.9.9"], "198.51.100.1"),  # through two trusted proxies
    ("10.1.2.3", ["6.6.6.6", "198.51.100.1, 10.9.9.9"], "198.51.100.1"),  # the header repeated
    ("10.1.2.3", ["10.5.5.5, 10.9.9.9"], "10.5.5.5"),  # every hop trusted: the left-most
    ("127.0.0.1", ["198.51.100.1:4711"], "198.51.100.1"),
    ("127.0.0.1", ["[2001:db8::1]:4711"], "2001:db8::1"),
    ("fd00::5", ["2001:db8::7"], "2001:db8::7"),
    ("::ffff:127.0.0.1", ["198.51.100.1"], "198.51.100.1"),  # a v4 peer on a dual-stack socket
    ("127.0.0.1", ["not-an-address"], "not-an-address"),
    (None, ["198.51.100.1"], "unknown"),
])
def test_the_client_is_the_rightmost_address_not_a_trusted_proxy(peer: str | None, header: list[str],
                                                                client: str) -> None:
    assert client_of(peer, header, PROXIES) == client


def test_without_trusted_proxies_the_header_is_never_used() -> None:
    assert client_of("127.0.0.1", ["198.51.100.1"], ()) == "127.0.0.1"


def _request(peer: str, forwarded: str, proxies: list[str]) -> Request:
    app = SimpleNamespace(state=SimpleNamespace(settings=SimpleNamespace(trusted_proxies=proxies)))
    return Request({"type": "http", "method": "GET", "path": "/", "headers": [(b"x-forwarded-for",
                                                                              forwarded.encode())],
                    "client": (peer, 5000), "app": app})


def test_the_request_address_follows_the_setting() -> None:
    assert client_address(_request("127.0.0.1", "198.51.100.1", [])) == "127.0.0.1"  # the default: trust none
    assert client_address(_request("127.0.0.1", "198.51.100.1", ["127.0.0.1"])) == "198.51.100.1"
    assert client_address(_request("192.0.2.1", "198.51.100.1", ["127.0.0.1"])) == "192.0.2.1"


def test_the_setting_takes_addresses_and_networks_only() -> None:
    assert Settings(_env_file=None, trusted_proxies=[" 10.0.0.0/8", "::1"]).trusted_proxies == [  # type: ignore[call-arg]
        "10.0.0.0/8", "::1"]
    assert Settings(_env_file=None).trusted_proxies == []  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="neither an address nor a CIDR network"):
        Settings(_env_file=None, trusted_proxies=["proxy.example"])  # type: ignore[call-arg]
