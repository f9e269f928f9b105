"""Gateway settings, read from the environment (prefix `LXDGW_`) and an optional `.env` file.

Lists and nested objects are JSON, e.g.
`LXDGW_REMOTES='[{"name": "local", "url": "unix:///var/lib/lxd/unix.socket", "default": true}]'`.
With no remote configured, the default remote is the local socket found by discovery.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.lxd.discovery import discover_socket
from app.rates import parse_rate


class RemoteSettings(BaseModel):
    """One LXD or Incus endpoint the gateway talks to."""

    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")]
    url: str = Field(description="`unix:///path/to/unix.socket` or `https://host:port`")
    client_cert: Path | None = Field(None, description="PEM client certificate (HTTPS)")
    client_key: Path | None = Field(None, description="PEM client key (HTTPS)")
    server_cert: Path | None = Field(None, description="PEM server certificate to pin (trusted as the only CA)")
    server_fingerprint: str | None = Field(None, description="sha256 fingerprint of the server certificate to pin")
    insecure_skip_verify: bool = Field(False, description="accept any server certificate (never by default)")
    proxy: str | None = Field(None, description="HTTP proxy for this remote")
    project: str = "default"
    default: bool = False
    urls: list[str] = Field(default_factory=list, description="more `https://` member URLs of a clustered remote: "
                            "when the member at `url` cannot be reached, the gateway moves to the next")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not (v.startswith("unix://") or v.startswith("https://")):
            raise ValueError("must start with unix:// or https://")
        return v.rstrip("/")

    @field_validator("urls")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        if any(not u.startswith("https://") for u in v):
            raise ValueError("member URLs must start with https://")
        return [u.rstrip("/") for u in v]

    @field_validator("server_fingerprint")
    @classmethod
    def _fp(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.lower().replace(":", "")
        if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
            raise ValueError("must be 64 hex characters (sha256)")
        return v

    @model_validator(mode="after")
    def _https_needs_identity(self) -> RemoteSettings:
        if self.url.startswith("https://"):
            if not (self.client_cert and self.client_key):
                raise ValueError(f"remote {self.name!r}: https needs client_cert and client_key")
            if not (self.server_cert or self.server_fingerprint or self.insecure_skip_verify):
                raise ValueError(f"remote {self.name!r}: https needs server_cert or server_fingerprint to pin "
                                 "(or insecure_skip_verify=true, asked for by name)")
        return self

    @property
    def socket_path(self) -> str | None:
        return self.url[len("unix://"):] if self.url.startswith("unix://") else None


class ImageSourceSettings(BaseModel):
    """A remote image server searched by image find, in order."""

    name: str
    url: str
    protocol: Literal["simplestreams", "lxd", "incus"] = "simplestreams"
    certificate: Path | None = None
    backends: list[Literal["lxd", "incus"]] = Field(default_factory=list)
    """The backends whose searches use it when no source is named (empty: every backend); naming it always
    uses it."""

    def serves(self, backend: str) -> bool:
        return not self.backends or backend in self.backends


def default_image_sources() -> list[ImageSourceSettings]:
    """Ubuntu's cloud images for every backend, then images.linuxcontainers.org for Incus remotes only (the
    distributions' images Incus knows as its `images:` remote; LXD has its own image server)."""
    return [
        ImageSourceSettings(name="cloud-images-releases", url="https://cloud-images.ubuntu.com/releases"),
        ImageSourceSettings(name="cloud-images-daily", url="https://cloud-images.ubuntu.com/daily"),
        ImageSourceSettings(name="images-linuxcontainers", url="https://images.linuxcontainers.org",
                            backends=["incus"]),
    ]


