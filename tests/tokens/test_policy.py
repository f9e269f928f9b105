"""The allow-list itself: what passes without a rule, what each rule allows, how an expanded definition is judged."""

from __future__ import annotations

import pytest

from app.tokens.policy import Layer, Policy, PolicyViolation, is_rule, unknown_rules

DENY = Policy()
MANAGED = {"lxdbr0": "bridge", "uplink": "physical", "lan": "macvlan"}


@pytest.mark.parametrize(("config", "key"), [
    ({"security.privileged": "true"}, "security.privileged"),
    ({"security.privileged": "TRUE"}, "security.privileged"),
    ({"security.privileged": "yes"}, "security.privileged"),
    ({"security.nesting": "1"}, "security.nesting"),
    ({"raw.lxc": "lxc.apparmor.profile=unconfined"}, "raw.lxc"),
    ({"raw.idmap": "both 0 0"}, "raw.idmap"),
    ({"linux.kernel_modules": "br_netfilter"}, "linux.kernel_modules"),
    ({"security.syscalls.intercept.mount": "true"}, "security.syscalls.intercept.mount"),
    ({"security.syscalls.intercept.mount.allowed": "ext4"}, "security.syscalls.intercept.mount.allowed"),
    ({"security.syscalls.intercept.mknod": "true"}, "security.syscalls.intercept.mknod"),
    ({"security.syscalls.deny_default": "false"}, "security.syscalls.deny_default"),
    ({"security.idmap.base": "0"}, "security.idmap.base"),
    ({"security.idmap.size": "4294967294"}, "security.idmap.size"),
    ({"security.devlxd.images": "true"}, "security.devlxd.images"),
    ({"linux.sysctl.net.ipv4.ip_forward": "1"}, "linux.sysctl.net.ipv4.ip_forward"),
    ({"nvidia.runtime": "true"}, "nvidia.runtime"),
])
def test_config_outside_the_allow_list_is_refused_naming_the_key(config: dict[str, str], key: str) -> None:
    with pytest.raises(PolicyViolation) as exc:
        DENY.check_config(config)
    assert exc.value.key == key and exc.value.rule == key and key in str(exc.value)
    Policy.of([key]).check_config(config)  # the exact key allows it
    Policy.of([key.rsplit(".", 1)[0] + ".*"]).check_config(config)  # so does its prefix
    Policy.of([key.split(".", 1)[0] + ".*"]).check_config(config)  # and a wider one
    with pytest.raises(PolicyViolation):
        Policy.of(["limits.*", "device.gpu"]).check_config(config)


def test_raw_rule_keeps_allowing_every_raw_key() -> None:
    Policy.of(["raw"]).check_config({"raw.lxc": "x", "raw.idmap": "both 0 0", "raw.apparmor": "y"})
    with pytest.raises(PolicyViolation):
        Policy.of(["raw"]).check_config({"security.privileged": "true"})


def test_allow_listed_config_passes() -> None:
    DENY.check_config({
        "limits.cpu": "2", "limits.memory": "1GiB", "limits.kernel.nofile": "4096", "user.x": "y",
        "environment.HTTP_PROXY": "http://p", "boot.autostart": "true", "snapshots.schedule": "@daily",
        "cloud-init.user-data": "#cloud-config", "image.os": "busybox", "raw.lxc": None,
        "security.privileged": "0", "security.nesting": "False",
        "security.protection.delete": "true", "security.protection.shift": "true",
        "security.idmap.isolated": "true", "security.syscalls.deny_default": "true",
        "security.syscalls.deny_compat": "true", "security.devlxd": "false", "security.devlxd.images": "false",
    })


@pytest.mark.parametrize("value", ["maybe", "", " true", "2"])
def test_a_security_pair_needs_a_value_lxd_reads_as_the_confined_one(value: str) -> None:
    with pytest.raises(PolicyViolation):
        DENY.check_config({"security.privileged": value} if value != "2" else {"security.nesting": value})


def test_volatile_keys_are_lxds_own() -> None:
    with pytest.raises(PolicyViolation) as exc:
        Policy.of(["volatile.*", "volatile.eth0.hwaddr"]).check_config({"volatile.eth0.hwaddr": "00:16:3e:00:00:01"})
    assert exc.value.key == "volatile.eth0.hwaddr"
    DENY.check_expanded([Layer(config={"volatile.idmap.base": "0"}, lxd_written=True)], MANAGED)


