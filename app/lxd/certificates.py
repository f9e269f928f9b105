"""The trust store: list, get, add a certificate (sent as base64 DER), update, delete, and trust tokens.

Tokens: `create_token` (admin side) asks the server for one and returns it encoded as `lxc` prints it (base64 of
a JSON object: client name, server fingerprint, addresses, secret, expiry). `enrol` (client side) decodes a
token, fetches the server certificate with an unverified TLS handshake and requires its sha256 to equal the
token's fingerprint before sending anything, then asks to be trusted: with `trust_token` where the server has
the `explicit_trust_token` extension, else with `password` (LXD 5.0) and `trust_token` (Incus), each server
reading the one it knows.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import re
import ssl
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import Field

from app.lxd.errors import Forbidden, LXDError, LXDUnavailable, NotFound
from app.lxd.models import OperationState, Tagged
from app.lxd.operations import Operation
from app.lxd.resource import Resource, SubAPI, if_match, object_path

NO_EXPIRY = "0001-01-01T00:00:00Z"
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----\s*(.*?)\s*-----END CERTIFICATE-----", re.S)


class FingerprintMismatch(LXDUnavailable):
    """The server presented a certificate other than the one the token names: nothing was sent to it."""


class InvalidToken(LXDError, ValueError):
    """The trust token cannot be decoded."""


class TrustedCertificate(Resource, Tagged):
    """`GET /1.0/certificates/<fingerprint>`."""

    fingerprint: str
    name: str = ""
    type: str = "client"
    certificate: str = ""
    restricted: bool = False
    projects: list[str] = Field(default_factory=list)
    description: str = ""


class TrustToken(Resource):
    """A trust token: what `encode()` puts in the string handed to the client, plus the id to revoke it."""

    client_name: str
    fingerprint: str
    addresses: list[str] = Field(default_factory=list)
    secret: str
    expires_at: str = NO_EXPIRY
    type: str | None = None
    operation_id: str = Field("", exclude=True)

    def encode(self) -> str:
        body: dict[str, Any] = {"client_name": self.client_name, "fingerprint": self.fingerprint,
                                "addresses": self.addresses, "secret": self.secret, "expires_at": self.expires_at}
        if self.type:
            body["type"] = self.type
        return base64.b64encode(json.dumps(body, separators=(",", ":")).encode()).decode()

    @classmethod
    def decode(cls, token: str) -> TrustToken:
        try:
            raw = base64.b64decode(token.strip() + "=" * (-len(token.strip()) % 4))
            data = json.loads(raw)
            return cls.model_validate(data)
        except (binascii.Error, ValueError, TypeError) as exc:
            raise InvalidToken(f"not a trust token: {exc}") from exc


def pem_to_der(pem: str | bytes) -> bytes:
    """The DER bytes of the first certificate in a PEM text."""
    text = pem.decode() if isinstance(pem, bytes) else pem
    m = _PEM.search(text)
    if not m:
        raise ValueError("no PEM certificate found")
    return base64.b64decode("".join(m.group(1).split()), validate=True)


def fingerprint_of(pem: str | bytes) -> str:
    """LXD's fingerprint of a certificate: lowercase hex sha256 of its DER."""
    return hashlib.sha256(pem_to_der(pem)).hexdigest()


def _c(fingerprint: str) -> str:
    return object_path("certificates", fingerprint)


class Certificates(SubAPI):
    """`client.certificates`."""

    async def list(self) -> list[TrustedCertificate]:
        return await self._all("/1.0/certificates", TrustedCertificate)

    async def get(self, fingerprint: str) -> TrustedCertificate:
        """By fingerprint or a unique prefix of it."""
        env = await self._client.request("GET", _c(fingerprint), scoped=False)
        return TrustedCertificate.from_envelope(env)

    async def add(self, pem: str | bytes, *, name: str = "", type: str = "client", restricted: bool = False,
                  projects: list[str] | None = None, description: str = "") -> TrustedCertificate:
        """Trust a certificate given as PEM (sent as base64 DER, the form every server accepts)."""
        der = pem_to_der(pem)
        body: dict[str, Any] = {"type": type, "name": name, "certificate": base64.b64encode(der).decode(),
                                "restricted": restricted, "projects": projects or []}
        if description:
            body["description"] = description
        await self._client.mutate("POST", "/1.0/certificates", json=body)
        return await self.get(hashlib.sha256(der).hexdigest())

    async def update(self, fingerprint: str, body: dict[str, Any], *, etag: str | None = None) -> Operation:
        """PUT (replace name, type, restricted, projects)."""
        return await self._client.mutate("PUT", _c(fingerprint), json=body, headers=if_match(etag))

    async def patch(self, fingerprint: str, body: dict[str, Any], *, etag: str | None = None) -> Operation:
        return await self._client.mutate("PATCH", _c(fingerprint), json=body, headers=if_match(etag))

    async def delete(self, fingerprint: str) -> None:
        await self._client.mutate("DELETE", _c(fingerprint))

    # ------------------------------------------------------------------------------------------ tokens

    async def create_token(self, name: str, *, restricted: bool = False, projects: list[str] | None = None,
                           type: str = "client") -> TrustToken:
        """Ask for a trust token for a client called `name`; `token.encode()` is the string to hand over."""
        body = {"name": name, "type": type, "token": True, "restricted": restricted, "projects": projects or []}
        env = await self._client.request("POST", "/1.0/certificates", json=body, scoped=False)
        op = OperationState.model_validate(env.metadata)
        return _token_of(op, name)

    async def tokens(self) -> list[TrustToken]:
        """Pending trust tokens (each is a running operation of class `token`)."""
        return [_token_of(op, "") for op in await self._client.operations.list()
                if op.class_ == "token" and not op.final]

    async def revoke_token(self, token: TrustToken | str) -> None:
        """Revoke a pending token (by the token, or the id of its operation)."""
        op_id = token.operation_id if isinstance(token, TrustToken) else token
        if not op_id:
            raise ValueError("the token carries no operation id")
        await self._client.request("DELETE", f"/1.0/operations/{op_id}", scoped=False)


