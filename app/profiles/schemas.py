"""What the profile routes answer."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.http.auth import Principal
from app.http.redact import redact_secret_config
from app.http.schemas import used_by_field
from app.lxd.profiles import Profile
from app.store.tokens import Scope

CONFIG_EXAMPLE = {"limits.cpu": "2", "user.team": "web"}
DEVICES_EXAMPLE = {"eth0": {"type": "nic", "nictype": "bridged", "parent": "lxdbr0", "name": "eth0"}}


class ProfileOut(BaseModel):
    name: str = Field(description="the profile's name", examples=["web"])
    description: str = Field("", description="free text", examples=["web servers"])
    config: dict[str, str] = Field(default_factory=dict, description="LXD instance config keys",
                                   examples=[CONFIG_EXAMPLE])
    devices: dict[str, dict[str, str]] = Field(default_factory=dict, description="devices by name",
                                               examples=[DEVICES_EXAMPLE])
    used_by: list[str] = used_by_field("/1.0/instances/web1", "LXD URLs of the instances using it")
    project: str = Field("", description="the LXD project", examples=["default"])

    @classmethod
    def of(cls, p: Profile, reader: Principal | None = None) -> ProfileOut:
        """The profile; for a `reader` without `write`, secret config values are redacted."""
        config = p.config if reader is None or reader.has(Scope.write) else redact_secret_config(p.config)
        return cls(name=p.name, description=p.description, config=config, devices=p.devices, used_by=p.used_by,
                   project=p.project)
