"""What the container jobs are asked (`params`) and what they produce (`result`), as schemas of the OpenAPI
document's `Job` union. The steps read and write plain dicts; these models only describe them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.containers.router import EXAMPLE_CONTAINER, ContainerOut
from app.containers.router_exec import ExecBody
from app.containers.spec import ContainerSpec

EXAMPLE_CONTAINER_JSON: dict[str, Any] = dict(EXAMPLE_CONTAINER)
CONTAINER = Field(description="the container", examples=["web1"])


class ContainerParams(BaseModel):
    """The container a job acts on."""

    model_config = ConfigDict(extra="allow")

    name: str = CONTAINER


class ContainerCreateParams(ContainerSpec):
    """The container spec of the request, with the cluster member it is placed on."""

    target: str | None = Field(None, description="the cluster member (`?target=`); absent when LXD chose",
                               examples=["node2"])


class ContainerRemoveManyParams(BaseModel):
    model_config = ConfigDict(extra="allow")

    names: list[str] = Field(description="the containers to remove", examples=[["ci-1", "ci-2"]])


class ContainerActionParams(ContainerParams):
    force: bool = Field(False, description="stop/restart: kill instead of a clean shutdown", examples=[False])
    timeout: int = Field(30, description="seconds a clean stop may take (-1: no limit)", examples=[30])


class ContainerRenameParams(ContainerParams):
    new_name: str = Field(description="the new name", examples=["web2"])


class ContainerCopyParams(ContainerRenameParams):
    start: bool = Field(False, description="start the copy", examples=[True])


class ContainerPublishParams(ContainerParams):
    aliases: list[str] = Field(default_factory=list, description="aliases of the new image",
                               examples=[["web-golden"]])
    public: bool = Field(False, description="serve it to untrusted clients", examples=[False])


class ContainerExecParams(ExecBody):
    model_config = ConfigDict(extra="allow")

    name: str = CONTAINER


class SnapshotParams(ContainerParams):
    snapshot: str = Field(description="the snapshot", examples=["before-upgrade"])
    stateful: bool | None = Field(None, description="snapshot.create: with the running state", examples=[False])


class CreatedImage(BaseModel):
    fingerprint: str = Field(description="the image the container was made from", examples=["8e1c4b8e3d2a"])
    local: bool = Field(description="it was in the local store already (not copied from a source)",
                        examples=[True])


class CreatedContainer(ContainerOut):
    """The container as created (and started, unless asked not to), with the image it was made from."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {**EXAMPLE_CONTAINER_JSON, "image": {"fingerprint": "8e1c4b8e3d2a", "local": True}}]})

    image: CreatedImage
    unknown_parents: list[str] | None = Field(None, description="NIC parents LXD did not know (absent when none)",
                                              examples=[["br-missing"]])


class Deleted(BaseModel):
    name: str = CONTAINER
    deleted: Literal[True] = Field(description="always true", examples=[True])


class RemoveFailure(BaseModel):
    name: str = CONTAINER
    error: str = Field(description="why it could not be removed", examples=["LXD refused"])


class RemovedMany(BaseModel):
    """Also the result of a failed job: those removed and those that were not."""

    removed: list[str] = Field(description="containers removed", examples=[["ci-1"]])
    failed: list[str] = Field(description="containers that could not be removed", examples=[["ci-2"]])
    errors: list[RemoveFailure] | None = Field(None, description="why each failed (absent after a restart of the "
                                               "gateway)")


class Published(BaseModel):
    fingerprint: str | None = Field(description="the new image", examples=["8e1c4b8e3d2a"])
    aliases: list[str] = Field(description="its aliases", examples=[["web-golden"]])
    size: int | None = Field(None, description="bytes (absent after a restart of the gateway)", examples=[123456])
    public: bool | None = Field(None, description="served to untrusted clients (absent after a restart of the "
                                "gateway)", examples=[False])


class ExecResult(BaseModel):
    """The command's exit code and its captured output (also the result of a job that failed with
    `exec-timeout`, its exit code then null)."""

    exit_code: int | None = Field(description="null when the command was killed", examples=[0])
    stdout: str | None = Field(None, description="captured standard output (only for the token that started the "
                               "job and admin tokens, on `GET /v1/jobs/{id}`)", examples=["Linux web1 6.8.0\n"])
    stderr: str | None = Field(None, description="captured standard error (as `stdout`)", examples=[""])
    truncated: bool | None = Field(None, description="output was cut at `max_output_bytes` or the gateway's limit",
                                   examples=[False])
    output_omitted: bool | None = Field(None, description="true when `stdout` and `stderr` are left out",
                                        examples=[True])


class SnapshotTaken(BaseModel):
    container: str = CONTAINER
    name: str = Field(description="the snapshot", examples=["before-upgrade"])
    stateful: bool | None = Field(None, description="with the running state", examples=[False])


class SnapshotRestored(BaseModel):
    container: str = CONTAINER
    restored: str = Field(description="the snapshot", examples=["before-upgrade"])


class SnapshotDeleted(BaseModel):
    container: str = CONTAINER
    deleted: str = Field(description="the snapshot", examples=["before-upgrade"])
