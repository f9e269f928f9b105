"""How to reach an LXD server or an image server: server specs and address normalisation.

A `ServerSpec` names a host, the protocol spoken there (`lxd` or `simplestreams`) and the TLS material used to
connect. Specs are immutable: the builder methods return a new spec and never change the one they were called on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

from app.lxd.pem import Certificate

DEFAULT_PORT = 8443
CLOUD_IMAGES_HOST = "https://cloud-images.ubuntu.com"
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

    def _with(self, **changes: Any) -> ServerSpec:
        args = dataclasses.replace(self.connection or ConnectionArgs(), **changes)
        return dataclasses.replace(self, connection=args)

    def with_proxy(self, proxy: str | None) -> ServerSpec:
        return self._with(proxy=proxy)

    def with_client_certificate(self, cert: Certificate) -> ServerSpec:
        if cert is None:
            raise ConnectionSpecError("a client certificate is required")
        return self._with(client_cert=_text(cert.cert_pem), client_key=_text(cert.key_pem))

    def with_skip_get_server(self, skip: bool) -> ServerSpec:
        return self._with(skip_get_server=skip)

    def with_http_client(self, client: Any) -> ServerSpec:
        return self._with(http_client=client)

    def with_name(self, name: str) -> ServerSpec:
        return dataclasses.replace(self, name=name)

    def with_protocol(self, protocol: str) -> ServerSpec:
        return dataclasses.replace(self, protocol=protocol)

    def validate(self) -> None:
        """Every spec the constructors can build is valid, so this never raises for them.

        A spec built by hand is checked only for what would make any connection impossible: an empty host.
        """
        if not self.host:
            raise ConnectionSpecError("server spec has no host")


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def new_server_spec(host: str, server_cert: str, client_cert: Certificate) -> ServerSpec:
    """A spec for a full LXD API over HTTPS, pinning `server_cert` and authenticating with `client_cert`."""
    if client_cert is None:
        raise ConnectionSpecError("a client certificate is required")
    return ServerSpec(host=ensure_https(host), connection=ConnectionArgs(
        server_cert=server_cert, client_cert=_text(client_cert.cert_pem), client_key=_text(client_cert.key_pem)))


def insecure_server_spec(host: str) -> ServerSpec:
    """A spec with no client certificate that does not verify the server's certificate."""
    return ServerSpec(host=ensure_https(host), connection=ConnectionArgs(insecure_skip_verify=True))


def simplestreams_server_spec(name: str, host: str) -> ServerSpec:
    """A simplestreams image server; it has no connection arguments until a builder adds some."""
    return ServerSpec(host=ensure_https(host), name=name, protocol=Protocol.SIMPLESTREAMS)


def cloud_images_releases_spec(base: str = CLOUD_IMAGES_HOST, name: str | None = None) -> ServerSpec:
    """The released Ubuntu cloud images (`<base>/releases`). The name defaults to the host, as for daily."""
    base = ensure_https(base).rstrip("/")
    return simplestreams_server_spec(name if name is not None else _hostname(base), f"{base}/releases")


def cloud_images_daily_spec(base: str = CLOUD_IMAGES_HOST, name: str | None = None) -> ServerSpec:
    """The daily Ubuntu cloud images (`<base>/daily`); by default named like the releases server."""
    base = ensure_https(base).rstrip("/")
    return simplestreams_server_spec(name if name is not None else _hostname(base), f"{base}/daily")


def image_server_specs(sources: Sequence[Any]) -> list[ServerSpec]:
    """Specs for configured image sources (objects with `name`, `url`, `protocol`), in search order."""
    return [ServerSpec(host=ensure_https(s.url), name=s.name, protocol=str(s.protocol)) for s in sources]


def _hostname(url: str) -> str:
    return urlsplit(url).hostname or url


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
