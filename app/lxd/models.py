"""Typed views of LXD objects. Unknown fields are kept (`extra="allow"`), so newer servers do not break us."""

from __future__ import annotations

import re
from datetime import datetime
from enum import IntEnum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator


class StatusCode(IntEnum):
    """LXD's status codes of operations and instances (shared/api/status_code.go); `label` is LXD's name."""

    CREATED = 100
    STARTED = 101
    STOPPED = 102
    RUNNING = 103
    CANCELLING = 104
    PENDING = 105
    STARTING = 106
    STOPPING = 107
    ABORTING = 108
    FREEZING = 109
    FROZEN = 110
    THAWED = 111
    ERROR = 112
    READY = 113
    SUCCESS = 200
    FAILURE = 400
    CANCELLED = 401

    @property
    def label(self) -> str:
        return "Operation created" if self is StatusCode.CREATED else self.name.capitalize()

    @property
    def final(self) -> bool:
        """An operation in this status has ended."""
        return self >= 200

    @classmethod
    def label_of(cls, code: int | None, fallback: str = "") -> str:
        """The name of `code`, or `fallback` for a code this table does not know."""
        if code is None:
            return fallback
        try:
            return cls(code).label
        except ValueError:
            return fallback


ALIVE_STATUSES = tuple(c.label for c in (StatusCode.STARTING, StatusCode.STARTED, StatusCode.RUNNING,
                                         StatusCode.STOPPING, StatusCode.STOPPED))
"""The statuses of an instance that is starting, started, running, stopping or stopped (not frozen, errored...)."""


_ARCHES = [
    (re.compile(r"amd64|x86_64"), "amd64"),
    (re.compile(r"i?[3-9]86"), "i386"),
    (re.compile(r"(arm$)|(armv.*)"), "armhf"),
    (re.compile(r"aarch64"), "arm64"),
    (re.compile(r"ppc64|ppc64el|ppc64le"), "ppc64el"),
    (re.compile(r"s390x"), "s390x"),
    (re.compile(r"riscv64|risc$|risc-[vV]64"), "riscv64"),
]


def normalise_arch(arch: str) -> str:
    """The canonical name of an architecture: x86_64 → amd64, aarch64 → arm64, armv7l → armhf, …"""
    arch = arch.strip()
    for pattern, name in _ARCHES:
        if pattern.search(arch):
            return name
    return arch


class LXDModel(BaseModel):
    """Base for every API object: tolerant of fields this client does not know."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ServerEnvironment(LXDModel):
    server: str = "lxd"
    server_version: str = ""
    server_clustered: bool = False
    server_name: str = ""
    architectures: list[str] = Field(default_factory=list)
    certificate: str = ""
    certificate_fingerprint: str = ""
    kernel_version: str = ""
    kernel_architecture: str = ""
    project: str = "default"


class ServerInfo(LXDModel):
    """`GET /1.0`."""

    api_extensions: list[str] = Field(default_factory=list)
    api_status: str = ""
    api_version: str = ""
    auth: str = ""
    auth_methods: list[str] = Field(default_factory=list)
    public: bool = False
    config: dict[str, Any] = Field(default_factory=dict)
    environment: ServerEnvironment = Field(default_factory=ServerEnvironment)

    @property
    def name_or_none(self) -> str:
        """The server's name; an unnamed standalone server is called "none" (a cluster member stays "")."""
        env = self.environment
        return env.server_name or ("" if env.server_clustered else "none")

    @property
    def clustered(self) -> bool:
        return self.environment.server_clustered

    @property
    def certificate(self) -> str:
        return self.environment.certificate

    @property
    def version(self) -> str:
        return self.environment.server_version

    @property
    def extensions(self) -> frozenset[str]:
        return frozenset(self.api_extensions)

    @property
    def host_arch(self) -> str:
        """The normalised kernel architecture (amd64, arm64, ...)."""
        return normalise_arch(self.environment.kernel_architecture)

    @property
    def supported_arches(self) -> tuple[str, ...]:
        """The normalised architectures the server runs (the host's when it lists none)."""
        return tuple(normalise_arch(a) for a in self.environment.architectures) or (self.host_arch,)

    @property
    def network_api(self) -> bool:
        return "network" in self.api_extensions

    @property
    def cluster_supported(self) -> bool:
        return "clustering" in self.api_extensions

    @property
    def storage_supported(self) -> bool:
        return "storage" in self.api_extensions


