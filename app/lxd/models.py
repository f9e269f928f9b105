"""Typed views of LXD objects. Unknown fields are kept (`extra="allow"`), so newer servers do not break us."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

# Operation status codes (shared/api/status_code.go). Final when >= 200.
CREATED, STARTED, STOPPED, RUNNING, CANCELLING, PENDING = 100, 101, 102, 103, 104, 105
SUCCESS, FAILURE, CANCELLED = 200, 400, 401


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
        return self.status_code >= 200


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

    def ipv4(self, global_only: bool = True) -> list[str]:
        out: list[str] = []
        for name, net in (self.network or {}).items():
            if name == "lo":
                continue
            out += [a.address for a in net.addresses
                    if a.family == "inet" and (not global_only or a.scope == "global")]
        return out


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
