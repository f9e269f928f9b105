"""The policy guard: an allow-list of what a caller may ask LXD to run, so that no token reaches the host.

What a container (or a profile) may carry without any rule:

- config keys under `limits.`, `user.`, `environment.`, `boot.`, `snapshots.`, `cloud-init.` and `image.`, and the
  `security.*` (key, value) pairs of `SAFE_SECURITY` (each restates LXD's confined default or confines further);
- `disk` devices on a storage pool (`pool` set, `source` empty or a volume name) with only `DISK_KEYS`;
- `nic` devices whose `network` is a network LXD manages (of a type in `NIC_NETWORK_TYPES`), or, for `bridged` and
  `macvlan` NICs, whose `parent` is a bridge LXD manages, with only `NIC_KEYS`;
- `none` devices (they only hide a profile's device).

Everything else needs a named rule, from the calling token's `allow` or the operator's `LXDGW_POLICY_ALLOW`:

| rule | what it allows |
|---|---|
| `<config key>` (e.g. `security.privileged`, `security.syscalls.intercept.mknod`) | that key, any value |
| `<prefix>.*` (e.g. `security.syscalls.*`, `raw.*`, `linux.sysctl.*`) | every key under that prefix |
| `raw` | every `raw.*` key (same as `raw.*`) |
| `device.<type>` (`device.proxy`, `device.gpu`, `device.nic`, `device.disk`, ...) | that device type, any keys |
| `disk.host-source` | a disk device mounting a host path (or with no pool) |
| `nic.unmanaged` | a NIC on a network LXD does not manage (a `parent` must be a bridge LXD manages) |
| `nic.<nictype>` (`nic.physical`, `nic.routed`, `nic.p2p`, `nic.ipvlan`, `nic.sriov`) | a NIC of that nictype |
| `profile:<name>`, `profile:<project>/<name>` | trust that profile: what it brings passes unchecked |
| `image.any-source` | an image copy from a server that is not a configured image source |
| `volume.<key>`, `volume.<prefix>.*`, `volume.*` | a custom storage volume config key outside `SAFE_VOLUME_KEYS` |

Checks run on the EXPANDED definition: the profiles' config and devices with the instance's own laid over them
(last writer wins, devices replaced whole, as LXD does). What a trusted profile brings passes; `volatile.*` keys
pass only where LXD wrote them (an existing instance or snapshot), never in a request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from app.http.errors import ProblemError

TRUE = ("true", "1", "yes", "on")  # LXD's shared.IsTrue / IsFalse, compared lower-cased and unstripped
FALSE = ("false", "0", "no", "off")

# Config namespaces a write token may use freely.
SAFE_CONFIG_PREFIXES = ("limits.", "user.", "environment.", "boot.", "snapshots.", "cloud-init.", "image.")
# `security.*` (key -> the values allowed without a rule). Each value is LXD's confined default or confines more.
SAFE_SECURITY: dict[str, tuple[str, ...]] = {
    "security.privileged": FALSE,                 # the container stays unprivileged (uid-shifted)
    "security.nesting": FALSE,                    # no nested container managers
    "security.protection.delete": TRUE + FALSE,   # only guards the container itself against deletion
    "security.protection.shift": TRUE + FALSE,    # only forbids re-shifting its own root filesystem
    "security.idmap.isolated": TRUE + FALSE,      # true: a private uid/gid range (more isolation); false: default
    "security.syscalls.deny_default": TRUE,       # keeps LXD's default seccomp deny list
    "security.syscalls.deny_compat": TRUE + FALSE,  # true also blocks 32-bit compat syscalls; false: default
    "security.devlxd": TRUE + FALSE,              # the /dev/lxd guest API only describes the container itself
    "security.devlxd.images": FALSE,              # default; true serves the host's image store to the container
}

# LXD 5.0 instance config keys: what a rule naming one key (or a prefix of keys) may name.
KNOWN_CONFIG_KEYS = frozenset({
    "agent.nic_config",
    "boot.autostart", "boot.autostart.delay", "boot.autostart.priority", "boot.host_shutdown_timeout",
    "boot.stop.priority",
    "cloud-init.network-config", "cloud-init.user-data", "cloud-init.vendor-data",
    "cluster.evacuate",
    "limits.cpu", "limits.cpu.allowance", "limits.cpu.priority", "limits.disk.priority", "limits.hugepages.64KB",
    "limits.hugepages.1MB", "limits.hugepages.2MB", "limits.hugepages.1GB", "limits.memory",
    "limits.memory.enforce", "limits.memory.hugepages", "limits.memory.swap", "limits.memory.swap.priority",
    "limits.network.priority", "limits.processes",
    "linux.kernel_modules",
    "migration.incremental.memory", "migration.incremental.memory.goal",
    "migration.incremental.memory.iterations", "migration.stateful",
    "nvidia.driver.capabilities", "nvidia.require.cuda", "nvidia.require.driver", "nvidia.runtime",
    "raw.apparmor", "raw.idmap", "raw.lxc", "raw.qemu", "raw.qemu.conf", "raw.seccomp",
    "security.agent.metrics", "security.csm", "security.devlxd", "security.devlxd.images", "security.idmap.base",
    "security.idmap.isolated", "security.idmap.size", "security.nesting", "security.privileged",
    "security.protection.delete", "security.protection.shift", "security.secureboot", "security.syscalls.allow",
    "security.syscalls.deny", "security.syscalls.deny_compat", "security.syscalls.deny_default",
    "security.syscalls.intercept.bpf", "security.syscalls.intercept.bpf.devices",
    "security.syscalls.intercept.mknod", "security.syscalls.intercept.mount",
    "security.syscalls.intercept.mount.allowed", "security.syscalls.intercept.mount.fuse",
    "security.syscalls.intercept.mount.shift", "security.syscalls.intercept.sched_setscheduler",
    "security.syscalls.intercept.setxattr", "security.syscalls.intercept.sysinfo",
    "security.syscalls.blacklist", "security.syscalls.blacklist_compat", "security.syscalls.blacklist_default",
    "security.syscalls.whitelist",
    "snapshots.expiry", "snapshots.pattern", "snapshots.schedule", "snapshots.schedule.stopped",
})
# Namespaces whose keys are free-form: any well-formed key under them may be named.
FREE_CONFIG_NAMESPACES = ("user.", "environment.", "image.", "limits.kernel.", "linux.sysctl.")

DEVICE_TYPES = ("disk", "nic", "none", "proxy", "gpu", "usb", "pci", "unix-char", "unix-block", "unix-hotplug",
                "infiniband", "tpm")
# Keys a pool disk may carry without a rule (no host path, mount options, propagation or idmap shifting).
DISK_KEYS = frozenset({"type", "path", "pool", "source", "size", "size.state", "readonly", "required",
                       "limits.read", "limits.write", "limits.max", "boot.priority", "io.cache", "io.bus"})
# Keys a NIC on a managed network may carry without a rule (no host routes, VLANs, host-side names, MAAS).
NIC_KEYS = frozenset({"type", "nictype", "network", "parent", "name", "hwaddr", "mtu", "ipv4.address",
                      "ipv6.address", "limits.ingress", "limits.egress", "limits.max", "boot.priority",
                      "security.mac_filtering", "security.ipv4_filtering", "security.ipv6_filtering",
                      "security.port_isolation", "queue.tx.length"})
MANAGED_PARENT_NICTYPES = ("bridged", "macvlan")  # a `parent` of these is an interface on that network
# Managed network types a NIC may join with `network` (a managed `physical` network hands over a host interface).
NIC_NETWORK_TYPES = ("bridge", "macvlan", "sriov", "ovn")
Networks = Mapping[str, str]  # the networks LXD manages: name -> type
OTHER_NICTYPES = ("physical", "routed", "p2p", "ipvlan", "sriov")

# Custom storage volume config a write token may set without a rule: its size, snapshot schedule, free-form user keys
# and the filesystem of a block volume. Not `security.shifted`/`security.unmapped` (idmap games on shared data),
# mount options or driver internals.
SAFE_VOLUME_KEYS = ("size", "block.filesystem")
SAFE_VOLUME_PREFIXES = ("snapshots.", "user.")

RULES = (
    "security.privileged", "security.nesting", "raw", "linux.kernel_modules", "disk.host-source",
    "nic.unmanaged", *(f"nic.{t}" for t in OTHER_NICTYPES),
    *(f"device.{t}" for t in DEVICE_TYPES if t != "none"), "image.any-source",
)
RULE_FORMS = ("<config key>", "<config key prefix>.*", "profile:<name>", "profile:<project>/<name>",
              "volume.<key>", "volume.<prefix>.*")
_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,254}$")
_PROFILE_RULE = re.compile(r"^profile:(?:([A-Za-z0-9][A-Za-z0-9_.\-]{0,62})/)?([A-Za-z0-9][A-Za-z0-9_.\-]{0,62})$")


def _config_rule(rule: str) -> bool:
    """`rule` names a known config key, a key under a free namespace, or a known prefix ending in `.*`."""
    if rule.endswith(".*"):
        prefix = rule[:-1]  # keeps the trailing dot
        return bool(_KEY.match(prefix[:-1])) and (
            any(k.startswith(prefix) for k in KNOWN_CONFIG_KEYS)
            or any(prefix.startswith(ns) or ns.startswith(prefix) for ns in FREE_CONFIG_NAMESPACES))
    return bool(_KEY.match(rule)) and (rule in KNOWN_CONFIG_KEYS
                                       or any(rule.startswith(ns) and len(rule) > len(ns)
                                              for ns in FREE_CONFIG_NAMESPACES))


def _volume_rule(rule: str) -> bool:
    """`volume.*`, or `volume.` followed by a well-formed key or key prefix ending in `.*`."""
    if not rule.startswith("volume."):
        return False
    rest = rule[len("volume."):]
    return rest == "*" or bool(_KEY.match(rest[:-2] if rest.endswith(".*") else rest))


def is_rule(rule: str) -> bool:
    """Whether `rule` is a policy rule name (a typo is not)."""
    return rule in RULES or bool(_PROFILE_RULE.match(rule)) or _config_rule(rule) or _volume_rule(rule)


def unknown_rules(rules: Iterable[str]) -> list[str]:
    return sorted({r for r in rules if not is_rule(r)})


def describe_rules() -> str:
    return ", ".join(f"`{r}`" for r in (*RULES, *RULE_FORMS))


def _lower(value: object) -> str:
    return str(value).lower()


class PolicyViolation(ProblemError):
    """A request asks for something the policy forbids (403 `policy`); `key` names the config key or device, `rule`
    the rule that would allow it."""

    def __init__(self, rule: str, key: str, message: str) -> None:
        super().__init__(403, message, slug="policy", title="Forbidden by policy", key=key, rule=rule)
        self.rule = rule
        self.key = key
        self.message = message


@dataclass(frozen=True)
class Layer:
    """One source of config and devices in an expanded definition, in LXD's order (profiles, then the instance).

    `profile`/`project` name a profile layer (trusted by `profile:` rules); `lxd_written` marks state LXD holds
    already (an instance or snapshot), where `volatile.*` keys are LXD's own."""

    config: Mapping[str, object | None] = field(default_factory=dict)
    devices: Mapping[str, Mapping[str, object] | None] = field(default_factory=dict)
    profile: str | None = None
    project: str = "default"
    lxd_written: bool = False

    @property
    def where(self) -> str:
        return f"profile {self.profile!r}" if self.profile else "the container"


