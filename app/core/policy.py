"""The policy guard: what a caller may ask LXD to do that would give away the host.

Deny by default. Each dangerous thing has a rule name; a token (or the operator's default policy) lists the rule
names it allows. The same checks guard container create/patch/device add and profile create/update/patch.

| rule | what it covers |
|---|---|
| `security.privileged` | config `security.privileged` true |
| `security.nesting` | config `security.nesting` true |
| `raw` | any `raw.*` config key (`raw.lxc`, `raw.idmap`, `raw.apparmor`, `raw.seccomp`, ...) |
| `linux.kernel_modules` | config `linux.kernel_modules` set |
| `disk.host-source` | a disk device with a host `source` (any disk other than a pool volume) |
| `device.unix-char`, `device.unix-block`, `device.usb`, `device.gpu`, `device.pci` | those device types |
| `image.any-source` | an image copy from a server that is not a configured image source |
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

RULES = (
    "security.privileged", "security.nesting", "raw", "linux.kernel_modules", "disk.host-source",
    "device.unix-char", "device.unix-block", "device.usb", "device.gpu", "device.pci", "image.any-source",
)
GUARDED_DEVICE_TYPES = ("unix-char", "unix-block", "usb", "gpu", "pci")
TRUE = ("true", "1", "yes", "on")


class PolicyViolation(Exception):
    """A request asks for something the policy forbids; `key` names the config key, device or source."""

    def __init__(self, rule: str, key: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.key = key
        self.message = message


@dataclass(frozen=True)
class Policy:
    allow: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(cls, allowed: Iterable[str] | None) -> Policy:
        return cls(frozenset(allowed or ()))

    def allows(self, rule: str) -> bool:
        return rule in self.allow

    def _deny(self, rule: str, key: str, message: str) -> None:
        if not self.allows(rule):
            raise PolicyViolation(rule, key, f"{message} (policy rule '{rule}' is not allowed for this token)")

    def check_config(self, config: Mapping[str, object] | None) -> None:
        for key, value in (config or {}).items():
            if value is None:  # a merge patch removing the key is always fine
                continue
            text = str(value).strip().lower()
            if key == "security.privileged" and text in TRUE:
                self._deny("security.privileged", key, "privileged containers are refused")
            elif key == "security.nesting" and text in TRUE:
                self._deny("security.nesting", key, "nesting is refused")
            elif key.startswith("raw."):
                self._deny("raw", key, f"raw LXC settings ('{key}') are refused")
            elif key == "linux.kernel_modules" and text:
                self._deny("linux.kernel_modules", key, "loading kernel modules is refused")

    def check_devices(self, devices: Mapping[str, Mapping[str, object] | None] | None) -> None:
        for name, device in (devices or {}).items():
            if not device:
                continue
            dtype = str(device.get("type", ""))
            if dtype == "disk" and device.get("source") and not device.get("pool"):
                self._deny("disk.host-source", f"devices.{name}.source",
                           f"disk device '{name}' mounts host path '{device['source']}'")
            elif dtype in GUARDED_DEVICE_TYPES:
                self._deny(f"device.{dtype}", f"devices.{name}", f"{dtype} device '{name}' is refused")

    def check_instance(self, config: Mapping[str, object] | None,
                       devices: Mapping[str, Mapping[str, object] | None] | None) -> None:
        """Containers and profiles alike: their config and devices."""
        self.check_config(config)
        self.check_devices(devices)

    def check_image_server(self, server: str | None, configured: Iterable[str]) -> None:
        if not server:
            return
        norm = server.rstrip("/")
        if norm not in {c.rstrip("/") for c in configured}:
            self._deny("image.any-source", "source.server",
                       f"image server '{server}' is not a configured image source")
