"""`/v1/certificates`: LXD's trust store (list, add, read, remove), new client key pairs, and trust tokens."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field

from app.http.deps import BackendDep
from app.http.errors import ProblemError, problem_responses
from app.http.etag import Admin, set_etag
from app.http.pagination import Page, PageDep, page_of
from app.lxd.certificates import TrustedCertificate
from app.lxd.pem import Certificate, CertificateError, fingerprint_of_pem

router = APIRouter(prefix="/v1/certificates", tags=["certificates"])

Fingerprint = Annotated[str, Path(pattern=r"^[0-9a-fA-F]{1,64}$", description="sha256 fingerprint, or a unique "
                                  "prefix of it", examples=["2b1d8c7e9a"])]
PEM_EXAMPLE = "-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n"
FP_EXAMPLE = "2b1d8c7e9a4f3e6d5c4b3a29181706f5e4d3c2b1a0f9e8d7c6b5a49382716051"
TRUST_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}$"


class CertificateOut(BaseModel):
    fingerprint: str = Field(description="lowercase hex sha256 of the DER", examples=[FP_EXAMPLE])
    name: str = Field(description="its name in the trust store", examples=["ci-runner"])
    type: str = Field(description="`client` or `metrics`", examples=["client"])
    restricted: bool = Field(description="limited to `projects`", examples=[False])
    projects: list[str] = Field(description="projects a restricted certificate may use", examples=[["default"]])
    certificate: str = Field(description="the certificate, PEM", examples=[PEM_EXAMPLE])
    description: str = Field("", description="free text", examples=[""])

    @classmethod
    def of(cls, c: TrustedCertificate) -> CertificateOut:
        return cls.model_validate(c, from_attributes=True)


class CertificateAdd(BaseModel):
    name: str = Field(pattern=TRUST_NAME, description="its name in the trust store", examples=["ci-runner"])
    certificate: str = Field(min_length=1, description="the client certificate, PEM", examples=[PEM_EXAMPLE])
    type: Literal["client", "metrics"] = Field("client", description="what it may do", examples=["client"])
    restricted: bool = Field(False, description="limit it to `projects`", examples=[False])
    projects: list[str] = Field(default_factory=list, description="projects a restricted certificate may use",
                                examples=[["default"]])


class GenerateRequest(BaseModel):
    name: str = Field(pattern=TRUST_NAME, description="the certificate's name (and its name in the trust store)",
                      examples=["ci-runner"])
    trust: bool = Field(False, description="also add it to the trust store", examples=[False])


class GeneratedPair(BaseModel):
    certificate_pem: str = Field(description="the new client certificate (ECDSA P-384, 10 years, client auth)",
                                 examples=[PEM_EXAMPLE])
    key_pem: str = Field(description="its private key: shown once, kept nowhere by the gateway",
                         examples=["-----BEGIN EC PRIVATE KEY-----\nMIG...\n-----END EC PRIVATE KEY-----\n"])
    fingerprint: str = Field(description="lowercase hex sha256 of the DER", examples=[FP_EXAMPLE])
    trusted: bool = Field(description="whether it was added to the trust store", examples=[False])


class TokenRequest(BaseModel):
    name: str = Field(pattern=TRUST_NAME, description="the name the new client will have in the trust store",
                      examples=["laptop"])


class TrustTokenOut(BaseModel):
    token: str = Field(description="hand it to the new client (`lxc remote add <name> <token>`, or "
                                   "`POST /v1/remotes` of another gateway)", examples=["eyJjbGllbnRfbmFtZSI6..."])
    client_name: str = Field(description="the name the client will have", examples=["laptop"])
    fingerprint: str = Field(description="the server's certificate fingerprint the token names",
                             examples=[FP_EXAMPLE])
    addresses: list[str] = Field(description="where the server listens", examples=[["10.0.0.5:8443"]])
    expires_at: str = Field(description="expiry (`0001-01-01T00:00:00Z`: never)", examples=["0001-01-01T00:00:00Z"])
    operation_id: str = Field(description="the LXD operation holding the token (delete it to revoke the token)",
                              examples=["b4b5c3a0-6f31-4b2b-8f3d-1e0c7b2d9a11"])


@router.get("", summary="List the LXD trust store", response_model=Page[CertificateOut],
            operation_id="certificates-list", responses=problem_responses(400, 401, 403, 404, 422, 503))
async def list_certificates(backend: BackendDep, page: PageDep, _: Admin) -> Page[CertificateOut]:
    return page_of([CertificateOut.of(c) for c in await backend.client.certificates.list()], page,
                   key=lambda c: c.fingerprint, filters={"remote": backend.remote})


@router.post("", summary="Trust a client certificate", status_code=201, response_model=CertificateOut,
             operation_id="certificates-add", responses=problem_responses(401, 403, 404, 409, 422, 503))
async def add_certificate(body: CertificateAdd, backend: BackendDep, response: Response, _: Admin) -> CertificateOut:
    try:
        fingerprint = fingerprint_of_pem(body.certificate)
    except CertificateError:
        raise ProblemError(422, "`certificate` is not a PEM certificate", slug="validation",
                           errors=[{"field": "body.certificate", "message": "not a PEM certificate"}]) from None
    if fingerprint in {c.fingerprint for c in await backend.client.certificates.list()}:
        raise ProblemError(409, f"certificate {fingerprint} is already trusted", slug="exists")
    cert = await backend.client.certificates.add(body.certificate, name=body.name, type=body.type,
                                                 restricted=body.restricted, projects=body.projects)
    response.headers["Location"] = f"/v1/certificates/{cert.fingerprint}"
    return CertificateOut.of(cert)


@router.post("/generate", summary="Make a new client key pair (optionally trusted at once)", status_code=201,
             response_model=GeneratedPair, operation_id="certificates-generate",
             responses=problem_responses(401, 403, 404, 409, 422, 503))
async def generate_certificate(body: GenerateRequest, backend: BackendDep, _: Admin) -> GeneratedPair:
    cert = Certificate.generate(body.name, common_name=body.name)
    if body.trust:
        await backend.client.certificates.add(cert.cert_pem, name=body.name)
    return GeneratedPair(certificate_pem=cert.cert_pem.decode(), key_pem=cert.key_pem.decode(),
                         fingerprint=cert.fingerprint(), trusted=body.trust)


@router.post("/tokens", summary="Issue a trust token for a new client", status_code=201,
             response_model=TrustTokenOut, operation_id="certificates-token",
             responses=problem_responses(400, 401, 403, 404, 422, 503))
async def create_trust_token(body: TokenRequest, backend: BackendDep, _: Admin) -> TrustTokenOut:
    tok = await backend.client.certificates.create_token(body.name)
    return TrustTokenOut(token=tok.encode(), client_name=tok.client_name, fingerprint=tok.fingerprint,
                         addresses=tok.addresses, expires_at=str(tok.expires_at), operation_id=tok.operation_id)


@router.get("/{fingerprint}", summary="One trusted certificate", response_model=CertificateOut,
            operation_id="certificates-get", responses=problem_responses(401, 403, 404, 422, 503))
async def get_certificate(fingerprint: Fingerprint, backend: BackendDep, response: Response,
                          _: Admin) -> CertificateOut:
    cert = await backend.client.certificates.get(fingerprint.lower())
    set_etag(response, cert.etag)
    return CertificateOut.of(cert)


@router.delete("/{fingerprint}", summary="Remove a certificate from the trust store", status_code=204,
               operation_id="certificates-delete", responses=problem_responses(401, 403, 404, 422, 503))
async def delete_certificate(fingerprint: Fingerprint, backend: BackendDep, _: Admin) -> Response:
    cert = await backend.client.certificates.get(fingerprint.lower())
    await backend.client.certificates.delete(cert.fingerprint)
    return Response(status_code=204)