@pytest.mark.parametrize(("device", "rule", "key"), [
    ({"type": "disk", "source": "/etc", "path": "/mnt"}, "disk.host-source", "devices.d.source"),
    ({"type": "disk", "source": "/", "path": "/mnt", "pool": "default"}, "disk.host-source", "devices.d.source"),
    ({"type": "disk", "path": "/mnt"}, "disk.host-source", "devices.d.source"),
    ({"type": "disk", "path": "/mnt", "pool": "default", "shift": "true"}, "device.disk", "devices.d.shift"),
    ({"type": "disk", "path": "/mnt", "pool": "default", "raw.mount.options": "x"}, "device.disk",
     "devices.d.raw.mount.options"),
    ({"type": "proxy", "bind": "container", "listen": "tcp:127.0.0.1:9999",
      "connect": "unix:/var/lib/lxd/unix.socket"}, "device.proxy", "devices.d"),
    ({"type": "proxy", "bind": "host", "listen": "tcp:0.0.0.0:80", "connect": "tcp:127.0.0.1:80"}, "device.proxy",
     "devices.d"),
    ({"type": "unix-char", "path": "/dev/kvm"}, "device.unix-char", "devices.d"),
    ({"type": "unix-block", "path": "/dev/sda"}, "device.unix-block", "devices.d"),
    ({"type": "unix-hotplug", "vendorid": "1d6b"}, "device.unix-hotplug", "devices.d"),
    ({"type": "usb"}, "device.usb", "devices.d"),
    ({"type": "gpu"}, "device.gpu", "devices.d"),
    ({"type": "pci", "address": "0000:00:1f.0"}, "device.pci", "devices.d"),
    ({"type": "infiniband", "nictype": "physical", "parent": "ib0"}, "device.infiniband", "devices.d"),
    ({"type": "tpm", "path": "/dev/tpm0"}, "device.tpm", "devices.d"),
    ({"type": "nic", "nictype": "physical", "parent": "eth0"}, "nic.physical", "devices.d.nictype"),
    ({"type": "nic", "nictype": "physical", "parent": "lxdbr0"}, "nic.physical", "devices.d.nictype"),
    ({"type": "nic", "nictype": "routed", "ipv4.address": "192.0.2.2"}, "nic.routed", "devices.d.nictype"),
    ({"type": "nic", "nictype": "p2p"}, "nic.p2p", "devices.d.nictype"),
    ({"type": "nic", "nictype": "bridged", "parent": "br-lan"}, "nic.unmanaged", "devices.d.parent"),
    ({"type": "nic", "nictype": "macvlan", "parent": "eth0"}, "nic.unmanaged", "devices.d.parent"),
    ({"type": "nic", "network": "br-lan"}, "nic.unmanaged", "devices.d.network"),
    ({"type": "nic", "nictype": "bridged"}, "nic.unmanaged", "devices.d"),
    ({"type": "nic", "network": "uplink"}, "nic.physical", "devices.d.network"),
    ({"type": "nic", "nictype": "macvlan", "parent": "lan"}, "nic.unmanaged", "devices.d.parent"),
    ({"type": "nic", "network": "lxdbr0", "ipv4.routes": "0.0.0.0/0"}, "device.nic", "devices.d.ipv4.routes"),
    ({"type": "nic", "network": "lxdbr0", "host_name": "eth0"}, "device.nic", "devices.d.host_name"),
])
def test_devices_outside_the_allow_list_are_refused(device: dict[str, str], rule: str, key: str) -> None:
    with pytest.raises(PolicyViolation) as exc:
        DENY.check_devices({"d": device}, MANAGED)
    assert (exc.value.rule, exc.value.key) == (rule, key), exc.value
    Policy.of([rule]).check_devices({"d": device}, MANAGED)
    with pytest.raises(PolicyViolation):
        Policy.of(["security.privileged", "device.gpu" if rule != "device.gpu" else "device.usb"]).check_devices(
            {"d": device}, MANAGED)


def test_an_untyped_device_is_refused() -> None:
    with pytest.raises(PolicyViolation) as exc:
        Policy.of(["device.disk", "device.nic"]).check_devices({"d": {"path": "/mnt", "source": "/"}}, MANAGED)
    assert exc.value.key == "devices.d.type"


def test_a_device_type_rule_allows_the_whole_type() -> None:
    Policy.of(["device.nic"]).check_devices({"d": {"type": "nic", "nictype": "physical", "parent": "eth0"}}, MANAGED)
    Policy.of(["device.disk"]).check_devices({"d": {"type": "disk", "source": "/", "path": "/h"}}, MANAGED)


def test_pool_disks_and_nics_on_managed_networks_pass() -> None:
    DENY.check_instance({}, {"root": {"type": "disk", "path": "/", "pool": "default", "size": "2GiB"},
                             "data": {"type": "disk", "path": "/data", "pool": "default", "source": "vol1"},
                             "eth0": {"type": "nic", "nictype": "bridged", "parent": "lxdbr0", "name": "eth0"},
                             "eth1": {"type": "nic", "network": "lxdbr0", "ipv4.address": "10.0.0.5"},
                             "eth2": {"type": "nic", "nictype": "macvlan", "parent": "lxdbr0"},
                             "eth3": {"type": "nic", "network": "lan"},
                             "hidden": {"type": "none"}, "gone": None}, MANAGED)


def test_nic_network_is_only_checked_once_the_managed_networks_are_known() -> None:
    unmanaged = {"eth0": {"type": "nic", "nictype": "bridged", "parent": "br-lan"}}
    DENY.check_devices(unmanaged, None)  # the request alone: LXD not asked yet
    with pytest.raises(PolicyViolation):
        DENY.check_devices(unmanaged, MANAGED)
    with pytest.raises(PolicyViolation):  # what needs no network is refused at once
        DENY.check_devices({"eth0": {"type": "nic", "nictype": "physical", "parent": "eth0"}}, None)


