"""What the volume snapshot jobs are asked (`params`) and what they produce (`result`), as schemas of the OpenAPI
document's `Job` union. The steps read and write plain dicts; these models only describe them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

POOL = Field(description="the storage pool", examples=["default"])
VOLUME = Field(description="the custom volume", examples=["data"])
SNAPSHOT = Field(description="the snapshot", examples=["nightly"])


class VolumeSnapshotParams(BaseModel):
    model_config = ConfigDict(extra="allow")

    pool: str = POOL
    volume: str = VOLUME
    snapshot: str = SNAPSHOT


class VolumeSnapshotTaken(BaseModel):
    pool: str = POOL
    volume: str = VOLUME
    name: str = SNAPSHOT


class VolumeSnapshotRestored(BaseModel):
    pool: str = POOL
    volume: str = VOLUME
    restored: str = SNAPSHOT


class VolumeSnapshotDeleted(BaseModel):
    pool: str = POOL
    volume: str = VOLUME
    deleted: str = SNAPSHOT
