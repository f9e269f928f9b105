"""§6 image aliases, search rules, copy requests and progress; §16 scenarios 16-22 and 53.

A small driver plays `find_image`'s part against fake servers so that the rules of `ImageSearch` are exercised
in the order the LXD-backed search uses them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from app.images.search import (
    ImageNotFound,
    ImageProgress,
    ImageSearch,
    ImageSource,
    SeriesError,
    acquisition_error,
    alias_for,
    image_progress,
    remote_aliases,
)
from app.lxd.servers import ConnectionArgs, Protocol, ServerSpec, image_remote_protocol

ARCH = "amd64"


class NotFound(Exception):
    status_code = 404


class FakeServer:
    """An image store: aliases → fingerprints, fingerprints → images; errors to raise; calls recorded."""

    def __init__(self, aliases: Mapping[str, str] | None = None, images: Mapping[str, dict] | None = None,
                 alias_error: Exception | None = None, image_error: Exception | None = None) -> None:
        self.aliases = dict(aliases or {})
        self.images = dict(images or {})
        self.alias_error = alias_error
        self.image_error = image_error
        self.calls: list[str] = []

    def get_alias(self, name: str) -> str:
        self.calls.append(f"alias {name}")
        if self.alias_error:
            raise self.alias_error
        if name not in self.aliases:
            raise NotFound("not found")
        return self.aliases[name]

    def get_image(self, fp: str) -> dict:
        self.calls.append(f"image {fp}")
        if self.image_error:
            raise self.image_error
        if fp not in self.images:
            raise NotFound("not found")
        return self.images[fp]


def find(search: ImageSearch, local: FakeServer, remotes: Mapping[str, FakeServer | Exception],
         copy_local: bool = False, copies: list[dict] | None = None) -> ImageSource:
    """The LXD-backed search, with fake servers: what `find_image` does around `ImageSearch`."""
    try:
        target = local.get_alias(search.local_alias)
    except Exception as exc:
        search.local_alias_failed(exc)
    else:
        try:
            return search.local_hit(target, local.get_image(target))
        except NotFound:
            search.local_alias_missing()
    for source in search.sources:
        server = remotes[source.name]
        if isinstance(server, Exception):
            search.source_unreachable(source, server)
            continue
        image_remote_protocol(source)
        search.source_contacted(source)
        for alias in search.aliases:
            try:
                search.alias_resolved(server.get_alias(alias))
                break
            except Exception as exc:
                search.alias_missing(exc)
        if target := search.target_for_source():
            try:
                search.image_found(source, server.get_image(target))
                break
            except Exception as exc:
                search.image_fetch_failed(source, exc)
    if search.found is None:
        raise search.error()
    if copy_local:
        assert copies is not None
        copies.append({"source": search.found.create_source(), "aliases": list(search.copy_aliases())})
        return search.copied()
    return search.found


def _sources() -> list[ServerSpec]:
    return [ServerSpec(host="https://wont-work", name="server-that-wont-work", protocol="lxd",
                       connection=ConnectionArgs(insecure_skip_verify=True)),
            ServerSpec(host="https://has-image", name="server-that-has-image", protocol=Protocol.SIMPLESTREAMS),
            ServerSpec(host="https://untouched", name="server-that-should-not-be-touched",
                       protocol=Protocol.SIMPLESTREAMS)]


def test_alias_for_default_and_template() -> None:
    assert alias_for("xenial", "amd64") == "juju/xenial/amd64"
    assert alias_for("jammy", "arm64", "cache/{series}-{arch}") == "cache/jammy-arm64"


def test_s16_local_alias_hit_contacts_no_remote() -> None:
    local = FakeServer({"juju/xenial/amd64": "foo-target"}, {"foo-target": {"fingerprint": "foo-target"}})
    remotes = {s.name: FakeServer() for s in _sources()}
    search = ImageSearch.for_series("xenial", ARCH, _sources())
    found = find(search, local, remotes, copy_local=True, copies=[])
    assert found.local and found.fingerprint == "foo-target"
    assert found.alias == "juju/xenial/amd64"
    assert all(not r.calls for r in remotes.values())
    assert search.contacted == []


def test_s16_local_alias_error_other_than_not_found_is_raised() -> None:
    local = FakeServer(alias_error=RuntimeError("permission denied"))
    with pytest.raises(RuntimeError, match="permission denied"):
        find(ImageSearch.for_series("xenial", ARCH, _sources()), local, {})


def test_s17_unknown_series_after_local_lookup() -> None:
    local = FakeServer()
    with pytest.raises(SeriesError, match=r'series: "pldlinux"'):
        find(ImageSearch.for_series("pldlinux", ARCH, _sources()), local, {})
    assert local.calls == ["alias juju/pldlinux/amd64"]


def test_s17_empty_series() -> None:
    with pytest.raises(SeriesError, match=r'^series "" not valid$'):
        remote_aliases("", ARCH)


def test_s18_remote_order_first_miss_second_hit_third_untouched() -> None:
    remotes = {
        "server-that-wont-work": FakeServer(alias_error=RuntimeError("alias lookup failed")),
        "server-that-has-image": FakeServer({"xenial/amd64": "foo-remote-target"},
                                            {"foo-remote-target": {"fingerprint": "foo-remote-target"}}),
        "server-that-should-not-be-touched": FakeServer(),
    }
    search = ImageSearch.for_series("xenial", ARCH, _sources())
    found = find(search, FakeServer(), remotes)
    assert found.server is not None and found.server.name == "server-that-has-image"
    assert found.fingerprint == "foo-remote-target"
    assert remotes["server-that-wont-work"].calls == ["alias xenial/amd64"]
    assert remotes["server-that-should-not-be-touched"].calls == []
    assert search.contacted == ["server-that-wont-work", "server-that-has-image"]


def test_s18_alias_misses_only_report_no_matching_image() -> None:
    remotes = {s.name: FakeServer() for s in _sources()}
    with pytest.raises(ImageNotFound, match=r"^no matching image found$"):
        find(ImageSearch.for_series("xenial", ARCH, _sources()), FakeServer(), remotes)


def test_s18_connection_error_is_reported_over_later_alias_misses() -> None:
    remotes: dict[str, Any] = {s.name: FakeServer() for s in _sources()}
    remotes["server-that-wont-work"] = ConnectionError("unrecognized remote server")
    with pytest.raises(ConnectionError, match="unrecognized remote server"):
        find(ImageSearch.for_series("xenial", ARCH, _sources()), FakeServer(), remotes)


def test_s18_a_failed_alias_target_is_not_carried_to_the_next_source() -> None:
    remotes = {
        "server-that-wont-work": FakeServer({"xenial/amd64": "stale"}, image_error=RuntimeError("gone")),
        "server-that-has-image": FakeServer(images={"stale": {"fingerprint": "stale"}}),
        "server-that-should-not-be-touched": FakeServer(),
    }
    with pytest.raises(RuntimeError, match="gone"):
        find(ImageSearch.for_series("xenial", ARCH, _sources()), FakeServer(), remotes)
    assert remotes["server-that-has-image"].calls == ["alias xenial/amd64"]


def test_s19_copy_local_uses_local_alias_and_reports_local_server() -> None:
    local = FakeServer()
    remote = FakeServer({"xenial/amd64": "fp1"}, {"fp1": {"fingerprint": "fp1"}})
    sources = [ServerSpec(host="https://images.example", name="images", protocol=Protocol.SIMPLESTREAMS)]
    copies: list[dict] = []
    found = find(ImageSearch.for_series("xenial", ARCH, sources), local, {"images": remote}, True, copies)
    assert found.local and found.fingerprint == "fp1" and found.alias == "juju/xenial/amd64"
    assert copies == [{
        "source": {"type": "image", "mode": "pull", "server": "https://images.example",
                   "protocol": "simplestreams", "fingerprint": "fp1"},
        "aliases": ["juju/xenial/amd64"]}]


def test_s20_remote_image_fetch_failure_is_returned() -> None:
    remote = FakeServer({"xenial/amd64": "fp1"}, image_error=RuntimeError("failed to retrieve image"))
    sources = [ServerSpec(host="https://images.example", name="images", protocol=Protocol.SIMPLESTREAMS)]
    with pytest.raises(RuntimeError, match=r"^failed to retrieve image$"):
        find(ImageSearch.for_series("xenial", ARCH, sources), FakeServer(), {"images": remote})


def test_alias_search_uses_the_alias_on_the_sources() -> None:
    remote = FakeServer({"busybox": "fp9"}, {"fp9": {"fingerprint": "fp9"}})
    sources = [ServerSpec(host="https://img:8443", name="img", protocol="lxd")]
    found = find(ImageSearch.for_alias("busybox", sources), FakeServer(), {"img": remote}, True, [])
    assert (found.fingerprint, found.alias, found.local) == ("fp9", "busybox", True)


@pytest.mark.parametrize(("metadata", "expected"), [
    ({"download_progress": "rootfs: 45% (12.34MB/s)"}, ImageProgress(45, "Retrieving image: 45%")),
    ({"fs_progress": "12%"}, ImageProgress(12, "Retrieving image: 12%")),
    ({"fs_progress": "3%", "download_progress": "80%"}, ImageProgress(3, "Retrieving image: 3%")),
    ({"progress": {"percent": "67", "speed": "1000", "stage": "download"}, "download_progress": "rootfs: 66%"},
     ImageProgress(67, "Retrieving image: 67%")),
    ({"progress": {"percent": 5}}, ImageProgress(5, "Retrieving image: 5%")),
    ({"download_progress": "metadata: 2.5MB (1MB/s)"},
     ImageProgress(None, "Retrieving image: metadata: 2.5MB (1MB/s)")),
    ({"other": "x"}, None),
    ({}, None),
    (None, None),
])
def test_s21_progress_messages(metadata: Any, expected: ImageProgress | None) -> None:
    assert image_progress(metadata) == expected


@pytest.mark.parametrize(("series", "arch"), [("centos7", "arm64"), ("centos8", "arm64"), ("opensuseleap", "s390x")])
def test_s22_unsupported_remote_aliases(series: str, arch: str) -> None:
    with pytest.raises(SeriesError, match=rf'^series "{series}" not supported$'):
        remote_aliases(series, arch)


@pytest.mark.parametrize(("series", "arch", "alias"), [
    ("xenial", "amd64", "xenial/amd64"), ("jammy", "arm64", "jammy/arm64"),
    ("centos7", "amd64", "centos/7/amd64"), ("centos8", "amd64", "centos/8/amd64"),
    ("opensuseleap", "amd64", "opensuse/42.2/amd64"),
])
def test_s22_supported_remote_aliases(series: str, arch: str, alias: str) -> None:
    assert remote_aliases(series, arch) == [alias]


@pytest.mark.parametrize("series", ["centos9", "genericlinux", "win2019"])
def test_s22_other_os_not_supported(series: str) -> None:
    with pytest.raises(SeriesError, match="not supported"):
        remote_aliases(series, "amd64")


def test_s53_image_acquisition_failure_context() -> None:
    err = acquisition_error(ConnectionError("unrecognized remote server"))
    assert str(err) == "acquiring LXD image: unrecognized remote server"


def test_local_create_source_and_remote_create_source() -> None:
    assert ImageSource("fp").create_source() == {"type": "image", "fingerprint": "fp"}
    spec = ServerSpec(host="https://images.example", name="images", protocol=Protocol.SIMPLESTREAMS)
    assert ImageSource("fp", spec).create_source() == {
        "type": "image", "mode": "pull", "server": "https://images.example", "protocol": "simplestreams",
        "fingerprint": "fp"}
    assert ImageSource("fp", spec, secret="s").create_source()["secret"] == "s"
