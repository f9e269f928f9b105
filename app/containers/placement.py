"""Where a container may be placed in a cluster: `?target=` checked against the cluster's members before a job."""

from __future__ import annotations

from app.http.errors import ProblemError
from app.lxd.client import Client

OFFLINE = "offline"


async def check_target(client: Client, remote: str, target: str | None) -> None:
    """Refuse at once a `target` member the cluster does not have (404 `member-not-found`) or that LXD already
    reports offline (503 `member-unavailable`). A cluster group (`@name`) and a standalone remote are LXD's to
    judge."""
    if not target or target.startswith("@"):
        return
    members = await client.cluster.members()
    if not members:
        return
    member = next((m for m in members if m.server_name == target), None)
    if member is None:
        raise ProblemError(404, f"remote {remote!r} has no cluster member {target!r}", slug="member-not-found",
                           members=sorted(m.server_name for m in members))
    if member.status.lower() == OFFLINE:
        raise ProblemError(503, f"cluster member {target!r} of remote {remote!r} is {member.status}: "
                           f"{member.message}", slug="member-unavailable", member=target)

