"""What the image jobs are asked (`params`) and what they produce (`result`), as schemas of the OpenAPI
document's `Job` union. The steps read and write plain dicts; these models only describe them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.images.router import FindRequest

FINGERPRINT = Field(description="sha256 of the image", examples=["8e1c4b8e3d2a7f5c"])


class ImageFindParams(FindRequest):
    model_config = ConfigDict(extra="allow")

    source_specs: list[dict[str, Any]] | None = Field(None, description="the image sources searched, in order",
                                                      examples=[[{"name": "cloud-images-releases"}]])


class ImageCopyParams(BaseModel):
    model_config = ConfigDict(extra="allow")

    server: str = Field(description="the image server", examples=["https://cloud-images.ubuntu.com/releases"])
    protocol: str | None = Field(None, description="`lxd`, `incus` or `simplestreams`", examples=["simplestreams"])
    alias: str | None = Field(None, description="the image's alias there", examples=["jammy/amd64"])
    fingerprint: str | None = Field(None, description="or its fingerprint", examples=[None])
    certificate: str | None = Field(None, description="PEM certificate pinning an `lxd` server", examples=[None])
    aliases: list[str] = Field(default_factory=list, description="local aliases to give it",
                               examples=[["juju/jammy/amd64"]])
    auto_update: bool = Field(False, description="keep it refreshed from the source", examples=[False])
    public: bool = Field(False, description="serve it to untrusted clients", examples=[False])


class ImageImportParams(BaseModel):
    model_config = ConfigDict(extra="allow")

    aliases: list[str] = Field(default_factory=list, description="aliases to give it", examples=[["base"]])
    public: bool = Field(False, description="serve it to untrusted clients", examples=[False])
    filename: str | None = Field(None, description="the uploaded file name", examples=["base.tar.gz"])
    fingerprint: str | None = Field(None, description="sha256 of the upload", examples=["8e1c4b8e3d2a7f5c"])
    files: list[str] | None = Field(None, description="the spooled parts of the upload", examples=[None])
    sizes: list[int] | None = Field(None, description="bytes of each part", examples=[[23456789]])


class ImageParams(BaseModel):
    model_config = ConfigDict(extra="allow")

    fingerprint: str = FINGERPRINT


class ImageFound(BaseModel):
    fingerprint: str = FINGERPRINT
    source: str | None = Field(description="the image source it came from; null for a local alias",
                               examples=["cloud-images-releases"])
    alias: str | None = Field(description="the alias it was found (or stored) under", examples=["juju/jammy/amd64"])
    local: bool = Field(description="it is in the local store", examples=[True])
    copied: bool = Field(description="it was copied into the local store by this job", examples=[True])


class ImageSummary(BaseModel):
    fingerprint: str = FINGERPRINT
    aliases: list[str] = Field(description="its alias names", examples=[["juju/jammy/amd64"]])
    architecture: str = Field(description="LXD's architecture name", examples=["x86_64"])
    type: str = Field(description="`container` or `virtual-machine`", examples=["container"])
    size: int = Field(description="bytes", examples=[23456789])
    public: bool = Field(description="served to untrusted clients", examples=[False])
    description: str = Field(description="its `description` property", examples=["Ubuntu 22.04 LTS"])


class ImageDeleted(BaseModel):
    fingerprint: str = FINGERPRINT
    deleted: Literal[True] = Field(description="always true", examples=[True])
