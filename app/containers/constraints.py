"""Resource constraints of a container and how they become LXD config, devices and create-request fields.

Memory and root-disk sizes are MiB. LXD before 3.10.0 read "MB" as MiB and rejects "MiB", so the suffix written
depends on the server's version.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

MIN_MIB_VERSION = (3, 10, 0)
DEFAULT_POOL = "default"
ROOT_DEVICE = "root"

_VERSION = re.compile(r"^([0-9]+.[0-9]+(.[0-9]+)?).*")
_SIZE = re.compile(r"^([0-9]*)(.*)$", re.S)
_UNITS = {
    "": 1, "B": 1, " bytes": 1,
    "kB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "PB": 10**15, "EB": 10**18,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40, "PiB": 2**50, "EiB": 2**60,
}
_INT64_MAX = 2**63 - 1


def parse_lxd_version(version: str) -> tuple[int, int, int] | None:
    """`major.minor[.patch]` from the start of a version string; a missing patch is -1; None when unparseable."""
    m = _VERSION.match(version or "")
    if not m:
        return None
    parts = m.group(1).split(".")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
        return None
    major, minor = int(parts[0]), int(parts[1])
    patch = int(parts[2]) if len(parts) == 3 else -1
    return major, minor, patch


def size_suffix(server_version: str) -> str:
    """"MiB" for servers at 3.10.0 or later, "MB" otherwise (including "3.10", whose patch counts as -1)."""
    v = parse_lxd_version(server_version)
    return "MiB" if v is not None and v >= MIN_MIB_VERSION else "MB"


def parse_byte_size(value: str) -> int:
    """Bytes in an LXD size string such as "2GiB", "1024MB" or "512"; raises ValueError("Invalid value")."""
    m = _SIZE.match(value)
    digits, suffix = (m.group(1), m.group(2)) if m else ("", value)
    if not digits or suffix not in _UNITS:
        raise ValueError("Invalid value")
    n = int(digits) * _UNITS[suffix]
    if n > _INT64_MAX:
        raise ValueError("Invalid value: overflow")
    return n


PositiveInt = Annotated[int, Field(gt=0)]


class Constraints(BaseModel):
    """Hardware wanted for a container. Unset fields are left to LXD and the profiles."""

    model_config = ConfigDict(extra="forbid")

    cores: PositiveInt | None = Field(None, description="CPU count, written as `limits.cpu`")
    mem_mib: PositiveInt | None = Field(None, description="memory limit in MiB, written as `limits.memory`")
    root_disk_mib: PositiveInt | None = Field(None, description="size of the root disk in MiB")
    root_disk_source: str | None = Field(None, description="storage pool of the root disk (default `default`)")
    instance_type: str | None = Field(None, description="an LXD instance type such as `t2.micro` or `c2-m4`")
    arch: str | None = Field(None, description="architecture of the container, e.g. `amd64` or `x86_64`")


@dataclass
class InstanceDraft:
    """The LXD-side definition of a container before it is created (what the create request carries)."""

    name: str
    profiles: list[str] = field(default_factory=list)
    config: dict[str, str] = field(default_factory=dict)
    devices: dict[str, dict[str, str]] = field(default_factory=dict)
    architecture: str = ""
    instance_type: str = ""
    ephemeral: bool = False
    description: str = ""


def root_disk_device(pool: str = DEFAULT_POOL, size: str | None = None) -> dict[str, str]:
    dev = {"type": "disk", "pool": pool or DEFAULT_POOL, "path": "/"}
    if size:
        dev["size"] = size
    return dev


def apply_constraints(draft: InstanceDraft, server_version: str, constraints: Constraints | None) -> InstanceDraft:
    """Write the constraints into `draft` (in place, also returned). Existing config keys are kept.

    Explicit cores and memory are written even with an instance type: LXD lets them override it.
    A root-disk size or pool replaces any `root` device with one on that pool (`default` when not given).
    """
    if constraints is None:
        return draft
    suffix = size_suffix(server_version)
    if constraints.instance_type:
        draft.instance_type = constraints.instance_type
    if constraints.cores:
        draft.config["limits.cpu"] = str(constraints.cores)
    if constraints.mem_mib:
        draft.config["limits.memory"] = f"{constraints.mem_mib}{suffix}"
    if constraints.arch:
        draft.architecture = constraints.arch
    if constraints.root_disk_mib or constraints.root_disk_source:
        size = f"{constraints.root_disk_mib}{suffix}" if constraints.root_disk_mib else None
        draft.devices[ROOT_DEVICE] = root_disk_device(constraints.root_disk_source or DEFAULT_POOL, size)
    return draft


def has_root_disk(devices: Mapping[str, Mapping[str, Any]] | None) -> bool:
    """Whether any device (of any type) is mounted at `/`."""
    return any((dev or {}).get("path") == "/" for dev in (devices or {}).values())


def pick_root_pool(pool_names: Iterable[str]) -> str | None:
    """The pool for a profile's root disk: `default` when present, else the first pool; None when there is none."""
    names = list(pool_names)
    if DEFAULT_POOL in names:
        return DEFAULT_POOL
    return names[0] if names else None


def default_pool_request() -> dict[str, Any]:
    """The body creating the pool used when a server has none."""
    return {"name": DEFAULT_POOL, "driver": "dir"}


def set_root_disk(devices: MutableMapping[str, dict[str, str]], pool: str) -> None:
    """Give a profile a root disk on `pool`, replacing any `root` device."""
    devices[ROOT_DEVICE] = {"type": "disk", "path": "/", "pool": pool}
