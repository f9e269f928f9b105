"""What the LXD-backed services share: progress reporting and cancel checks.

Every service function takes an `app.lxd.Client` (already bound to the project it acts in) and plain values;
none reads settings or HTTP objects. Progress is reported through an async callable with the job runner's
signature, `await progress(stage, percent, message)`, so a job can pass its own `ctx.progress`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

ProgressFn = Callable[[str | None, int | None, str | None], Awaitable[None]]
"""`await progress(stage, percent, message)`; percent is None when unknown."""

CancelCheck = Callable[[], object]
"""Called between steps: a truthy answer (or an exception it raises) stops the work and rolls it back."""

PROVISIONING = "allocating"


async def report(progress: ProgressFn | None, stage: str | None, percent: int | None, message: str | None) -> None:
    """Hand one progress update to `progress` when there is one."""
    if progress is not None:
        await progress(stage, percent, message)