@dataclass(frozen=True)
class Policy:
    allow: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(cls, allowed: Iterable[str] | None) -> Policy:
        return cls(frozenset(allowed or ()))

    def allows(self, rule: str) -> bool:
        return rule in self.allow

    def trusts(self, layer: Layer) -> bool:
        return layer.profile is not None and (self.allows(f"profile:{layer.profile}")
                                              or self.allows(f"profile:{layer.project}/{layer.profile}"))

    def _deny(self, rules: tuple[str, ...], key: str, message: str) -> None:
        """Refuse unless one of `rules` (the narrowest first) is allowed; the problem names the narrowest."""
        if not any(self.allows(r) for r in rules):
            raise PolicyViolation(rules[0], key, f"{message} (needs the policy rule '{rules[0]}'"
                                  + (f" or '{rules[-1]}'" if len(rules) > 1 else "") + ")")

    # -------------------------------------------------------------------------------------------- config

    def _config_rules(self, key: str) -> tuple[str, ...]:
        """The rules that allow `key`, the exact key first, then each prefix from the narrowest."""
        parts = key.split(".")
        rules = [key, *(".".join(parts[:i]) + ".*" for i in range(len(parts) - 1, 0, -1))]
        if key.startswith("raw."):
            rules.append("raw")
        return tuple(rules)

    def check_config_key(self, key: str, value: object, *, lxd_written: bool = False, where: str = "") -> None:
        if key.startswith(SAFE_CONFIG_PREFIXES):
            return
        if key.startswith("volatile."):
            if lxd_written:
                return
            raise PolicyViolation("volatile", key, f"config {key} is written by LXD only; no rule allows setting it")
        if key in SAFE_SECURITY and _lower(value) in SAFE_SECURITY[key]:
            return
        suffix = f" in {where}" if where else ""
        self._deny(self._config_rules(key), key, f"config {key}={str(value)[:64]!r}{suffix} is not allowed")

    def check_volume_config(self, config: Mapping[str, object | None] | None) -> None:
        """A custom storage volume's config: `SAFE_VOLUME_KEYS`/`SAFE_VOLUME_PREFIXES`, else a `volume.` rule."""
        for key, value in (config or {}).items():
            if value is None or key in SAFE_VOLUME_KEYS or key.startswith(SAFE_VOLUME_PREFIXES):
                continue
            parts = key.split(".")
            rules = (f"volume.{key}", *(f"volume.{'.'.join(parts[:i])}.*" for i in range(len(parts) - 1, 0, -1)),
                     "volume.*")
            self._deny(rules, key, f"volume config {key}={str(value)[:64]!r} is not allowed")

    def check_config(self, config: Mapping[str, object | None] | None) -> None:
        """A request's own config (a merge patch's `null` removes a key: always fine)."""
        for key, value in (config or {}).items():
            if value is not None:
                self.check_config_key(key, value)

    # -------------------------------------------------------------------------------------------- devices

    def check_device(self, name: str, device: Mapping[str, object], managed: Networks | None,
                     *, where: str = "") -> None:
        """`managed`: the networks LXD manages (name -> type); None when not known yet (the NIC's network is then
        not checked: call again with them)."""
        dtype = str(device.get("type", ""))
        at = f"devices.{name}"
        suffix = f" in {where}" if where else ""
        if dtype == "none":
            return
        if not dtype:
            raise PolicyViolation("device.<type>", f"{at}.type", f"device '{name}'{suffix} has no type")
        if dtype == "disk":
            source, pool = str(device.get("source") or ""), str(device.get("pool") or "")
            if not pool or source.startswith("/") or ":" in source:
                self._deny(("disk.host-source", "device.disk"), f"{at}.source",
                           f"disk device '{name}'{suffix} mounts host path '{source}'" if source else
                           f"disk device '{name}'{suffix} is not on a storage pool")
                return
            self._check_keys(name, device, DISK_KEYS, "device.disk", suffix)
            return
        if dtype == "nic":
            self._check_nic(name, device, managed, suffix)
            return
        self._deny((f"device.{dtype}",), at, f"{dtype or 'untyped'} device '{name}'{suffix} is not allowed")

    def _check_keys(self, name: str, device: Mapping[str, object], safe: frozenset[str], rule: str,
                    suffix: str) -> None:
        for key in sorted(device):
            if key not in safe:
                self._deny((rule,), f"devices.{name}.{key}",
                           f"device '{name}'{suffix} sets '{key}', which is not allowed")

    def _check_nic(self, name: str, device: Mapping[str, object], managed: Networks | None,
                   suffix: str) -> None:
        at = f"devices.{name}"
        nictype = str(device.get("nictype") or "")
        network, parent = str(device.get("network") or ""), str(device.get("parent") or "")
        if self.allows("device.nic"):
            return
        if nictype and nictype not in MANAGED_PARENT_NICTYPES:
            self._deny((f"nic.{nictype}", "device.nic"), f"{at}.nictype",
                       f"NIC '{name}'{suffix} of nictype '{nictype}' is not allowed")
        elif not network and not parent:
            self._deny(("nic.unmanaged", "device.nic"), at, f"NIC '{name}'{suffix} names no network or parent")
        elif managed is not None:
            if network and network not in managed:
                self._deny(("nic.unmanaged", "device.nic"), f"{at}.network",
                           f"NIC '{name}'{suffix} is on '{network}', which is not a network LXD manages")
            elif network and managed[network] not in NIC_NETWORK_TYPES:
                kind = managed[network]
                self._deny((f"nic.{kind}" if kind in OTHER_NICTYPES else "device.nic", "device.nic"),
                           f"{at}.network", f"NIC '{name}'{suffix} joins the {kind} network '{network}'")
            if parent and managed.get(parent) != "bridge":
                self._deny(("nic.unmanaged", "device.nic"), f"{at}.parent",
                           f"NIC '{name}'{suffix} is on '{parent}', which is not a bridge LXD manages")
        self._check_keys(name, device, NIC_KEYS, "device.nic", suffix)

    def check_devices(self, devices: Mapping[str, Mapping[str, object] | None] | None,
                      managed: Networks | None = None) -> None:
        for name, device in (devices or {}).items():
            if device:
                self.check_device(name, device, managed)

    # -------------------------------------------------------------------------------------------- whole

    def check_instance(self, config: Mapping[str, object | None] | None,
                       devices: Mapping[str, Mapping[str, object] | None] | None,
                       managed: Networks | None = None) -> None:
        """A request's own config and devices (a container's or a profile's), before anything is expanded."""
        self.check_config(config)
        self.check_devices(devices, managed)

    def check_expanded(self, layers: Iterable[Layer], managed: Networks) -> None:
        """The definition LXD would run: `layers` merged in order (last writer wins; a device is replaced whole).
        What a trusted profile brings passes."""
        config: dict[str, tuple[object, Layer]] = {}
        devices: dict[str, tuple[Mapping[str, object], Layer]] = {}
        for layer in layers:
            for key, value in layer.config.items():
                if value is None:
                    config.pop(key, None)
                else:
                    config[key] = (value, layer)
            for name, device in layer.devices.items():
                if device is None:
                    devices.pop(name, None)
                else:
                    devices[name] = (device, layer)
        for key, (value, layer) in sorted(config.items()):
            if not self.trusts(layer):
                self.check_config_key(key, value, lxd_written=layer.lxd_written,
                                      where=layer.where if layer.profile else "")
        for name, (device, layer) in sorted(devices.items()):
            if not self.trusts(layer):
                self.check_device(name, device, managed, where=layer.where if layer.profile else "")

    def check_image_server(self, server: str | None, configured: Iterable[str]) -> None:
        if not server:
            return
        norm = server.rstrip("/")
        if norm not in {c.rstrip("/") for c in configured}:
            self._deny(("image.any-source",), "source.server",
                       f"image server '{server}' is not a configured image source")
