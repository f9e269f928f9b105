from __future__ import annotations

import pytest

from app.core.policy import Policy, PolicyViolation

DENY = Policy()


@pytest.mark.parametrize(("config", "key", "rule"), [
    ({"security.privileged": "true"}, "security.privileged", "security.privileged"),
    ({"security.nesting": "1"}, "security.nesting", "security.nesting"),
    ({"raw.lxc": "lxc.apparmor.profile=unconfined"}, "raw.lxc", "raw"),
    ({"raw.idmap": "both 0 0"}, "raw.idmap", "raw"),
    ({"linux.kernel_modules": "br_netfilter"}, "linux.kernel_modules", "linux.kernel_modules"),
])
def test_dangerous_config_refused_naming_the_key(config: dict[str, str], key: str, rule: str) -> None:
    with pytest.raises(PolicyViolation) as exc:
        DENY.check_config(config)
    assert exc.value.key == key and exc.value.rule == rule and key in str(exc.value)
    Policy.of([rule]).check_config(config)  # the token's policy can allow it


def test_harmless_config_passes() -> None:
    DENY.check_config({"security.privileged": "false", "limits.cpu": "2", "user.x": "y", "raw.lxc": None})


@pytest.mark.parametrize(("device", "rule"), [
    ({"type": "disk", "source": "/etc", "path": "/mnt"}, "disk.host-source"),
    ({"type": "unix-char", "path": "/dev/kvm"}, "device.unix-char"),
    ({"type": "unix-block", "path": "/dev/sda"}, "device.unix-block"),
    ({"type": "usb"}, "device.usb"),
    ({"type": "gpu"}, "device.gpu"),
    ({"type": "pci", "address": "0000:00:1f.0"}, "device.pci"),
])
def test_dangerous_devices_refused(device: dict[str, str], rule: str) -> None:
    with pytest.raises(PolicyViolation) as exc:
        DENY.check_devices({"d": device})
    assert exc.value.rule == rule and exc.value.key.startswith("devices.d")
    Policy.of([rule]).check_devices({"d": device})


def test_pool_disks_and_nics_pass() -> None:
    DENY.check_instance({}, {"root": {"type": "disk", "path": "/", "pool": "default"},
                             "data": {"type": "disk", "path": "/data", "pool": "default", "source": "vol1"},
                             "eth0": {"type": "nic", "nictype": "bridged", "parent": "br0"}, "gone": None})


def test_image_server_must_be_configured() -> None:
    sources = ["https://images.example/releases"]
    DENY.check_image_server("https://images.example/releases/", sources)
    DENY.check_image_server(None, sources)
    with pytest.raises(PolicyViolation) as exc:
        DENY.check_image_server("http://169.254.169.254/", sources)
    assert exc.value.key == "source.server"
    Policy.of(["image.any-source"]).check_image_server("http://elsewhere", sources)
