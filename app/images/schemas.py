"""What the image routes answer: an image of the local store, and an alias."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.lxd.images import Image, ImageAlias

FP_EXAMPLE = "8e1c4b8e3d2a7f5c6b9a0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a"


class ImageOut(BaseModel):
    fingerprint: str = Field(description="sha256 of the image", examples=[FP_EXAMPLE])
    aliases: list[str] = Field(description="its alias names", examples=[["juju/jammy/amd64"]])
    architecture: str = Field(description="LXD's architecture name", examples=["x86_64"])
    type: str = Field(description="`container` or `virtual-machine`", examples=["container"])
    size: int = Field(description="bytes", examples=[23456789])
    public: bool = Field(description="served to untrusted clients", examples=[False])
    auto_update: bool = Field(description="refreshed from its source", examples=[False])
    cached: bool = Field(description="pulled in by LXD as a cache (expires when unused)", examples=[False])
    properties: dict[str, str] = Field(description="os, release, description, ...",
                                       examples=[{"os": "ubuntu", "release": "jammy"}])
    filename: str = Field("", description="the uploaded file name", examples=["ubuntu-22.04.tar.xz"])
    created_at: str | None = Field(None, description="when it was built", examples=["2026-11-01T00:00:00Z"])
    uploaded_at: str | None = Field(None, description="when it entered the store", examples=["2026-11-02T10:00:00Z"])

    @classmethod
    def of(cls, i: Image) -> ImageOut:
        return cls(fingerprint=i.fingerprint, aliases=i.alias_names, architecture=i.architecture, type=i.type,
                   size=i.size, public=i.public, auto_update=i.auto_update, cached=i.cached,
                   properties=i.properties, filename=i.filename,
                   created_at=i.created_at.isoformat() if i.created_at else None,
                   uploaded_at=i.uploaded_at.isoformat() if i.uploaded_at else None)


class AliasOut(BaseModel):
    name: str = Field(description="the alias (may contain `/`)", examples=["juju/jammy/amd64"])
    target: str = Field(description="the fingerprint it points at", examples=[FP_EXAMPLE])
    description: str = Field("", description="free text", examples=[""])
    type: str = Field("", description="`container` or `virtual-machine`", examples=["container"])

    @classmethod
    def of(cls, a: ImageAlias) -> AliasOut:
        return cls(name=a.name, target=a.target, description=a.description, type=a.type)
