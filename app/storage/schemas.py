"""Request and response bodies of `/v1/storage-pools`: pools, custom volumes and their snapshots."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from app.http.deps import Config
from app.http.schemas import used_by_field

STORAGE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
PoolName = Annotated[str, Path(pattern=STORAGE_NAME, description="the pool's name", examples=["default"])]
VolumeName = Annotated[str, Path(pattern=STORAGE_NAME, description="the custom volume's name", examples=["data"])]
VolumeSnapshotName = Annotated[str, Path(pattern=STORAGE_NAME, description="the snapshot's name",
                                         examples=["before-upgrade"])]


class PoolOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # model_validate reads the app.lxd object

    name: str = Field(description="the pool's name", examples=["default"])
    driver: str = Field(description="`dir`, `btrfs`, `zfs`, `lvm`, `ceph`, ...", examples=["dir"])
    description: str = Field("", description="free text", examples=[""])
    status: str = Field("", description="`Created`, `Pending`, ...", examples=["Created"])
    config: dict[str, str] = Field(default_factory=dict, description="the pool's config",
                                   examples=[{"source": "/var/lib/lxd/storage-pools/default"}])
    used_by: list[str] = used_by_field("/1.0/profiles/default")


class PoolCreate(BaseModel):
    name: str = Field(pattern=STORAGE_NAME, description="the pool's name", examples=["fast"])
    driver: str = Field(pattern=r"^[a-z]+$", description="`dir`, `btrfs`, `zfs`, `lvm`, `ceph`, ...",
                        examples=["dir"])
    config: Config = Field(default_factory=dict, description="driver config", examples=[{}])
    description: str = Field("", description="free text", examples=["SSD pool"])


class VolumeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)  # model_validate reads the app.lxd object

    name: str = Field(description="the volume's name", examples=["data"])
    type: str = Field(description="`custom`, `container`, `virtual-machine` or `image`", examples=["custom"])
    content_type: str = Field(description="`filesystem` or `block`", examples=["filesystem"])
    description: str = Field("", description="free text", examples=[""])
    config: dict[str, str] = Field(default_factory=dict, description="the volume's config", examples=[{}])
    location: str = Field("", description="cluster member holding it", examples=["none"])
    used_by: list[str] = used_by_field("/1.0/instances/web1")


class VolumeCreate(BaseModel):
    name: str = Field(pattern=STORAGE_NAME, description="the custom volume's name", examples=["data"])
    config: Config = Field(default_factory=dict, description="volume config", examples=[{"size": "1GiB"}])


class VolumeSnapshotOut(BaseModel):
    model_config = ConfigDict(extra="forbid", from_attributes=True)

    name: str = Field(description="the snapshot's name", examples=["before-upgrade"])
    description: str = Field("", description="free text", examples=[""])
    content_type: str = Field("filesystem", description="`filesystem` or `block`", examples=["filesystem"])
    config: dict[str, str] = Field(default_factory=dict, description="the volume's config when it was taken",
                                   examples=[{}])
    created_at: datetime | None = Field(None, description="when it was taken",
                                        examples=["2026-01-02T03:04:05Z"])
    expires_at: datetime | None = Field(None, description="when LXD deletes it (none: never)",
                                        examples=[None])


class VolumeSnapshotCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "before-upgrade"}]})

    name: str = Field(pattern=STORAGE_NAME, description="the snapshot's name", examples=["before-upgrade"])
