"""What the mirror keeps of one kind of LXD object, told by the resource package that serves it.

The mirror itself knows no resource: `app/containers/mirror.py` says how instances are listed, read one by one and
shaped into what the API shows; `app/images/mirror.py` and `app/profiles/mirror.py` do the same for theirs.
`app/main.py` hands the kinds to the `Mirror`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from app.lxd.client import Client

Shaped = dict[str, Any]
"""One object as the API shows it (before what a caller may not see is redacted)."""


@dataclass(frozen=True)
class MirrorKind:
    """One collection of a project, e.g. `instances`: how to load it and what of it to keep."""

    name: str
    """The kind's name (`instances`, `images`, `image-aliases`, `profiles`)."""
    load_all: Callable[[Client, str], Awaitable[list[tuple[str, Shaped]]]]
    """Every object of the client's project on the remote named, keyed, with one listing (recursion)."""
    load_one: Callable[[Client, str, str], Awaitable[Shaped | None]]
    """One object (client, remote, key) read afresh; None when it no longer exists."""
    load_definition: Callable[[Client, str, str], Awaitable[Shaped | None]] | None = None
    """One object (client, remote, key) read without what only a costlier read gives (an instance's `recursion=0`
    answers at once; its state can take LXD tens of milliseconds right after a start). Events are followed with it;
    `keep_state` completes it when it is applied."""
    keep_state: Callable[[Shaped, Shaped | None], tuple[Shaped, bool]] | None = None
    """Given a `load_definition` answer and the object as the model has it when the answer is applied: the answer
    with what it lacks taken from the model where that still holds, and whether it is complete (when not, a full
    read follows at once in the background; readers do not wait for it)."""
    whole: bool = False
    """Any event of the collection reloads all of it (images: an alias event changes the image it names)."""
    awaits_address: Callable[[Shaped], bool] | None = None
    """Whether an object just started may still get addresses, which LXD reports without an event: it is then
    read again on a short interval for `ADDRESS_WINDOW` seconds."""
    running: Callable[[Shaped], bool] | None = None
    """Whether the object runs (the address window opens when it starts running)."""
    collection: str = ""
    """The collection in LXD's URLs and events whose events concern this kind (default: `name`)."""
    shared: bool = False
    """A project may share the collection with `default` (LXD's `features.images`/`features.profiles` off): an
    event in any project has it read again in every mirrored project."""
    follows: tuple[str, ...] = ()
    """Collections whose events have this kind read again in full (profiles: their `used_by` changes as instances
    come and go, and LXD sends no profile event for that)."""
    per_member: bool = False
    """What LXD shows of an object depends on the cluster member holding it being reachable (instances: status
    `Error` while LXD cannot reach it), and LXD sends no event when a member goes offline or comes back: the
    collection is reloaded in full when a member's status changes."""

    @property
    def events_of(self) -> str:
        return self.collection or self.name