PRIVILEGED = Layer(config={"security.privileged": "true", "raw.lxc": "lxc.apparmor.profile=unconfined"},
                   devices={"host": {"type": "disk", "source": "/", "path": "/host"}}, profile="curated")


def test_a_profiles_content_is_checked_in_the_expanded_definition() -> None:
    with pytest.raises(PolicyViolation) as exc:
        DENY.check_expanded([PRIVILEGED, Layer(config={"limits.cpu": "1"})], MANAGED)
    assert exc.value.key == "raw.lxc" and "profile 'curated'" in exc.value.message
    with pytest.raises(PolicyViolation) as exc:
        Policy.of(["raw", "security.privileged"]).check_expanded([PRIVILEGED], MANAGED)
    assert exc.value.key == "devices.host.source"


def test_a_trusted_profile_passes_but_what_overrides_it_is_checked() -> None:
    trusted = Policy.of(["profile:curated"])
    trusted.check_expanded([PRIVILEGED, Layer(config={"limits.cpu": "1"})], MANAGED)
    Policy.of(["profile:default/curated"]).check_expanded([PRIVILEGED], MANAGED)
    with pytest.raises(PolicyViolation):
        Policy.of(["profile:p2/curated"]).check_expanded([PRIVILEGED], MANAGED)
    with pytest.raises(PolicyViolation) as exc:  # the instance's own device replaces the profile's whole
        trusted.check_expanded([PRIVILEGED, Layer(devices={"host": {"type": "disk", "source": "/etc",
                                                                    "path": "/host"}})], MANAGED)
    assert exc.value.key == "devices.host.source"
    with pytest.raises(PolicyViolation):  # an untrusted profile later in the list is checked
        trusted.check_expanded([PRIVILEGED, Layer(config={"security.nesting": "true"}, profile="other")], MANAGED)
    # a trusted profile last in the list wins over an earlier untrusted one
    trusted.check_expanded([Layer(config={"security.privileged": "true"}, profile="other"), PRIVILEGED], MANAGED)
    # the instance removing a key leaves nothing to check
    DENY.check_expanded([Layer(config={"security.nesting": "true"}, profile="p"),
                         Layer(config={"security.nesting": None})], MANAGED)


@pytest.mark.parametrize("rule", [
    "security.privileged", "security.nesting", "raw", "linux.kernel_modules", "disk.host-source", "device.gpu",
    "device.proxy", "device.unix-hotplug", "device.nic", "device.disk", "nic.physical", "nic.unmanaged",
    "image.any-source", "security.syscalls.intercept.mount", "security.syscalls.*", "security.*", "raw.*",
    "raw.lxc", "linux.sysctl.net.ipv4.ip_forward", "linux.sysctl.*", "limits.kernel.*", "profile:gpu-curated",
    "profile:p2/gpu-curated",
])
def test_rule_names_are_known(rule: str) -> None:
    assert is_rule(rule)


@pytest.mark.parametrize("rule", [
    "security.privilegd", "securty.*", "device.gpuu", "device.none", "raw.lxcc", "nic.bridged", "profile:",
    "profile:a/b/c", "volatile.*", "volatile.eth0.hwaddr", "*", "security.privileged.*", "disk.host",
])
def test_a_typo_is_not_a_rule(rule: str) -> None:
    assert unknown_rules([rule, "raw"]) == [rule]


def test_image_server_must_be_configured() -> None:
    sources = ["https://images.example/releases"]
    DENY.check_image_server("https://images.example/releases/", sources)
    DENY.check_image_server(None, sources)
    with pytest.raises(PolicyViolation) as exc:
        DENY.check_image_server("http://169.254.169.254/", sources)
    assert exc.value.key == "source.server"
    Policy.of(["image.any-source"]).check_image_server("http://elsewhere", sources)


@pytest.mark.parametrize("config", [{"size": "1GiB"}, {"snapshots.schedule": "@daily"}, {"user.team": "ci"},
                                    {"block.filesystem": "ext4"}, {"security.shifted": None}])
def test_volume_config_a_write_token_may_set(config: dict[str, str | None]) -> None:
    Policy.of(()).check_volume_config(config)


@pytest.mark.parametrize(("key", "rule"), [("security.shifted", "volume.security.shifted"),
                                           ("security.unmapped", "volume.security.unmapped"),
                                           ("block.mount_options", "volume.block.mount_options"),
                                           ("zfs.remove_snapshots", "volume.zfs.remove_snapshots")])
def test_volume_config_that_needs_a_rule(key: str, rule: str) -> None:
    with pytest.raises(PolicyViolation) as refused:
        Policy.of(()).check_volume_config({key: "true"})
    assert (refused.value.key, refused.value.rule) == (key, rule)
    Policy.of([rule]).check_volume_config({key: "true"})
    Policy.of(["volume.*"]).check_volume_config({key: "true"})


def test_volume_rule_names() -> None:
    assert all(is_rule(r) for r in ("volume.*", "volume.security.*", "volume.security.shifted"))
    assert not any(is_rule(r) for r in ("volume.", "volume.sec urity", "volumes.size"))
