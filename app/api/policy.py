"""The policy guard at the HTTP edge: a 403 problem naming the refused key, before anything reaches LXD.

Deny by default; what a caller may do beyond that is the union of the operator's `LXDGW_POLICY_ALLOW` and the
calling token's own `allow` list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from starlette.requests import HTTPConnection

from app.api.auth import Principal
from app.api.problems import ProblemError
from app.core.policy import Policy, PolicyViolation


def policy_for(conn: HTTPConnection, principal: Principal) -> Policy:
    return Policy.of([*conn.app.state.settings.policy_allow, *principal.allow])


def _refuse(v: PolicyViolation) -> ProblemError:
    return ProblemError(403, v.message, slug="policy", title="Forbidden by policy", key=v.key, rule=v.rule)


def enforce(conn: HTTPConnection, principal: Principal, *, config: Mapping[str, object] | None = None,
            devices: Mapping[str, Mapping[str, object] | None] | None = None) -> None:
    """Container create/patch/device add and profile create/update/patch call this with what they would send."""
    try:
        policy_for(conn, principal).check_instance(config, devices)
    except PolicyViolation as v:
        raise _refuse(v) from None


def enforce_image_server(conn: HTTPConnection, principal: Principal, server: str | None,
                         configured: Iterable[str]) -> None:
    try:
        policy_for(conn, principal).check_image_server(server, configured)
    except PolicyViolation as v:
        raise _refuse(v) from None
