"""Containers without a server: the create spec and its LXD request, reading an LXD instance, filtering lists.

`ContainerSpec` is what callers ask for; `build_create_request` turns it, the server's version and a resolved image
into the body of LXD's instance create, plus the NIC parents whose subnet is unknown.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.containers.constraints import Constraints, InstanceDraft, apply_constraints, parse_byte_size
from app.images.search import ImageSource
from app.lxd.models import InstanceCreate, StatusCode
from app.networks.decisions import InterfaceSpec, devices_from_interface_info

log = logging.getLogger(__name__)

USER_NAMESPACE = "user."
USER_DATA_KEY = "user.user-data"
NETWORK_CONFIG_KEY = "user.network-config"
AUTOSTART_KEY = "boot.autostart"
MIB = 1 << 20
MAX_MEM_MIB = 2**32 - 1


_NAME = r"^[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$"


def status_of(instance: Mapping[str, Any]) -> str:
    """An instance's status name, from its `status_code` (or its `status` when it has no code)."""
    return StatusCode.label_of(instance.get("status_code"), instance.get("status") or "")


def user_metadata(config: Mapping[str, str]) -> dict[str, str]:
    """The user metadata in an instance config: each `user.<key>` as `<key>`."""
    return {k[len(USER_NAMESPACE):]: v for k, v in config.items() if k.startswith(USER_NAMESPACE)}


def cpus_of(value: str) -> int:
    m = re.match(r"\s*([+-]?\d+)", value or "")
    if not m:
        if value:
            log.debug("cannot read limits.cpu %r", value)
        return 0
    n = int(m.group(1))
    return n if n > 0 else 0


def memory_mib_of(value: str) -> int:
    if not value:
        return 0
    try:
        n = parse_byte_size(value) // MIB
    except ValueError:
        log.debug("cannot read limits.memory %r", value)
        return 0
    return min(n, MAX_MEM_MIB)


def merge_config(current: Mapping[str, str] | None, updates: Mapping[str, str] | None) -> dict[str, str]:
    """`current` with `updates` laid over it; keys not in `updates` are kept."""
    return {**(current or {}), **(updates or {})}


MetadataKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]


class ImageRef(BaseModel):
    """Which image a container starts from: a local alias or fingerprint, or an OS series searched for."""

    model_config = ConfigDict(extra="forbid")

    alias: str | None = Field(None, description="an image alias, local or on the sources")
    fingerprint: str | None = Field(None, description="a local image fingerprint (or a unique prefix)")
    series: str | None = Field(None, description="an OS series such as `jammy`, found as `<series>/<arch>`")
    arch: str | None = Field(None, description="architecture for a series (default: the server's)")
    sources: list[str] | None = Field(None, description="image-server names to search, in order (default: all)")
    copy_local: bool = Field(True, description="copy a remote image into the local store under the local alias")

    @model_validator(mode="after")
    def _one_reference(self) -> ImageRef:
        given = [k for k in ("alias", "fingerprint", "series") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of alias, fingerprint or series")
        return self


class ContainerSpec(BaseModel):
    """A container to create."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(pattern=_NAME, description="1 to 63 letters, digits and dashes, starting with a letter")]
    image: ImageRef
    profiles: list[str] = Field(default_factory=lambda: ["default"])
    config: dict[str, str] = Field(default_factory=dict)
    devices: dict[str, dict[str, str]] = Field(default_factory=dict)
    metadata: dict[MetadataKey, str] = Field(default_factory=dict, description="each key `k` is config `user.k`")
    user_data: str | None = Field(None, description="cloud-init user data")
    network_config: str | None = Field(None, description="cloud-init network config")
    autostart: bool | None = Field(None, description="start with the host (`boot.autostart`)")
    constraints: Constraints = Field(default_factory=Constraints)
    interfaces: list[InterfaceSpec] = Field(default_factory=list, description="NICs, as bridged NIC devices")
    ephemeral: bool = False
    start: bool = True

    @field_validator("interfaces")
    @classmethod
    def _unique_interfaces(cls, v: list[InterfaceSpec]) -> list[InterfaceSpec]:
        names = [i.name for i in v]
        if len(set(names)) != len(names):
            raise ValueError("interface names must be unique")
        return v

    @model_validator(mode="after")
    def _no_conflicts(self) -> ContainerSpec:
        for key, value in self.typed_config().items():
            if key in self.config and self.config[key] != value:
                raise ValueError(f"config {key!r} conflicts with the value given by its own field")
        for iface in self.interfaces:
            if iface.name in self.devices:
                raise ValueError(f"interface {iface.name!r} conflicts with the device of the same name")
        return self

    def typed_config(self) -> dict[str, str]:
        """The config keys that come from metadata, user_data, network_config and autostart."""
        out = {USER_NAMESPACE + k: v for k, v in self.metadata.items()}
        if self.user_data is not None:
            out[USER_DATA_KEY] = self.user_data
        if self.network_config is not None:
            out[NETWORK_CONFIG_KEY] = self.network_config
        if self.autostart is not None:
            out[AUTOSTART_KEY] = "true" if self.autostart else "false"
        return out

    def draft(self) -> tuple[InstanceDraft, list[str]]:
        """The LXD-side definition (without constraints) and the NIC parents whose subnet is unknown."""
        nics, unknown = devices_from_interface_info(self.interfaces)
        devices = {k: dict(v) for k, v in self.devices.items()} | nics
        draft = InstanceDraft(name=self.name, profiles=list(self.profiles),
                              config={**self.config, **self.typed_config()}, devices=devices,
                              ephemeral=self.ephemeral)
        return draft, unknown

    def apply_constraints(self, server_version: str, constraints: Constraints | None = None) -> InstanceDraft:
        """The LXD-side definition with the constraints (this spec's when none are given) applied."""
        draft, _ = self.draft()
        return apply_constraints(draft, server_version, self.constraints if constraints is None else constraints)


@dataclass(frozen=True)
class CreateRequest:
    """The instance create request, and the NIC parents whose subnet is unknown (reported back)."""

    instance: InstanceCreate
    unknown_parents: list[str]

    @property
    def body(self) -> dict[str, Any]:
        return self.instance.body()


def create_body(draft: InstanceDraft, source: ImageSource) -> InstanceCreate:
    return InstanceCreate(name=draft.name, profiles=draft.profiles, config=draft.config, devices=draft.devices,
                          ephemeral=draft.ephemeral, source=source.create_source(),
                          architecture=draft.architecture or None, instance_type=draft.instance_type or None,
                          description=draft.description or None)


def build_create_request(spec: ContainerSpec, source: ImageSource, server_version: str) -> CreateRequest:
    """The instance create request for `spec` from the resolved image, with its constraints applied."""
    draft, unknown = spec.draft()
    apply_constraints(draft, server_version, spec.constraints)
    return CreateRequest(instance=create_body(draft, source), unknown_parents=unknown)