def searched_sources(sources: list[ImageSourceSettings], names: list[str] | None,
                     backend: str) -> list[ImageSourceSettings]:
    """The sources a search on a remote of `backend` uses: those named, in the order given (unknown names are
    left out); else every configured one that serves `backend`, in search order."""
    if names:
        by_name = {s.name: s for s in sources}
        return [by_name[n] for n in names if n in by_name]
    return [s for s in sources if s.serves(backend)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LXDGW_", env_file=".env", env_file_encoding="utf-8",
                                      extra="ignore")

    bind: str = Field("127.0.0.1:8080", description="host:port the HTTP server listens on")
    data_dir: Path = Field(Path(".data"), description="job database, remotes added at run time, client certs")
    tokens_file: Path | None = Field(None, description="API tokens (hashed); default <data_dir>/tokens.json")
    database_url: SecretStr | None = Field(
        None, description="the job database (jobs, idempotency keys, audit): `sqlite:///<path>` (one gateway "
        "process; a relative path, or `sqlite:////abs/path`), default `<data_dir>/jobs.sqlite3`; or "
        "`postgresql://user:password@host:port/db?sslmode=verify-full&sslrootcert=ca.pem` (any number of gateway "
        "processes share it). Never logged with its password")
    secret_key: SecretStr | None = Field(
        None, description="encrypts the private keys of remotes added at run time in a PostgreSQL database "
        "(AES-GCM; any text of 32 characters or more); never stored in the database. Without it (or "
        "`LXDGW_SECRET_KEY_FILE`), adding a remote at run time on PostgreSQL is refused")
    secret_key_file: Path | None = Field(None, description="a file holding `LXDGW_SECRET_KEY` (e.g. a mounted "
                                         "secret); read at start-up")
    remotes: list[RemoteSettings] = Field(default_factory=list)
    image_sources: list[ImageSourceSettings] = Field(default_factory=default_image_sources)
    image_alias_template: str = Field("juju/{series}/{arch}", description="local alias of found images")
    bridge_name: str = Field("lxdbr0", description="bridge created by verify-network when a profile has no NIC")
    bridge_nat: bool = Field(True, description="NAT on the bridge created by verify-network")
    bridge_config: dict[str, str] = Field(default_factory=dict, description="more config of the bridge created by "
                                          "verify-network, e.g. a fixed `ipv4.address` instead of `auto`")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    auth_enabled: bool = Field(True, description="require bearer tokens (turning it off prints a warning)")
    job_concurrency_per_remote: int = Field(
        32, ge=1, le=256, description="jobs running at once per remote (the rest wait `queued`): a burst of a few "
        "dozen creates runs side by side, as LXD itself runs them")
    required_remotes: list[str] = Field(
        default_factory=list, description="remotes that must answer for /readyz to be 200 (empty: any one remote "
        "answering is enough; one dead remote among several does not take the gateway out of service)")
    read_model: bool = Field(True, description="answer reads of containers, images and profiles from a model of "
                             "each remote kept in sync by LXD's events (false: every read goes to LXD)")
    read_model_reconcile_seconds: float = Field(
        60.0, ge=1, description="the model re-lists every mirrored collection this often, to catch what LXD "
        "sends no event for")
    read_model_projects: int = Field(32, ge=1, le=10_000, description="projects per remote the model keeps "
                                     "(beyond it, the least recently read is dropped and read live again)")
    job_retention_days: float = Field(7.0, ge=0)
    shutdown_grace_seconds: float = Field(20.0, ge=0)
    job_progress_interval_seconds: float = Field(
        1.0, ge=0, description="a job's progress is written to the job database at most this often (the streams "
        "carry every update)")
    job_subscriber_queue: int = Field(
        1024, ge=8, le=1_000_000, description="messages a job-stream reader may fall behind before it is closed "
        "(websocket code 1013); also how many recent messages per job an SSE resume can replay")
    job_sse_heartbeat_seconds: float = Field(15.0, gt=0, description="interval of SSE heartbeat comments")
    job_lease_seconds: float = Field(60.0, gt=0, description="lease of a job on its gateway process, renewed "
                                     "while it runs")
    job_recovery_timeout_seconds: float = Field(
        50.0, gt=0, description="time allowed to settle one job left running by a previous gateway process")
    job_output_max_bytes: int = Field(
        4 * 1024 * 1024, ge=0, le=1 << 30, description="output (stdout and stderr together) kept with one job, "
        "whatever its request asks; beyond it the result says `truncated` (the `output` stream messages still carry "
        "everything)")
    idempotency_ttl_hours: float = Field(24.0, gt=0, description="how long an Idempotency-Key answers its job")
    extensions: list[str] = Field(
        default_factory=list, description="Python modules imported at start-up; each may define `install(app)` "
        "to add routes and register job kinds (`app.state.job_kinds.register(kind)`)")
    lxd_timeout_seconds: float = Field(30.0, gt=0, description="timeout of short LXD calls")
    cors_origins: list[str] = Field(default_factory=list)
    metrics_public: bool = Field(True, description="serve /metrics without a token")
    rate_limit: str = Field("1200/minute", description="requests per token (`100/second`, `1200/minute`, "
                            "`10 per second`, `100/5 minutes`), per client address when authentication is off; "
                            "empty: no limit")
    auth_failure_rate_limit: str = Field("30/minute", description="requests without a valid token per client "
                                         "address when authentication is on, as `rate_limit` (429 above; those "
                                         "refused so are not audited); empty: no limit")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="largest JSON request body (413 above)")
    max_upload_bytes: int = Field(4 * 1024**3, ge=0, description="largest upload body (files, images); 0: no "
                                  "limit")
    max_header_bytes: int = Field(64 * 1024, ge=4096, description="largest request head (request line and "
                                  "headers); 431 and close above")
    header_timeout_seconds: float = Field(10.0, gt=0, description="time a connection may take to send a request "
                                          "head (from its opening, or from its previous response); 408 and close "
                                          "after")
    max_connections: int = Field(2048, ge=1, description="open client connections (HTTP and websocket); one more "
                                 "is answered 503 and closed at once")
    trusted_proxies: list[str] = Field(
        default_factory=list, description="addresses and CIDR networks of the reverse proxies whose "
        "`X-Forwarded-For` names the client (the right-most address not itself a trusted proxy); from any other "
        "peer the header is ignored. Empty (the default): no header is trusted, the client is the connection's peer")
    max_jobs_per_token: int = Field(100, ge=0, description="unfinished jobs one token may have (429 above); 0: "
                                    "no limit")
    policy_allow: list[str] = Field(default_factory=list,
                                    description="policy rules allowed for every caller beyond the allow-list (an "
                                                "unknown rule stops the start)")

    @field_validator("rate_limit", "auth_failure_rate_limit")
    @classmethod
    def _rate(cls, v: str) -> str:
        if v.strip():
            parse_rate(v)  # a ValueError names the value and the notation
        return v.strip()

    @field_validator("bind")
    @classmethod
    def _bind(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port")
        return v

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, v: list[str]) -> list[str]:
        for entry in v:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is neither an address nor a CIDR network") from None
        return [entry.strip() for entry in v]

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None or not v.get_secret_value().strip():
            return None
        url = v.get_secret_value().strip()
        if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
            return SecretStr(url)
        if url.startswith(("postgresql://", "postgres://")):
            return SecretStr(url)
        raise ValueError("must be sqlite:///<path> or postgresql://...")

    @field_validator("secret_key")
    @classmethod
    def _secret_key(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and 0 < len(v.get_secret_value().strip()) < 32:
            raise ValueError("must be at least 32 characters")
        return v

    @model_validator(mode="after")
    def _remotes(self) -> Settings:
        names = [r.name for r in self.remotes]
        if len(set(names)) != len(names):
            raise ValueError("remote names must be unique")
        if sum(r.default for r in self.remotes) > 1:
            raise ValueError("at most one remote can be the default")
        return self

    @property
    def bind_host(self) -> str:
        return self.bind.rpartition(":")[0].strip("[]")

    @property
    def bind_port(self) -> int:
        return int(self.bind.rpartition(":")[2])

    @property
    def job_database(self) -> tuple[Literal["sqlite", "postgresql"], str]:
        """The kind of job database and where it is: a file path (SQLite) or a URL with its password
        (PostgreSQL: never log it; `app.store.database.redact_url` hides the password)."""
        if self.database_url is None:
            return "sqlite", str(self.data_dir / "jobs.sqlite3")
        url = self.database_url.get_secret_value()
        if url.startswith("sqlite:///"):
            return "sqlite", url[len("sqlite:///"):]
        return "postgresql", url

    def remote_key_secret(self) -> bytes | None:
        """The secret that encrypts the private keys of run-time remotes (PostgreSQL), or None when none is set."""
        if self.secret_key is not None and self.secret_key.get_secret_value().strip():
            return self.secret_key.get_secret_value().strip().encode()
        if self.secret_key_file is not None:
            return self.secret_key_file.read_bytes().strip() or None
        return None

    @property
    def tokens_path(self) -> Path:
        return self.tokens_file or self.data_dir / "tokens.json"

    def effective_remotes(self) -> list[RemoteSettings]:
        """The configured remotes, or the discovered local socket as `local`; exactly one is the default."""
        remotes = [r.model_copy() for r in self.remotes]
        if not remotes:
            path = discover_socket(env=os.environ)
            remotes = [RemoteSettings(name="local", url=f"unix://{path}", default=True)]
        if not any(r.default for r in remotes):
            remotes[0].default = True
        return remotes


class SettingsError(SystemExit):
    """Invalid settings: one readable line, no traceback."""


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"LXDGW_{'.'.join(str(p) for p in e['loc']).upper() or 'SETTINGS'}: {e['msg']}" for e in exc.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from None
