"""Request and response bodies of `/v1/storage-pools`: pools, custom volumes and their snapshots."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

STORAGE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
PoolName = Annotated[str, Path(pattern=STORAGE_NAME, description="the pool's name", examples=["default"])]
VolumeName = Annotated[str, Path(pattern=STORAGE_NAME, description="the custom volume's name", examples=["data"])]
VolumeSnapshotName = Annotated[str, Path(pattern=STORAGE_NAME, description="the snapshot's name",
                                         examples=["before-upgrade"])]


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
