"""§7 containers: constraints, the create request, instance helpers, filters, addresses.

§16 scenarios 9, 10, 13 (pure parts), 23-28, 33/34 (message), 35, 50 (pure decision), 54.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from app.containers.addresses import AddressType, Scope, address_scope, address_type, container_addresses
from app.containers.constraints import (
    Constraints,
    InstanceDraft,
    apply_constraints,
    default_pool_request,
    has_root_disk,
    parse_byte_size,
    parse_lxd_version,
    pick_root_pool,
    set_root_disk,
    size_suffix,
)
from app.containers.listing import select
from app.containers.spec import (
    ContainerSpec,
    build_create_request,
    cpus_of,
    memory_mib_of,
    merge_config,
    user_metadata,
)
from app.images.search import ImageSource
from app.lxd.models import Instance, InstanceState, normalise_arch
from app.lxd.servers import Protocol, ServerSpec


def test_s09_server_config_merge_keeps_other_keys() -> None:
    assert {"config": merge_config({}, {"key1": "val1"})} == {"config": {"key1": "val1"}}
    assert merge_config({"a": "1", "key1": "old"}, {"key1": "val1", "b": ""}) == {"a": "1", "key1": "val1", "b": ""}
    assert merge_config(None, None) == {}


def test_s10_container_config_update_body() -> None:
    instance = {"name": "c1", "status": "Running", "architecture": "x86_64", "config": {"a": "1"}, "devices": {},
                "ephemeral": False, "profiles": ["default"], "stateful": False, "description": ""}
    inst = Instance.model_validate(instance)
    body = {**inst.writable(), "config": merge_config(inst.config, {"key1": "val1"})}
    assert body == {"architecture": "x86_64", "config": {"a": "1", "key1": "val1"}, "devices": {},
                    "ephemeral": False, "profiles": ["default"], "stateful": False, "description": ""}


LXD_CONTAINER: dict[str, Any] = {
    "name": "c1", "architecture": "x86_64",
    "config": {"user.juju-controller-uuid": "deadbeef", "limits.cpu": "2", "limits.memory": "1MiB"},
}


def test_s23_metadata() -> None:
    metadata = user_metadata(LXD_CONTAINER["config"])
    assert metadata.get("juju-controller-uuid") == "deadbeef"
    assert metadata.get("missing", "") == ""
    assert metadata == {"juju-controller-uuid": "deadbeef"}


def test_s23_arch() -> None:
    assert normalise_arch(LXD_CONTAINER["architecture"]) == "amd64"


@pytest.mark.parametrize(("raw", "arch"), [
    ("x86_64", "amd64"), (" amd64 ", "amd64"), ("i686", "i386"), ("i386", "i386"), ("armv7l", "armhf"),
    ("arm", "armhf"), ("aarch64", "arm64"), ("arm64", "arm64"), ("ppc64le", "ppc64el"), ("s390x", "s390x"),
    ("riscv64", "riscv64"), ("mips", "mips"), ("", ""),
])
def test_s23_normalise_arch(raw: str, arch: str) -> None:
    assert normalise_arch(raw) == arch


@pytest.mark.parametrize(("value", "cpus"), [("2", 2), ("0-3", 0), ("", 0), ("x", 0), ("-2", 0), ("16", 16)])
def test_s23_cpus(value: str, cpus: int) -> None:
    assert cpus_of(value) == cpus


@pytest.mark.parametrize(("value", "mib"), [
    ("1MiB", 1), ("2GiB", 2048), ("1024MB", 976), ("", 0), ("50%", 0), ("1048576", 1), ("4EiB", 2**32 - 1), ("8EiB", 0),
])
def test_s23_memory_mib(value: str, mib: int) -> None:
    assert memory_mib_of(value) == mib


def test_s23_missing_limits() -> None:
    assert (cpus_of(""), memory_mib_of(""), normalise_arch(""), user_metadata({})) == (0, 0, "", {})


@pytest.mark.parametrize(("value", "size"), [
    ("0", 0), ("12", 12), ("1B", 1), ("10 bytes", 10), ("1kB", 1000), ("1KiB", 1024), ("3MB", 3_000_000),
    ("1GiB", 2**30), ("1TiB", 2**40),
])
def test_s23_byte_sizes(value: str, size: int) -> None:
    assert parse_byte_size(value) == size


@pytest.mark.parametrize("value", ["", "MiB", "12XB", "1.5GiB", "99999EiB"])
def test_s23_invalid_byte_sizes(value: str) -> None:
    with pytest.raises(ValueError, match="Invalid value"):
        parse_byte_size(value)


def _inst(name: str, code: int) -> dict[str, Any]:
    return {"name": name, "status_code": code}


def test_s25_filter_by_prefix_and_statuses() -> None:
    instances = [_inst("prefix-c1", 106), _inst("prefix-c2", 102), _inst("prefix-c3", 101),
                 _inst("not-prefix-c4", 102)]
    kept = select(instances, "prefix", ["Starting", "Stopped"])
    assert [i["name"] for i in kept] == ["prefix-c1", "prefix-c2"]


def test_s25_filter_without_statuses_or_prefix() -> None:
    instances = [_inst("b", 103), _inst("a", 110)]
    assert [i["name"] for i in select(instances)] == ["b", "a"]
    assert select(instances, "", ["running"]) == []


def test_s25_filter_uses_status_text_when_there_is_no_code() -> None:
    assert select([{"name": "x", "status": "Running"}], "", ["Running"]) == [
        {"name": "x", "status": "Running"}]


def test_s26_alive_containers() -> None:
    instances = [_inst("c1", 106), _inst("c2", 102), _inst("c3", 103), _inst("c4", 110), _inst("c5", 112),
                 _inst("c6", 101), _inst("c7", 107), _inst("c8", 109)]
    assert [i["name"] for i in select(instances, alive=True)] == ["c1", "c2", "c3", "c6", "c7"]
    assert [i["name"] for i in select(instances, "", ["Running", "Frozen"], alive=True)] == ["c3"]


def test_s26_live_state_decides_over_the_instance_status() -> None:
    listed = [{"name": "c1", "status_code": 102, "state": {"status_code": 103}}, {"name": "c2", "status_code": 103}]
    assert [i["name"] for i in select(listed, "", ["Running"])] == ["c1", "c2"]


STATE = {"network": {
    "eth0": {"addresses": [{"family": "inet", "address": "10.0.8.173", "netmask": "24", "scope": "global"},
                           {"family": "inet6", "address": "fe80::216:3eff:fe3b:e582", "netmask": "64",
                            "scope": "link"}]},
    "lo": {"addresses": [{"family": "inet", "address": "127.0.0.1", "netmask": "8", "scope": "local"},
                         {"family": "inet6", "address": "::1", "netmask": "128", "scope": "local"}]},
    "lxcbr0": {"addresses": [{"family": "inet", "address": "10.0.5.12", "netmask": "24", "scope": "global"},
                             {"family": "inet6", "address": "fe80::216:3eff:fe3b:e432", "netmask": "64",
                              "scope": "link"}]},
    "lxdbr0": {"addresses": [{"family": "inet", "address": "10.0.6.17", "netmask": "24", "scope": "global"},
                             {"family": "inet6", "address": "fe80::5c9b:b2ff:feaf:4cf2", "netmask": "64",
                              "scope": "link"}]},
}}


def test_s27_container_addresses() -> None:
    addrs = container_addresses(InstanceState.model_validate(STATE))
    assert [(a.value, a.type, a.scope, a.interface) for a in addrs] == [
        ("10.0.8.173", AddressType.IPV4, Scope.CLOUD_LOCAL, "eth0")]
    assert addrs[0].family == "inet"


def test_s27_container_addresses_empty_and_custom_bridge() -> None:
    assert container_addresses(InstanceState()) == []
    assert container_addresses(None) == []
    assert container_addresses(InstanceState(network=None)) == []
    state = {"network": {"gwbr1": {"addresses": [{"address": "10.9.0.1"}]},
                         "eth1": {"addresses": [{"address": "2001:db8::5"}, {"address": "240.1.2.3"}]},
                         "eth0": {"addresses": [{"address": "8.8.8.8"}]}}}
    assert [(a.value, a.scope) for a in container_addresses(InstanceState.model_validate(state), ("gwbr1",))] == [
        ("8.8.8.8", Scope.PUBLIC), ("2001:db8::5", Scope.PUBLIC), ("240.1.2.3", Scope.FAN_LOCAL)]


@pytest.mark.parametrize(("value", "typ", "scope"), [
    ("127.0.0.1", AddressType.IPV4, Scope.MACHINE_LOCAL), ("::1", AddressType.IPV6, Scope.MACHINE_LOCAL),
    ("10.1.2.3", AddressType.IPV4, Scope.CLOUD_LOCAL), ("172.16.0.1", AddressType.IPV4, Scope.CLOUD_LOCAL),
    ("172.32.0.1", AddressType.IPV4, Scope.PUBLIC), ("192.168.1.1", AddressType.IPV4, Scope.CLOUD_LOCAL),
    ("fd00::1", AddressType.IPV6, Scope.CLOUD_LOCAL), ("240.0.0.1", AddressType.IPV4, Scope.FAN_LOCAL),
    ("169.254.1.1", AddressType.IPV4, Scope.LINK_LOCAL), ("fe80::1", AddressType.IPV6, Scope.LINK_LOCAL),
    ("224.0.0.251", AddressType.IPV4, Scope.LINK_LOCAL), ("ff02::1", AddressType.IPV6, Scope.LINK_LOCAL),
    ("ff01::1", AddressType.IPV6, Scope.LINK_LOCAL), ("ff05::2", AddressType.IPV6, Scope.UNKNOWN),
    ("239.1.1.1", AddressType.IPV4, Scope.UNKNOWN), ("0.0.0.0", AddressType.IPV4, Scope.UNKNOWN),
    ("1.1.1.1", AddressType.IPV4, Scope.PUBLIC), ("2606:4700::1111", AddressType.IPV6, Scope.PUBLIC),
    ("localhost", AddressType.HOSTNAME, Scope.MACHINE_LOCAL), ("example.com", AddressType.HOSTNAME, Scope.UNKNOWN),
])
def test_s27_address_type_and_scope(value: str, typ: AddressType, scope: Scope) -> None:
    assert (address_type(value), address_scope(value)) == (typ, scope)


def _spec(**kw: Any) -> ContainerSpec:
    return ContainerSpec(name="c1", image={"series": "xenial"}, **kw)


def test_s28_create_request_body() -> None:
    spec = _spec(profiles=["default", "custom"], devices={"data": {"type": "disk", "path": "/d", "source": "/s"}},
                 config={"security.nesting": "true"})
    req = build_create_request(spec, ImageSource("fp1"), "5.21.1")
    assert req.body == {
        "name": "c1", "type": "container", "profiles": ["default", "custom"],
        "config": {"security.nesting": "true"},
        "devices": {"data": {"type": "disk", "path": "/d", "source": "/s"}},
        "ephemeral": False, "source": {"type": "image", "fingerprint": "fp1"}}
    assert req.unknown_parents == []


def test_s28_create_request_from_a_remote_image() -> None:
    remote = ServerSpec(host="https://images.example", name="images", protocol=Protocol.SIMPLESTREAMS)
    body = build_create_request(_spec(ephemeral=True), ImageSource("fp1", remote), "5.0.0").body
    assert body["ephemeral"] is True
    assert body["source"] == {"type": "image", "mode": "pull", "server": "https://images.example",
                              "protocol": "simplestreams", "fingerprint": "fp1"}


def test_s28_spec_typed_fields_become_config() -> None:
    spec = _spec(metadata={"owner": "ci", "juju-model": "m1"}, user_data="#cloud-config\n",
                 network_config='config: "disabled"\n', autostart=True)
    body = build_create_request(spec, ImageSource("fp"), "5.0.0").body
    assert body["config"] == {"user.owner": "ci", "user.juju-model": "m1", "user.user-data": "#cloud-config\n",
                              "user.network-config": 'config: "disabled"\n', "boot.autostart": "true"}
    assert build_create_request(_spec(autostart=False), ImageSource("fp"), "5.0.0").body["config"] == {
        "boot.autostart": "false"}


def test_s28_spec_interfaces_become_nics_and_unknown_parents() -> None:
    spec = _spec(interfaces=[{"name": "eth0", "parent": "lxdbr0", "mac": "00:16:3e:00:00:01", "mtu": 1500},
                             {"name": "eth1", "parent": "br-eth1", "cidr": "10.1.0.0/24"}])
    req = build_create_request(spec, ImageSource("fp"), "5.0.0")
    assert req.body["devices"] == {
        "eth0": {"type": "nic", "nictype": "bridged", "name": "eth0", "parent": "lxdbr0",
                 "hwaddr": "00:16:3e:00:00:01", "mtu": "1500"},
        "eth1": {"type": "nic", "nictype": "bridged", "name": "eth1", "parent": "br-eth1"}}
    assert req.unknown_parents == ["lxdbr0"]


def test_s28_spec_defaults() -> None:
    spec = _spec()
    assert (spec.profiles, spec.start, spec.ephemeral, spec.image.copy_local) == (["default"], True, False, True)


@pytest.mark.parametrize("bad", [
    {"name": "1abc"}, {"name": "a_b"}, {"name": "ab-"}, {"name": "a" * 64},
    {"image": {}}, {"image": {"alias": "a", "series": "jammy"}},
    {"config": {"user.k": "x"}, "metadata": {"k": "y"}},
    {"devices": {"eth0": {"type": "nic"}}, "interfaces": [{"name": "eth0", "parent": "br0"}]},
    {"interfaces": [{"name": "eth0", "parent": "a"}, {"name": "eth0", "parent": "b"}]},
    {"constraints": {"cores": 0}}, {"constraints": {"mem_mib": -1}}, {"constraints": {"gpu": 1}},
    {"metadata": {"bad key": "v"}}, {"interfaces": [{"name": "eth0", "mac": "zz"}]},
])
def test_s28_invalid_specs(bad: dict[str, Any]) -> None:
    fields = {"name": "c1", "image": {"series": "xenial"}} | bad
    with pytest.raises(ValidationError):
        ContainerSpec(**fields)


def test_s28_same_value_in_config_and_field_is_accepted() -> None:
    spec = _spec(config={"user.k": "v"}, metadata={"k": "v"})
    assert spec.apply_constraints("5.0").config == {"user.k": "v"}


CONS = Constraints(mem_mib=2046, cores=4, instance_type="t2.micro")


def test_s35_apply_constraints_on_3_10_0_uses_mib() -> None:
    draft = InstanceDraft(name="c", config={"boot.autostart": "true"})
    apply_constraints(draft, "3.10.0", CONS)
    assert draft.config == {"boot.autostart": "true", "limits.cpu": "4", "limits.memory": "2046MiB"}
    assert draft.instance_type == "t2.micro"


def test_s35_apply_constraints_on_2_0_11_uses_mb() -> None:
    draft = apply_constraints(InstanceDraft(name="c"), "2.0.11", CONS)
    assert draft.config == {"limits.cpu": "4", "limits.memory": "2046MB"}
    assert draft.instance_type == "t2.micro"


@pytest.mark.parametrize(("version", "suffix"), [
    ("3.10.0", "MiB"), ("3.10", "MB"), ("3.9.9", "MB"), ("3.11", "MiB"), ("4.0", "MiB"), ("5.21.1 LTS", "MiB"),
    ("", "MB"), ("garbage", "MB"), ("2.0.11", "MB"), ("10.0.0", "MiB"),
])
def test_s35_size_suffix_by_server_version(version: str, suffix: str) -> None:
    assert size_suffix(version) == suffix


def test_s35_version_parsing() -> None:
    assert parse_lxd_version("3.10") == (3, 10, -1)
    assert parse_lxd_version("5.21.1") == (5, 21, 1)
    assert parse_lxd_version("x") is None


def test_s35_arch_and_root_disk() -> None:
    draft = InstanceDraft(name="c", devices={"root": {"type": "disk", "path": "/", "pool": "old", "x": "y"}})
    apply_constraints(draft, "5.0.0", Constraints(arch="arm64", root_disk_mib=10240, root_disk_source="fast"))
    assert draft.architecture == "arm64"
    assert draft.devices == {"root": {"type": "disk", "pool": "fast", "path": "/", "size": "10240MiB"}}


def test_s35_root_disk_pool_defaults_and_size_suffix() -> None:
    draft = apply_constraints(InstanceDraft(name="c"), "3.0.0", Constraints(root_disk_mib=512))
    assert draft.devices == {"root": {"type": "disk", "pool": "default", "path": "/", "size": "512MB"}}
    draft = apply_constraints(InstanceDraft(name="c"), "5.0.0", Constraints(root_disk_source="p1"))
    assert draft.devices == {"root": {"type": "disk", "pool": "p1", "path": "/"}}


def test_s35_no_constraints_change_nothing() -> None:
    draft = InstanceDraft(name="c", config={"a": "b"})
    assert apply_constraints(draft, "5.0", None) == InstanceDraft(name="c", config={"a": "b"})
    assert apply_constraints(draft, "5.0", Constraints()) == InstanceDraft(name="c", config={"a": "b"})


def test_s35_spec_apply_constraints_and_create_request_carry_arch_and_instance_type() -> None:
    spec = _spec(constraints={"cores": 2, "arch": "x86_64", "instance_type": "c2-m4"})
    draft = spec.apply_constraints("5.0.0")
    assert (draft.config, draft.architecture, draft.instance_type) == ({"limits.cpu": "2"}, "x86_64", "c2-m4")
    body = build_create_request(spec, ImageSource("fp"), "5.0.0").body
    assert (body["architecture"], body["instance_type"]) == ("x86_64", "c2-m4")
    assert spec.apply_constraints("2.0", CONS).config == {"limits.cpu": "4", "limits.memory": "2046MB"}


def test_s50_root_disk_present_means_nothing_to_do() -> None:
    assert has_root_disk({"root": {"type": "disk", "path": "/", "pool": "default"}})
    assert has_root_disk({"weird": {"path": "/"}})
    assert not has_root_disk({"eth0": {"type": "nic"}})
    assert not has_root_disk(None)


def test_s50_pick_root_pool() -> None:
    assert pick_root_pool(["custom", "default"]) == "default"
    assert pick_root_pool(["custom", "other"]) == "custom"
    assert pick_root_pool([]) is None
    assert default_pool_request() == {"name": "default", "driver": "dir"}
    devices: dict[str, dict[str, str]] = {"root": {"type": "disk", "path": "/x"}}
    set_root_disk(devices, "custom")
    assert devices == {"root": {"type": "disk", "path": "/", "pool": "custom"}}


def test_s54_list_by_namespace_prefix() -> None:
    prefix = "juju-06f00d-"
    names = [f"{prefix}0", f"{prefix}1", "juju-06f00e-0", "other", f"x{prefix}2", "juju-06f00d", f"{prefix[:-1]}"]
    kept = select([{"name": n, "status_code": 103} for n in names], prefix)
    assert [i["name"] for i in kept] == [f"{prefix}0", f"{prefix}1"]


def test_s28_interfaces_take_only_input_fields() -> None:
    with pytest.raises(ValidationError):
        _spec(interfaces=[{"name": "eth0", "parent": "br0", "origin": "provider"}])


def test_s28_spec_schema_renders() -> None:
    schema = ContainerSpec.model_json_schema()
    assert {"name", "image", "profiles", "config", "devices", "metadata", "user_data", "network_config", "autostart",
            "constraints", "interfaces", "ephemeral", "start"} <= set(schema["properties"])
