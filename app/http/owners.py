"""Which token started which LXD operation: the exec sessions and exec jobs the gateway starts.

The events stream shows an exec operation's command line and environment only to the token that started it (and
to admins); this is where that is looked up. The caller is known wherever a request is served: authentication
sets it for the request (`acting_for`), and a job's task, created while its request is served, inherits it.
Only the newest `KEEP` operations are remembered.
"""

from __future__ import annotations

from collections import OrderedDict
from contextvars import ContextVar

KEEP = 4096

_caller: ContextVar[str | None] = ContextVar("caller_token_id", default=None)


def acting_for(token_id: str | None) -> None:
    """The request being served acts for this token (its jobs too)."""
    _caller.set(token_id)


def current_caller() -> str | None:
    return _caller.get()


class OperationOwners:
    """LXD operation (remote, id) → the id of the token that started it, newest `KEEP` only."""

    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self._owners: OrderedDict[tuple[str, str], str] = OrderedDict()

    def record(self, remote: str, op_id: str, token_id: str | None = None) -> None:
        """Remember that `token_id` (by default the current caller) started operation `op_id` on `remote`."""
        owner = token_id if token_id is not None else current_caller()
        if not op_id or owner is None:
            return
        self._owners[(remote, op_id)] = owner
        self._owners.move_to_end((remote, op_id))
        while len(self._owners) > self.keep:
            self._owners.popitem(last=False)

    def owner(self, remote: str, op_id: str) -> str | None:
        return self._owners.get((remote, op_id))