def _token_of(op: OperationState, name: str) -> TrustToken:
    md = op.metadata or {}
    request = md.get("request") or {}
    expires = md.get("expiresAt") or md.get("expires_at") or NO_EXPIRY
    if isinstance(expires, datetime):
        expires = expires.isoformat()
    return TrustToken(client_name=name or str(request.get("name") or ""), fingerprint=str(md.get("fingerprint", "")),
                      addresses=[str(a) for a in md.get("addresses") or []], secret=str(md.get("secret", "")),
                      expires_at=str(expires), type=md.get("type"), operation_id=op.id)


# ---------------------------------------------------------------------------------------------- enrolment


@dataclass
class Enrolment:
    """The outcome of `enrol`: where the server is and which certificate it presents (to pin from now on)."""

    url: str
    server_fingerprint: str
    server_cert_pem: str
    client_name: str
    already_trusted: bool = False


def _split_address(address: str) -> tuple[str, int]:
    addr = address.removeprefix("https://").rstrip("/")
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        return host, int(rest.lstrip(":") or 8443)
    host, _, port = addr.rpartition(":") if addr.count(":") == 1 else (addr, "", "")
    return host, int(port or 8443)


async def fetch_server_certificate(address: str, *, timeout: float = 10.0) -> bytes:
    """The DER certificate a server presents, from a TLS handshake alone (no request is sent)."""
    host, port = _split_address(address)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(timeout):
            _reader, writer = await asyncio.open_connection(host, port, ssl=ctx)
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        raise LXDUnavailable(f"cannot reach {address}: {exc or type(exc).__name__}", path=address) from exc
    try:
        sslobj = writer.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    if not der:
        raise LXDUnavailable("the server presented no certificate", path=address)
    return bytes(der)


async def enrol(token: str | TrustToken, *, client_cert: str, client_key: str, name: str | None = None,
                address: str | None = None, timeout: float = 10.0) -> Enrolment:
    """Become trusted by the server that issued `token`, with the client certificate in `client_cert`/`client_key`.

    Tries `address` or each address in the token; the first whose certificate matches the token's fingerprint is
    used. Raises `FingerprintMismatch` (nothing sent) when a server presents another certificate, `InvalidToken`
    for a malformed token, `Forbidden` when the server refuses the token.
    """
    from app.lxd.client import Client

    tok = token if isinstance(token, TrustToken) else TrustToken.decode(token)
    want = tok.fingerprint.replace(":", "").lower()
    candidates = [address] if address else list(tok.addresses)
    if not candidates:
        raise InvalidToken("the token lists no address")
    last: Exception | None = None
    for addr in candidates:
        try:
            der = await fetch_server_certificate(addr, timeout=timeout)
        except LXDUnavailable as exc:
            last = exc
            continue
        got = hashlib.sha256(der).hexdigest()
        if got != want:
            raise FingerprintMismatch(f"the server at {addr} presents certificate {got}, the token names {want}",
                                      path=addr)
        host, port = _split_address(addr)
        url = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        async with Client.https(url, client_cert=client_cert, client_key=client_key, server_fingerprint=want,
                                timeout=timeout) as client:
            info = await client.server.info()
            result = Enrolment(url=url, server_fingerprint=want, server_cert_pem=ssl.DER_cert_to_PEM_cert(der),
                               client_name=name or tok.client_name)
            if info.auth == "trusted":
                result.already_trusted = True
                return result
            body: dict[str, Any] = {"type": "client", "name": result.client_name}
            encoded = tok.encode() if isinstance(token, TrustToken) else token.strip()
            if "explicit_trust_token" in info.api_extensions:
                body["trust_token"] = encoded
            else:
                body["password"] = encoded
                body["trust_token"] = encoded
            await client.request("POST", "/1.0/certificates", json=body, scoped=False)
            if (await client.server.info(refresh=True)).auth != "trusted":
                raise Forbidden("the server accepted the token but does not trust this client", status=403,
                                method="POST", path="/1.0/certificates")
            return result
    raise last if last is not None else NotFound("no address of the token answered")