class OperationState(LXDModel):
    """One snapshot of an operation (`GET /1.0/operations/<id>` or an `operation` event)."""

    id: str
    class_: str = Field("", alias="class")
    description: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    status: str = ""
    status_code: int = 0
    resources: dict[str, list[str]] | None = None
    metadata: dict[str, Any] | None = None
    may_cancel: bool = False
    err: str = ""
    location: str = ""

    @property
    def final(self) -> bool:
        return self.status_code >= StatusCode.SUCCESS


class Progress(LXDModel):
    """A progress update of an operation: the structured `progress` and the `<stage>_progress` text."""

    stage: str = ""
    percent: int | None = None
    processed: int | None = None
    speed: int | None = None
    text: str = ""

    @classmethod
    def from_metadata(cls, md: dict[str, Any] | None) -> Progress | None:
        if not md:
            return None
        p: dict[str, Any] = md.get("progress") if isinstance(md.get("progress"), dict) else {}  # type: ignore[assignment]
        stage, text = p.get("stage", ""), ""
        for k, v in md.items():
            if k.endswith("_progress") and isinstance(v, str):
                stage, text = stage or k[: -len("_progress")], v
        if not p and not text:
            return None

        def num(key: str) -> int | None:
            try:
                return int(p[key]) if key in p else None
            except (TypeError, ValueError):
                return None

        return cls(stage=stage, percent=num("percent"), processed=num("processed"), speed=num("speed"), text=text)


class Event(LXDModel):
    """One message of `/1.0/events`."""

    type: str
    timestamp: datetime | None = None
    location: str = ""
    project: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def action(self) -> str:
        """A lifecycle event's action (`instance-started`, `image-alias-deleted`, ...); "" for other events."""
        return str(self.metadata.get("action") or "") if self.type == "lifecycle" else ""

    @property
    def source(self) -> tuple[str, ...]:
        """What a lifecycle event is about, as path segments after `/1.0/`: `("instances", "c1")`,
        `("instances", "c1", "snapshots", "s1")`, `("images", "aliases", "foo")`; () when it names nothing."""
        return api_path_parts(str(self.metadata.get("source") or ""))

    @property
    def resources(self) -> dict[str, list[tuple[str, ...]]]:
        """What an operation event's operation acts on, by collection, each as `source` parts."""
        out: dict[str, list[tuple[str, ...]]] = {}
        for urls in (self.metadata.get("resources") or {}).values():
            for url in urls or ():
                parts = api_path_parts(str(url))
                if parts:
                    out.setdefault(parts[0], []).append(parts)
        return out


def api_object(url: str) -> tuple[tuple[str, ...], str]:
    """`/1.0/instances/c1?project=p` -> `(("instances", "c1"), "p")` (a `used_by` entry); the project is
    `default` when the URL names none."""
    from urllib.parse import parse_qs, urlsplit

    return api_path_parts(url), (parse_qs(urlsplit(url).query).get("project") or ["default"])[0]


def api_path_parts(url: str) -> tuple[str, ...]:
    """`/1.0/instances/c1?project=p` -> `("instances", "c1")` (segments unquoted); () for anything else."""
    from urllib.parse import unquote, urlsplit

    path = urlsplit(url).path
    if not path.startswith("/1.0/"):
        return ()
    return tuple(unquote(seg) for seg in path[len("/1.0/"):].split("/") if seg)


class Tagged(LXDModel):
    """An object LXD serves with an ETag: `etag` is what to pass back as If-Match on update."""

    _etag: str | None = PrivateAttr(default=None)

    @property
    def etag(self) -> str | None:
        return self._etag

    @classmethod
    def from_envelope(cls, env: Any) -> Self:
        """The object in a `sync` answer, with the answer's ETag."""
        obj = cls.model_validate(env.metadata)
        obj._etag = env.etag
        return obj


