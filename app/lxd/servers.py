"""How to reach an LXD server or an image server: server specs and address normalisation.

A `ServerSpec` names a host, the protocol spoken there (`lxd` or `simplestreams`) and the TLS material used to
connect. Specs are immutable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

DEFAULT_PORT = 8443
IPV6_UNSUPPORTED_MESSAGE = "socket: address family not supported by protocol"
HTTPS_ADDRESS_KEY = "core.https_address"
DEFAULT_HTTPS_LISTENER = "[::]"
IPV4_HTTPS_LISTENER = "0.0.0.0"


class Protocol(StrEnum):
    """What a server speaks: the full LXD REST API, or a simplestreams image index."""

    LXD = "lxd"
    SIMPLESTREAMS = "simplestreams"
    INCUS = "incus"


class ConnectionSpecError(ValueError):
    """A server spec or address cannot be used."""


@dataclass(frozen=True)
class ConnectionArgs:
    """TLS material and connection options of a spec."""

    server_cert: str = ""
    client_cert: str = ""
    client_key: str = ""
    insecure_skip_verify: bool = False
    skip_get_server: bool = False
    proxy: str | None = None
    http_client: Any = None


@dataclass(frozen=True)
class ServerSpec:
    """A server to connect to: a name, an HTTPS host, a protocol and (optionally) connection arguments."""

    host: str
    name: str = ""
    protocol: str = ""
    connection: ConnectionArgs | None = field(default=None)


def image_remote_protocol(spec: ServerSpec) -> Protocol:
    """The protocol to talk to an image server with; an empty or unknown one is refused."""
    try:
        return Protocol(spec.protocol)
    except ValueError:
        raise ConnectionSpecError(f"bad protocol supplied for connection: {spec.protocol}") from None


def ensure_https(address: str) -> str:
    """`address` as an https URL: `http://` becomes `https://`, a bare host gets `https://` (case-sensitive)."""
    if address.startswith("https://"):
        return address
    if address.startswith("http://"):
        return "https://" + address[len("http://"):]
    return "https://" + address


def ensure_host_port(address: str, default_port: int = DEFAULT_PORT) -> str:
    """`address` as an https URL with a port (8443 when none is given) and no trailing slashes."""
    url = ensure_https(address)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConnectionSpecError(f"invalid address {address!r}: {exc}") from None
    if not parts.netloc:
        raise ConnectionSpecError(f"invalid address {address!r}: no host")
    if port is None and not parts.netloc.endswith(":"):
        parts = SplitResult(parts.scheme, f"{parts.netloc}:{default_port}", parts.path, parts.query, parts.fragment)
    elif port is None:
        parts = SplitResult(parts.scheme, f"{parts.netloc}{default_port}", parts.path, parts.query, parts.fragment)
    return urlunsplit(parts).rstrip("/")


def https_listener_addresses(address: str | None = None) -> list[str]:
    """Addresses to try for LXD's HTTPS listener, in order: the given one, else `[::]` then `0.0.0.0`."""
    if address:
        return [address]
    return [DEFAULT_HTTPS_LISTENER, IPV4_HTTPS_LISTENER]


def is_ipv6_unsupported(error: BaseException | str) -> bool:
    """Whether LXD refused an address because IPv6 is disabled in the kernel (the message ends so)."""
    return str(error).endswith(IPV6_UNSUPPORTED_MESSAGE)


def is_not_found(error: BaseException | str | None) -> bool:
    """LXD's "not found": a 404 status on the error, or a message that is exactly "not found" (any case)."""
    if error is None:
        return False
    status = getattr(error, "status_code", None) or getattr(error, "status", None)
    if status == 404:
        return True
    return str(error).lower() == "not found"
