"""Who sees which job, and how much of it.

A caller sees a job when the job's remote and project are within the caller's limits; a job outside them does not
exist for it (404). A job without a remote (or project) is seen only by callers without a remote (or project)
limit. A job's `params` and output (`stdout`/`stderr` of its result, `output` messages) belong to the token that
started it (bound by the token's id, never its name) and to admin tokens; everyone else sees the job without them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.jobs.models import Job, omit_output


def _within(value: str | None, allowed: tuple[str, ...] | None) -> bool:
    return allowed is None or (value is not None and value in allowed)


@dataclass(frozen=True)
class Viewer:
    """A caller as the jobs subsystem knows it: its token id, whether it is an admin, and its limits."""

    token_id: str
    admin: bool = False
    remotes: tuple[str, ...] | None = None
    """Remotes the caller may use; None means all."""
    projects: tuple[str, ...] | None = None
    """Projects the caller may use; None means all."""
    hide: Callable[[Any], Any] | None = None
    """What of a job's result this caller may not see (e.g. secret config values for a read-only token), applied to
    every result it is shown."""

    def sees(self, remote: str | None, project: str | None) -> bool:
        """Whether a job on this remote and project exists for the caller."""
        return _within(remote, self.remotes) and _within(project, self.projects)

    def sees_job(self, job: Job) -> bool:
        return self.sees(job.remote, job.project)

    def owns(self, token_id: str | None) -> bool:
        """Whether the caller may see the params and output of a job started by `token_id`."""
        return self.admin or (token_id is not None and token_id == self.token_id)

    def render(self, job: Job, *, params: dict[str, Any] | None = None, listing: bool = False,
               had_output: bool = False) -> dict[str, Any]:
        """The job as this caller may see it. Listings never carry output or params; a single read carries them
        for the owner and admins only. `had_output`: the stored job has output that was not loaded."""
        body = job.model_dump(mode="json")
        full = self.owns(job.token_id) and not listing
        if not full:
            body["result"] = omit_output(body["result"], had_output=had_output)
        body["params"] = params if full else None
        if self.hide is not None:
            body["result"] = self.hide(body["result"])
        return body


EVERYONE = Viewer(token_id="", admin=True)
"""Sees every job in full (the gateway itself)."""