class Instance(Tagged):
    """An instance (`GET /1.0/instances/<name>`); `etag` is the ETag to pass back on update."""

    name: str
    type: str = "container"
    status: str = ""
    status_code: int = 0
    architecture: str = ""
    config: dict[str, str] = Field(default_factory=dict)
    devices: dict[str, dict[str, str]] = Field(default_factory=dict)
    expanded_config: dict[str, str] = Field(default_factory=dict)
    expanded_devices: dict[str, dict[str, str]] = Field(default_factory=dict)
    profiles: list[str] = Field(default_factory=list)
    ephemeral: bool = False
    stateful: bool = False
    description: str = ""
    created_at: datetime | None = None
    last_used_at: datetime | None = None
    location: str = ""
    project: str = ""
    state: InstanceState | None = None

    @field_validator("config", "devices", "expanded_config", "expanded_devices", "profiles", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any, info: ValidationInfo) -> Any:
        """A cluster member that cannot be reached lists its instances with `null` for these (status `Error`)."""
        if v is None:
            return [] if info.field_name == "profiles" else {}
        return v

    def writable(self) -> dict[str, Any]:
        """The fields a PUT replaces."""
        return {"architecture": self.architecture, "config": self.config, "devices": self.devices,
                "ephemeral": self.ephemeral, "profiles": self.profiles, "description": self.description,
                "stateful": self.stateful}


class NetworkAddress(LXDModel):
    family: str = ""
    address: str = ""
    netmask: str = ""
    scope: str = ""


class NetworkState(LXDModel):
    addresses: list[NetworkAddress] = Field(default_factory=list)
    hwaddr: str = ""
    host_name: str = ""
    mtu: int = 0
    state: str = ""
    type: str = ""


class InstanceState(Tagged):
    """`GET /1.0/instances/<name>/state`; `etag` is what to pass back as If-Match on a state change."""

    status: str = ""
    status_code: int = 0
    pid: int = 0
    processes: int = 0
    network: dict[str, NetworkState] | None = None


class InstanceCreate(LXDModel):
    """The body of an instance create (`Instances.create_from`); fields left unset are not sent."""

    name: str
    type: str = "container"
    profiles: list[str] | None = None
    config: dict[str, str] | None = None
    devices: dict[str, dict[str, str]] | None = None
    ephemeral: bool | None = None
    source: dict[str, Any] = Field(default_factory=lambda: {"type": "none"})
    architecture: str | None = None
    instance_type: str | None = None
    description: str | None = None

    def body(self) -> dict[str, Any]:
        """The request body: every field given (or defaulted for `name`, `type`, `source`), in LXD's names."""
        return self.model_dump(mode="json", exclude_none=True)


Instance.model_rebuild()


class Snapshot(LXDModel):
    name: str
    stateful: bool = False
    created_at: datetime | None = None
    expires_at: datetime | None = None
    config: dict[str, str] = Field(default_factory=dict)
    devices: dict[str, dict[str, str]] = Field(default_factory=dict)
    profiles: list[str] = Field(default_factory=list)


class FileInfo(LXDModel):
    """What the `X-LXD-*` (or `X-Incus-*`) headers of a file say; `mode` has four octal digits ("0644")."""

    type: str = "file"
    mode: str = "0644"
    uid: int = 0
    gid: int = 0
    size: int | None = None


def normalise_mode(mode: int | str | None) -> str:
    """A file mode as four octal digits: 0o644, "644", "0644" and "0o644" all give "0644"."""
    if mode is None or mode == "":
        return "0644"
    if isinstance(mode, int):
        value = mode
    else:
        s = mode.strip().lower().removeprefix("0o")
        value = int(s, 8)
    if not 0 <= value <= 0o7777:
        raise ValueError(f"file mode out of range: {mode!r}")
    return f"{value:04o}"
