"""Which containers a listing keeps: by name prefix, by status, and only the alive ones (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from app.containers.spec import status_of
from app.lxd.models import ALIVE_STATUSES

M = TypeVar("M", bound=Mapping[str, Any])


def select(instances: Iterable[M], prefix: str = "", statuses: Sequence[str] = (), alive: bool = False) -> list[M]:
    """Instances whose name starts with `prefix` and, when `statuses` are given, whose status is one of them;
    `alive` keeps only Starting, Started, Running, Stopping and Stopped (within `statuses` when both are given).

    The given order is kept; status names match exactly ("Running", "Stopped", ...); the live `state` of an
    instance read with its state decides over the instance's own status."""
    wanted = set(statuses)
    if alive:
        wanted = wanted & set(ALIVE_STATUSES) if wanted else set(ALIVE_STATUSES)
    return [i for i in instances
            if (i.get("name") or "").startswith(prefix)
            and (not (statuses or alive) or status_of(i.get("state") or i) in wanted)]
