"""What the read model keeps of profiles: each as the API shows it (`Profile`). A profile's `used_by` changes as
instances come and go, and LXD sends no profile event for that: any instance event reads them again (the listing
is small). Projects may share profiles with `default` (`features.profiles` off)."""

from __future__ import annotations

from app.lxd.client import Client
from app.lxd.errors import NotFound
from app.mirror import MirrorKind, Shaped
from app.profiles.schemas import ProfileOut

PROFILES = "profiles"


async def _all(client: Client, remote: str) -> list[tuple[str, Shaped]]:
    return [(p.name, ProfileOut.of(p).model_dump(mode="json")) for p in await client.profiles.list()]


async def _one(client: Client, remote: str, name: str) -> Shaped | None:
    try:
        return ProfileOut.of(await client.profiles.get(name)).model_dump(mode="json")
    except NotFound:
        return None


USING_JOBS = ("container.create", "container.copy", "container.delete", "container.rename",
              "container.remove-many")


def touched_by(job_kind: str) -> list[tuple[str, list[str]]]:
    """What a job of `job_kind` may have changed: jobs that make, rename or remove containers change the
    `used_by` of the profiles those use."""
    return [(PROFILES, [])] if job_kind in USING_JOBS else []


PROFILE_KIND = MirrorKind(name=PROFILES, load_all=_all, load_one=_one, shared=True, follows=("instances",))
