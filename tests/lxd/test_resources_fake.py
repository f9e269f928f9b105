"""Resource modules against a mocked LXD: answers the real LXD 5.0 cannot give (clusters, Incus, LXD 6.x's
asynchronous profile/storage/network calls) and the request shapes they rely on."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from app.lxd import Client, Conflict, LXDError, OperationConflict, PreconditionFailed
from app.lxd.images import MultipartError, split_multipart
from tests.fakes.lxd_respx import Fake, async_op, error, op_state, sync

# ---------------------------------------------------------------------------------------------- cluster / target


async def test_cluster_members_and_target_per_call(make_fake_client: Callable[..., Client], fake: Fake) -> None:
    r = fake.router
    r.get("/1.0/cluster/members").mock(return_value=sync([
        {"server_name": "m1", "url": "https://10.0.0.1:8443", "database": True, "status": "Online",
         "roles": ["database"], "groups": ["default"], "new_field": 1},
        {"server_name": "m2", "url": "https://10.0.0.2:8443", "status": "Evacuated", "roles": None}]))
    r.get("/1.0/cluster").mock(return_value=sync({"server_name": "m1", "enabled": True, "member_config": []}))
    pools = r.post("/1.0/storage-pools").mock(return_value=sync(None, 201))
    nets = r.post("/1.0/networks").mock(return_value=sync(None, 201))
    vols = r.post("/1.0/storage-pools/p/volumes/custom").mock(return_value=sync(None, 201))
    r.get("/1.0/storage-pools/p/volumes/custom/v").mock(return_value=sync({"name": "v", "location": "m2"}))
    images = r.post("/1.0/images").mock(return_value=async_op("op-img"))
    r.get("/1.0/operations/op-img").mock(return_value=sync(op_state("op-img", 200, fingerprint="ab" * 32)))
    r.get(f"/1.0/images/{'ab' * 32}").mock(return_value=sync({"fingerprint": "ab" * 32}))
    cfg = r.patch("/1.0").mock(return_value=sync(None))
    async with make_fake_client(clustered=True) as fake_client:
        members = await fake_client.cluster.members()
        assert [m.server_name for m in members] == ["m1", "m2"] and members[1].roles == []
        assert members[0].model_extra == {"new_field": 1}
        assert (await fake_client.cluster.info()).enabled
        for member in ("m1", "m2"):
            await fake_client.storage.create("p", "zfs", config={"source": f"/dev/{member}"}, target=member)
        await fake_client.storage.create("p", "zfs")
        assert [c.request.url.params.get("target") for c in pools.calls] == ["m1", "m2", None]
        await fake_client.networks.create("br", target="m1")
        assert nets.calls.last.request.url.params["target"] == "m1"
        vol = await fake_client.storage.create_volume("p", "v", target="@gpu")
        assert vols.calls.last.request.url.params["target"] == "@gpu" and vol.location == "m2"
        await fake_client.images.copy(server="https://img", alias="a", protocol="simplestreams", target="m2")
        req = images.calls.last.request
        assert req.url.params["target"] == "m2"
        assert json.loads(req.content)["source"]["protocol"] == "simplestreams"
        await fake_client.config.patch({"core.https_address": "10.0.0.2:8443"}, target="m2")
        assert cfg.calls.last.request.url.params["target"] == "m2"


async def test_members_of_a_standalone_server_is_empty(fake_client: Client, fake: Fake) -> None:
    fake.router.get("/1.0/cluster/members").mock(return_value=error(500, "Server is not clustered"))
    assert await fake_client.cluster.members() == []


# ---------------------------------------------------------------------------------------------- Incus


async def test_incus_upload_headers_and_protocol(make_fake_client: Callable[..., Client], fake: Fake,
                                                 tmp_path: Path) -> None:
    r = fake.router
    seen: dict[str, str] = {}

    async def upload(request: httpx.Request) -> httpx.Response:
        seen.update(request.headers)
        seen["body"] = str(len(await request.aread()))
        return async_op("op-up")

    r.post("/1.0/images").mock(side_effect=upload)
    r.get("/1.0/operations/op-up").mock(return_value=sync(op_state("op-up", 200, fingerprint="cd" * 32)))
    r.get(f"/1.0/images/{'cd' * 32}").mock(return_value=sync({"fingerprint": "cd" * 32}))
    path = tmp_path / "img.tar.gz"
    path.write_bytes(b"x" * 300_000)
    async with make_fake_client(server="incus") as fake_client:
        await fake_client.images.upload(path, public=True, properties={"os": "a b"}, profiles=["default", "x"])
        assert seen["x-incus-public"] == "1" and seen["x-incus-filename"] == "img.tar.gz"
        assert seen["x-incus-properties"] == "os=a+b"
        assert seen["x-incus-profiles"] == "profile=default&profile=x"
        assert not any(k.startswith("x-lxd-") for k in seen) and seen["body"] == "300000"
        assert await fake_client.server.image_protocol() == "incus"


async def test_split_upload_is_multipart_metadata_first(fake_client: Client, fake: Fake, tmp_path: Path) -> None:
    captured: list[bytes] = []

    async def upload(request: httpx.Request) -> httpx.Response:
        assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
        captured.append(await request.aread())
        return async_op("op-split")

    fake.router.post("/1.0/images").mock(side_effect=upload)
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


async def _enrol_body(monkeypatch: pytest.MonkeyPatch, extensions: list[str], server: str) -> dict:
    import respx

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
    with respx.mock(base_url="https://10.1.2.3:8443") as router:
        def info(request: httpx.Request) -> httpx.Response:
            md = {"api_extensions": extensions, "auth": "trusted" if state["trusted"] else "untrusted"}
            if state["trusted"]:
                md["environment"] = {"server": server}
            return sync(md)

        router.get("/1.0").mock(side_effect=info)

        def add(request: httpx.Request) -> httpx.Response:
            state["trusted"] = True
            return sync(None, 201)

        post = router.post("/1.0/certificates").mock(side_effect=add)
        result = await certificates.enrol(token.encode(), client_cert="c.crt", client_key="c.key")
        assert result.url == "https://10.1.2.3:8443" and not result.already_trusted
        return json.loads(post.calls.last.request.content)


async def test_enrol_uses_trust_token_where_the_server_has_the_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = await _enrol_body(monkeypatch, ["explicit_trust_token"], "lxd")
    assert "trust_token" in sent and "password" not in sent and sent["name"] == "c1"


async def test_enrol_on_lxd_50_and_incus_sends_password_and_trust_token(monkeypatch: pytest.MonkeyPatch) -> None:
    # Incus has no `explicit_trust_token` and reads only `trust_token`; LXD 5.0 reads only `password`
    sent = await _enrol_body(monkeypatch, ["certificate_token"], "incus")
    assert sent["trust_token"] == sent["password"] and sent["type"] == "client"


async def test_enrol_sends_nothing_to_a_server_with_another_certificate(monkeypatch: pytest.MonkeyPatch) -> None:
    import respx

    from app.lxd import certificates

    async def fake_fetch(address: str, *, timeout: float = 10.0) -> bytes:
        return b"someone else"

    monkeypatch.setattr(certificates, "fetch_server_certificate", fake_fetch)
    token = certificates.TrustToken(client_name="c", fingerprint="00" * 32, addresses=["[::1]:8443"], secret="s")
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        route = router.route()
        with pytest.raises(certificates.FingerprintMismatch):
            await certificates.enrol(token.encode(), client_cert="c", client_key="k")
        assert not route.called


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
async def test_profile_storage_network_updates_sync_or_async(fake_client: Client, fake: Fake,
                                                              async_answer: bool) -> None:
    r = fake.router
    calls = {
        ("PUT", "/1.0/profiles/p"): lambda: fake_client.profiles.update("p", {"config": {}}, etag="e1"),
        ("PATCH", "/1.0/storage-pools/d/volumes/custom/v"): lambda: fake_client.storage.patch_volume("d", "v", {}),
        ("DELETE", "/1.0/networks/n"): lambda: fake_client.networks.delete("n"),
        ("DELETE", "/1.0/projects/x"): lambda: fake_client.projects.delete("x"),
    }
    for i, ((method, path), call) in enumerate(calls.items()):
        op_id = f"op-{i}"
        route = r.route(method=method, path=path).mock(
            return_value=async_op(op_id) if async_answer else sync(None))
        r.get(f"/1.0/operations/{op_id}").mock(return_value=sync(op_state(op_id, 200)))
        op = await asyncio.wait_for(call(), 5)
        assert op.done and op.state.status_code == 200
        assert route.calls.last.request.url.params["project"] == "default"
    put = r.routes[1].calls.last.request  # the profile PUT
    assert put.headers["if-match"] == '"e1"'


async def test_async_failure_with_already_exists_is_a_conflict(fake_client: Client, fake: Fake) -> None:
    fake.router.post("/1.0/profiles").mock(return_value=async_op("op-f"))
    fake.router.get("/1.0/operations/op-f").mock(
        return_value=sync(op_state("op-f", 400, err="The profile already exists")))
    with pytest.raises(OperationConflict) as info:
        await asyncio.wait_for(fake_client.profiles.create("p"), 5)
    assert isinstance(info.value, Conflict)


async def test_lxd_50_quirks_surface_as_conflict_and_precondition(fake_client: Client, fake: Fake) -> None:
    r = fake.router
    r.post("/1.0/profiles").mock(return_value=error(500, 'Error inserting "p" into database: '
                                                         "The profile already exists"))
    r.delete("/1.0/profiles/p").mock(return_value=error(500, "Profile is currently in use"))
    r.post("/1.0/networks").mock(return_value=error(400, "The network already exists"))
    r.put("/1.0/profiles/p").mock(return_value=error(412, "ETag doesn't match: a vs b"))
    with pytest.raises(Conflict):
        await fake_client.profiles.create("p")
    with pytest.raises(Conflict):
        await fake_client.profiles.delete("p")
    with pytest.raises(Conflict):
        await fake_client.networks.create("n")
    with pytest.raises(PreconditionFailed):
        await fake_client.profiles.update("p", {}, etag="b")


async def test_copy_adds_the_alias_lxd_50_left_out(fake_client: Client, fake: Fake) -> None:
    fp = "ef" * 32
    r = fake.router
    r.post("/1.0/images").mock(return_value=async_op("op-c"))
    r.get("/1.0/operations/op-c").mock(return_value=sync(op_state("op-c", 200, fingerprint=fp)))
    r.get("/1.0/images/aliases/a%2Fb").mock(return_value=error(404, "not found"))
    r.get("/1.0/images/aliases/moved").mock(return_value=sync({"name": "moved", "target": "00" * 32}))
    created = r.post("/1.0/images/aliases").mock(return_value=sync(None, 201))
    moved = r.put("/1.0/images/aliases/moved").mock(return_value=sync(None))
    r.get(f"/1.0/images/{fp}").mock(return_value=sync({"fingerprint": fp}))
    await asyncio.wait_for(fake_client.images.copy(server="https://x", fingerprint=fp, aliases=["a/b", "moved"]), 5)
    assert json.loads(created.calls.last.request.content) == {"name": "a/b", "target": fp, "description": ""}
    assert json.loads(moved.calls.last.request.content)["target"] == fp


# ---------------------------------------------------------------------------------------------- projects


async def test_with_project_shares_transport_and_events(fake_client: Client, fake: Fake) -> None:
    route = fake.router.post("/1.0/profiles").mock(return_value=sync(None, 201))
    fake.router.get("/1.0/profiles/p").mock(return_value=sync({"name": "p"}))
    other = fake_client.with_project("blue")
    assert other.transport is fake_client.transport and other.server is fake_client.server
    await other.profiles.create("p")
    assert route.calls.last.request.url.params["project"] == "blue"
    await fake_client.profiles.create("p", project="green")
    assert route.calls.last.request.url.params["project"] == "green"
    assert other.events.bus() is fake_client.events.bus("blue")
    assert fake_client.events.bus() is other.events.bus("default")
    nested = other.with_project("red")
    await nested.aclose()
    await other.aclose()
    await fake_client.profiles.create("p")
    assert route.calls.last.request.url.params["project"] == "default"


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


async def test_an_export_with_a_200_mib_part_header_is_refused_at_once(fake_client: Client, fake: Fake,
                                                                       tmp_path: Path) -> None:
    sent = [0]

    async def bomb() -> AsyncIterator[bytes]:
        yield b'--exp\r\nContent-Disposition: form-data; name="metadata"; filename="m.tar"\r\nX-Padding: '
        for _ in range(200):
            sent[0] += 1
            yield b"a" * 2**20

    fake.router.get("/1.0/images/ab/export").mock(side_effect=lambda _: _export(bomb))
    with pytest.raises(LXDError, match=r"headers are larger|header size"):
        await fake_client.images.export_to("ab", tmp_path / "out")
    assert sent[0] <= 1  # refused in the first MiB, not after reading (and holding) the whole header


async def test_an_export_with_too_many_parts_or_a_path_for_a_name_is_refused(fake_client: Client, fake: Fake,
                                                                            tmp_path: Path) -> None:
    def body(*names: str) -> Callable[[], AsyncIterator[bytes]]:
        async def parts() -> AsyncIterator[bytes]:
            for name in names:
                yield f'--exp\r\nContent-Disposition: form-data; name="{name}"\r\n\r\ndata\r\n'.encode()
            yield b"--exp--\r\n"
        return parts

    route = fake.router.get("/1.0/images/ab/export")
    route.mock(side_effect=lambda _: _export(body(*(f"p{i}" for i in range(1000)))))
    with pytest.raises(LXDError, match="more than 4 parts"):
        await fake_client.images.export_to("ab", tmp_path / "many")
    assert len(list((tmp_path / "many").iterdir())) <= 4

    route.mock(side_effect=lambda _: _export(body("metadata", "../../escaped")))
    files = await fake_client.images.export_to("ab", tmp_path / "out")
    assert files == [tmp_path / "out" / "metadata", tmp_path / "out" / "escaped"]
    assert not (tmp_path / "escaped").exists() and (tmp_path / "out" / "escaped").read_bytes() == b"data"

    route.mock(side_effect=lambda _: _export(body("..")))
    with pytest.raises(LXDError, match="no usable file name"):
        await fake_client.images.export_to("ab", tmp_path / "dots")

    async def cut() -> AsyncIterator[bytes]:
        yield b'--exp\r\nContent-Disposition: form-data; name="metadata"\r\n\r\npartial'

    route.mock(side_effect=lambda _: _export(cut))
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
