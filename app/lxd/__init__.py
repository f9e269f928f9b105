"""An asyncio client for the LXD (and Incus) REST API, usable on its own: `from app.lxd import Client`."""

from app.lxd.client import Client
from app.lxd.errors import (
    BadRequest,
    Conflict,
    ExecTimeout,
    ExtensionMissing,
    Forbidden,
    LXDError,
    LXDTimeout,
    LXDUnavailable,
    NotCancellable,
    NotFound,
    OperationCancelled,
    OperationConflict,
    OperationFailed,
    OperationVanished,
    PreconditionFailed,
)
from app.lxd.exec import ConsoleSession, ExecProcess, ExecResult
from app.lxd.models import Event, FileInfo, Instance, InstanceState, OperationState, Progress, ServerInfo, Snapshot
from app.lxd.operations import Operation

__all__ = [
    "BadRequest",
    "Client",
    "Conflict",
    "ConsoleSession",
    "Event",
    "ExecProcess",
    "ExecResult",
    "ExecTimeout",
    "ExtensionMissing",
    "FileInfo",
    "Forbidden",
    "Instance",
    "InstanceState",
    "LXDError",
    "LXDTimeout",
    "LXDUnavailable",
    "NotCancellable",
    "NotFound",
    "Operation",
    "OperationCancelled",
    "OperationConflict",
    "OperationFailed",
    "OperationState",
    "OperationVanished",
    "PreconditionFailed",
    "Progress",
    "ServerInfo",
    "Snapshot",
]
