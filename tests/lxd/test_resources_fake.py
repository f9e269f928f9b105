"""Resource modules against the fake LXD: answers the real LXD 5.0 cannot give (clusters, Incus, LXD 6.x's
asynchronous profile/storage/network calls) and the request shapes they rely on."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.lxd import Client, Conflict, LXDError, OperationConflict, PreconditionFailed
from app.lxd.images import MultipartError, split_multipart
from tests.fakes.lxd import Call, FakeLXD, async_op, error, op_state, sync

# ---------------------------------------------------------------------------------------------- cluster / target


async def test_cluster_members_and_target_per_call(make_fake_client: Callable[..., Client],
                                                   fake_lxd: FakeLXD) -> None:
    f = fake_lxd
    f.on("GET", "/1.0/cluster/members", sync([
        {"server_name": "m1", "url": "https://10.0.0.1:8443", "database": True, "status": "Online",
         "roles": ["database"], "groups": ["default"], "new_field": 1},
        {"server_name": "m2", "url": "https://10.0.0.2:8443", "status": "Evacuated", "roles": None}]))
    f.on("GET", "/1.0/cluster", sync({"server_name": "m1", "enabled": True, "member_config": []}))
    f.on("POST", "/1.0/storage-pools", sync(None, status=201))
    f.on("POST", "/1.0/networks", sync(None, status=201))
    f.on("POST", "/1.0/storage-pools/p/volumes/custom", sync(None, status=201))
    f.on("GET", "/1.0/storage-pools/p/volumes/custom/v", sync({"name": "v", "location": "m2"}))
    f.on("POST", "/1.0/images", async_op("op-img"))
    f.on("GET", "/1.0/operations/op-img", sync(op_state("op-img", 200, fingerprint="ab" * 32)))
    f.on("GET", f"/1.0/images/{'ab' * 32}", sync({"fingerprint": "ab" * 32}))
    f.on("PATCH", "/1.0", sync(None))
    async with make_fake_client(clustered=True) as fake_client:
        members = await fake_client.cluster.members()
        assert [m.server_name for m in members] == ["m1", "m2"] and members[1].roles == []
        assert members[0].model_extra == {"new_field": 1}
        assert (await fake_client.cluster.info()).enabled
        for member in ("m1", "m2"):
            await fake_client.storage.create("p", "zfs", config={"source": f"/dev/{member}"}, target=member)
        await fake_client.storage.create("p", "zfs")
        assert [c.params.get("target") for c in f.requests("POST", "/1.0/storage-pools")] == ["m1", "m2", None]
        await fake_client.networks.create("br", target="m1")
        assert f.requests("POST", "/1.0/networks")[-1].params["target"] == "m1"
        vol = await fake_client.storage.create_volume("p", "v", target="@gpu")
        assert f.requests("POST", "/1.0/storage-pools/p/volumes/custom")[-1].params["target"] == "@gpu"
        assert vol.location == "m2"
        await fake_client.images.copy(server="https://img", alias="a", protocol="simplestreams", target="m2")
        req = f.requests("POST", "/1.0/images")[-1]
        assert req.params["target"] == "m2"
        assert req.body["source"]["protocol"] == "simplestreams"
        await fake_client.config.patch({"core.https_address": "10.0.0.2:8443"}, target="m2")
        assert f.requests("PATCH", "/1.0")[-1].params["target"] == "m2"


async def test_members_of_a_standalone_server_is_empty(fake_client: Client, fake_lxd: FakeLXD) -> None:
    fake_lxd.on("GET", "/1.0/cluster/members", error("Server is not clustered", 500))
    assert await fake_client.cluster.members() == []


# ---------------------------------------------------------------------------------------------- Incus


async def test_incus_upload_headers_and_protocol(make_fake_client: Callable[..., Client], fake_lxd: FakeLXD,
                                                 tmp_path: Path) -> None:
    f = fake_lxd
    seen: dict[str, str] = {}

    def upload(call: Call) -> httpx.Response:
        assert call.request is not None
        seen.update(call.request.headers)
        seen["body"] = str(len(call.request.content))
        return async_op("op-up")

    f.on("POST", "/1.0/images", upload)
    f.on("GET", "/1.0/operations/op-up", sync(op_state("op-up", 200, fingerprint="cd" * 32)))
    f.on("GET", f"/1.0/images/{'cd' * 32}", sync({"fingerprint": "cd" * 32}))
    path = tmp_path / "img.tar.gz"
    path.write_bytes(b"x" * 300_000)
    async with make_fake_client(server="incus") as fake_client:
        await fake_client.images.upload(path, public=True, properties={"os": "a b"}, profiles=["default", "x"])
        assert seen["x-incus-public"] == "1" and seen["x-incus-filename"] == "img.tar.gz"
        assert seen["x-incus-properties"] == "os=a+b"
        assert seen["x-incus-profiles"] == "profile=default&profile=x"
        assert not any(k.startswith("x-lxd-") for k in seen) and seen["body"] == "300000"
        assert await fake_client.server.image_protocol() == "incus"


async def test_split_upload_is_multipart_metadata_first(fake_client: Client, fake_lxd: FakeLXD,
                                                        tmp_path: Path) -> None:
    captured: list[bytes] = []

    def upload(call: Call) -> httpx.Response:
        assert call.request is not None
        assert call.request.headers["content-type"].startswith("multipart/form-data; boundary=")
        captured.append(call.request.content)
        return async_op("op-split")

    fake_lxd.on("POST", "/1.0/images", upload)
    meta, root = tmp_path / "m.tar.xz", tmp_path / "r.squashfs"
    meta.write_bytes(b"META" * 10)
    root.write_bytes(b"ROOT" * 70_000)

    async def rootfs() -> AsyncIterator[bytes]:
        yield root.read_bytes()

    op = await fake_client.images.upload(meta, rootfs=rootfs(), wait=False)
    data = captured[0]
    assert data.index(b'name="metadata"') < data.index(b'name="rootfs"') < data.index(b"ROOT")
    assert op.id == "op-split"


# ---------------------------------------------------------------------------------------------- trust tokens


def _on_fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeLXD:
    """A fake LXD answering every client the code under test makes, wherever its URL points."""
    from app.lxd.transport import Transport

    fake = FakeLXD(str(tmp_path / "events.sock"))
    init = Transport.__init__

    def on_fake(self: Transport, base_url: str, **kw: Any) -> None:
        init(self, base_url, **{**kw, "http_transport": httpx.MockTransport(fake.handler)})

    monkeypatch.setattr(Transport, "__init__", on_fake)
    return fake


async def _enrol_body(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, extensions: list[str],
                      server: str) -> dict:
    from app.lxd import certificates
    from app.lxd.transport import Transport

    der = b"server-der"
    import hashlib

    token = certificates.TrustToken(client_name="c1", fingerprint=hashlib.sha256(der).hexdigest(),
                                    addresses=["10.1.2.3:8443"], secret="s3cret")

    async def fake_fetch(address: str, *, timeout: float = 10.0) -> bytes:
        return der

    async def no_ssl(self: Transport) -> None:
        return None

    monkeypatch.setattr(certificates, "fetch_server_certificate", fake_fetch)
    monkeypatch.setattr(Transport, "ssl_context", no_ssl)
    monkeypatch.setattr(certificates.ssl, "DER_cert_to_PEM_cert", lambda d: "PEM")
    state = {"trusted": False}
    fake = _on_fake(monkeypatch, tmp_path)

    def info(call: Call) -> httpx.Response:
        md: dict[str, Any] = {"api_extensions": extensions, "auth": "trusted" if state["trusted"] else "untrusted"}
        if state["trusted"]:
            md["environment"] = {"server": server}
        return sync(md)

    fake.on("GET", "/1.0", info)

    def add(call: Call) -> httpx.Response:
        state["trusted"] = True
        return sync(None, status=201)

    fake.on("POST", "/1.0/certificates", add)
    result = await certificates.enrol(token.encode(), client_cert="c.crt", client_key="c.key")
    assert result.url == "https://10.1.2.3:8443" and not result.already_trusted
    return fake.requests("POST", "/1.0/certificates")[-1].body


async def test_enrol_uses_trust_token_where_the_server_has_the_extension(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    sent = await _enrol_body(monkeypatch, tmp_path, ["explicit_trust_token"], "lxd")
    assert "trust_token" in sent and "password" not in sent and sent["name"] == "c1"


async def test_enrol_on_lxd_50_and_incus_sends_password_and_trust_token(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    # Incus has no `explicit_trust_token` and reads only `trust_token`; LXD 5.0 reads only `password`
    sent = await _enrol_body(monkeypatch, tmp_path, ["certificate_token"], "incus")
    assert sent["trust_token"] == sent["password"] and sent["type"] == "client"


async def test_enrol_sends_nothing_to_a_server_with_another_certificate(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    from app.lxd import certificates

    async def fake_fetch(address: str, *, timeout: float = 10.0) -> bytes:
        return b"someone else"

    monkeypatch.setattr(certificates, "fetch_server_certificate", fake_fetch)
    token = certificates.TrustToken(client_name="c", fingerprint="00" * 32, addresses=["[::1]:8443"], secret="s")
    fake = _on_fake(monkeypatch, tmp_path)
    with pytest.raises(certificates.FingerprintMismatch):
        await certificates.enrol(token.encode(), client_cert="c", client_key="k")
    assert fake.calls == []


def test_token_roundtrip_and_addresses() -> None:
    from app.lxd.certificates import TrustToken, _split_address

    t = TrustToken(client_name="n", fingerprint="ab", addresses=["127.0.0.1:8443"], secret="x")
    assert TrustToken.decode(t.encode()) == t
    assert TrustToken.decode(t.encode().rstrip("=")).secret == "x"
    assert _split_address("[fd00::1]:9443") == ("fd00::1", 9443)
    assert _split_address("10.0.0.1") == ("10.0.0.1", 8443)
    assert _split_address("https://host:1234") == ("host", 1234)


# ---------------------------------------------------------------------------------------------- sync vs async


@pytest.mark.parametrize("async_answer", [False, True], ids=["lxd-5.0-sync", "lxd-6.6-async"])
async def test_profile_storage_network_updates_sync_or_async(fake_client: Client, fake_lxd: FakeLXD,
                                                              async_answer: bool) -> None:
    f = fake_lxd
    calls = {
        ("PUT", "/1.0/profiles/p"): lambda: fake_client.profiles.update("p", {"config": {}}, etag="e1"),
        ("PATCH", "/1.0/storage-pools/d/volumes/custom/v"): lambda: fake_client.storage.patch_volume("d", "v", {}),
        ("DELETE", "/1.0/networks/n"): lambda: fake_client.networks.delete("n"),
        ("DELETE", "/1.0/projects/x"): lambda: fake_client.projects.delete("x"),
    }
    for i, ((method, path), call) in enumerate(calls.items()):
        op_id = f"op-{i}"
        f.on(method, path, async_op(op_id) if async_answer else sync(None))
        f.on("GET", f"/1.0/operations/{op_id}", sync(op_state(op_id, 200)))
        op = await asyncio.wait_for(call(), 5)
        assert op.done and op.state.status_code == 200
        assert f.requests(method, path)[-1].params["project"] == "default"
    put = f.requests("PUT", "/1.0/profiles/p")[-1]
    assert put.headers["if-match"] == '"e1"'


async def test_async_failure_with_already_exists_is_a_conflict(fake_client: Client, fake_lxd: FakeLXD) -> None:
    fake_lxd.on("POST", "/1.0/profiles", async_op("op-f"))
    fake_lxd.on("GET", "/1.0/operations/op-f", sync(op_state("op-f", 400, err="The profile already exists")))
    with pytest.raises(OperationConflict) as info:
        await asyncio.wait_for(fake_client.profiles.create("p"), 5)
    assert isinstance(info.value, Conflict)


async def test_lxd_50_quirks_surface_as_conflict_and_precondition(fake_client: Client, fake_lxd: FakeLXD) -> None:
    f = fake_lxd
    f.on("POST", "/1.0/profiles", error('Error inserting "p" into database: The profile already exists', 500))
    f.on("DELETE", "/1.0/profiles/p", error("Profile is currently in use", 500))
    f.on("POST", "/1.0/networks", error("The network already exists", 400))
    f.on("PUT", "/1.0/profiles/p", error("ETag doesn't match: a vs b", 412))
    with pytest.raises(Conflict):
        await fake_client.profiles.create("p")
    with pytest.raises(Conflict):
        await fake_client.profiles.delete("p")
    with pytest.raises(Conflict):
        await fake_client.networks.create("n")
    with pytest.raises(PreconditionFailed):
        await fake_client.profiles.update("p", {}, etag="b")


async def test_copy_adds_the_alias_lxd_50_left_out(fake_client: Client, fake_lxd: FakeLXD) -> None:
    fp = "ef" * 32
    f = fake_lxd
    f.on("POST", "/1.0/images", async_op("op-c"))
    f.on("GET", "/1.0/operations/op-c", sync(op_state("op-c", 200, fingerprint=fp)))
    f.on("GET", "/1.0/images/aliases/a/b", error("not found", 404))  # the path as LXD decodes it (a%2Fb)
    f.on("GET", "/1.0/images/aliases/moved", sync({"name": "moved", "target": "00" * 32}))
    f.on("POST", "/1.0/images/aliases", sync(None, status=201))
    f.on("PUT", "/1.0/images/aliases/moved", sync(None))
    f.on("GET", f"/1.0/images/{fp}", sync({"fingerprint": fp}))
    await asyncio.wait_for(fake_client.images.copy(server="https://x", fingerprint=fp, aliases=["a/b", "moved"]), 5)
    assert f.requests("POST", "/1.0/images/aliases")[-1].body == {"name": "a/b", "target": fp, "description": ""}
    assert f.requests("PUT", "/1.0/images/aliases/moved")[-1].body["target"] == fp


# ---------------------------------------------------------------------------------------------- projects


async def test_with_project_shares_transport_and_events(fake_client: Client, fake_lxd: FakeLXD) -> None:
    fake_lxd.on("POST", "/1.0/profiles", sync(None, status=201))
    fake_lxd.on("GET", "/1.0/profiles/p", sync({"name": "p"}))
    other = fake_client.with_project("blue")
    assert other.transport is fake_client.transport and other.server is fake_client.server
    await other.profiles.create("p")
    assert fake_lxd.requests("POST", "/1.0/profiles")[-1].params["project"] == "blue"
    await fake_client.profiles.create("p", project="green")
    assert fake_lxd.requests("POST", "/1.0/profiles")[-1].params["project"] == "green"
    assert other.events.bus() is fake_client.events.bus("blue")
    assert fake_client.events.bus() is other.events.bus("default")
    nested = other.with_project("red")
    await nested.aclose()
    await other.aclose()
    await fake_client.profiles.create("p")
    assert fake_lxd.requests("POST", "/1.0/profiles")[-1].params["project"] == "default"


# ---------------------------------------------------------------------------------------------- multipart export


async def test_split_multipart_streams_parts_across_any_chunking() -> None:
    boundary = "b0undary"
    meta, root = b"M" * 1000 + b"\r\n--b0und", bytes(random.randbytes(50_000))
    raw = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"; filename=\"meta.tar.xz\"\r\n"
           "Content-Type: application/octet-stream\r\n\r\n").encode() + meta + (
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"rootfs\"; filename=\"root.squashfs\"\r\n\r\n"
    ).encode() + root + f"\r\n--{boundary}--\r\n".encode()
    for size in (1, 7, 100, 4096, len(raw)):
        async def chunks(size: int = size) -> AsyncIterator[bytes]:
            for i in range(0, len(raw), size):
                yield raw[i:i + size]

        parts: dict[tuple[str, str], bytearray] = {}
        async for name, filename, data in split_multipart(chunks(), boundary):
            parts.setdefault((name, filename), bytearray()).extend(data)
        assert parts == {("metadata", "meta.tar.xz"): bytearray(meta), ("rootfs", "root.squashfs"): bytearray(root)}


def _export(parts: Callable[[], AsyncIterator[bytes]]) -> httpx.Response:
    return httpx.Response(200, headers={"Content-Type": "multipart/form-data; boundary=exp"}, content=parts())


async def test_an_export_with_a_200_mib_part_header_is_refused_at_once(fake_client: Client, fake_lxd: FakeLXD,
                                                                       tmp_path: Path) -> None:
    sent = [0]

    async def bomb() -> AsyncIterator[bytes]:
        yield b'--exp\r\nContent-Disposition: form-data; name="metadata"; filename="m.tar"\r\nX-Padding: '
        for _ in range(200):
            sent[0] += 1
            yield b"a" * 2**20

    fake_lxd.on("GET", "/1.0/images/ab/export", lambda _: _export(bomb))
    with pytest.raises(LXDError, match=r"headers are larger|header size"):
        await fake_client.images.export_to("ab", tmp_path / "out")
    assert sent[0] <= 1  # refused in the first MiB, not after reading (and holding) the whole header


async def test_an_export_with_too_many_parts_or_a_path_for_a_name_is_refused(fake_client: Client, fake_lxd: FakeLXD,
                                                                            tmp_path: Path) -> None:
    def body(*names: str) -> Callable[[], AsyncIterator[bytes]]:
        async def parts() -> AsyncIterator[bytes]:
            for name in names:
                yield f'--exp\r\nContent-Disposition: form-data; name="{name}"\r\n\r\ndata\r\n'.encode()
            yield b"--exp--\r\n"
        return parts

    def export(answer: Callable[[Call], httpx.Response]) -> None:
        fake_lxd.on("GET", "/1.0/images/ab/export", answer)

    export(lambda _: _export(body(*(f"p{i}" for i in range(1000)))))
    with pytest.raises(LXDError, match="more than 4 parts"):
        await fake_client.images.export_to("ab", tmp_path / "many")
    assert len(list((tmp_path / "many").iterdir())) <= 4

    export(lambda _: _export(body("metadata", "../../escaped")))
    files = await fake_client.images.export_to("ab", tmp_path / "out")
    assert files == [tmp_path / "out" / "metadata", tmp_path / "out" / "escaped"]
    assert not (tmp_path / "escaped").exists() and (tmp_path / "out" / "escaped").read_bytes() == b"data"

    export(lambda _: _export(body("..")))
    with pytest.raises(LXDError, match="no usable file name"):
        await fake_client.images.export_to("ab", tmp_path / "dots")

    async def cut() -> AsyncIterator[bytes]:
        yield b'--exp\r\nContent-Disposition: form-data; name="metadata"\r\n\r\npartial'

    export(lambda _: _export(cut))
    with pytest.raises(LXDError, match="ended before its closing boundary"):
        await fake_client.images.export_to("ab", tmp_path / "cut")


async def test_split_multipart_takes_its_limits_as_arguments() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="metadata"\r\nX-A: ' + b"a" * 3000 + b"\r\n\r\nx\r\n--b--"

    assert [p async for p in split_multipart(body(), "b", max_part_header_bytes=4096)] == [("metadata", "", b"x")]
    with pytest.raises(MultipartError):
        _ = [p async for p in split_multipart(body(), "b", max_part_header_bytes=2048)]
    with pytest.raises(MultipartError, match="boundary"):
        _ = [p async for p in split_multipart(body(), "b" * 300)]
