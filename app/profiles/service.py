"""Profiles on an LXD server: whether one exists, and creating one with config."""

from __future__ import annotations

from collections.abc import Mapping

from app.lxd.client import Client


async def has_profile(client: Client, name: str) -> bool:
    """Whether a profile named exactly `name` (case-sensitive) exists."""
    return name in await client.profiles.names()


async def create_profile_with_config(client: Client, name: str, config: Mapping[str, str]) -> None:
    """Create profile `name` with `config` only (the request body is exactly `{name, config}`)."""
    await client.mutate("POST", "/1.0/profiles", json={"name": name, "config": dict(config)})
