"""Copy from a `simplestreams` remote: a small HTTPS image index served by the test itself, pinned by its
certificate, holding one unified (combined) busybox image."""

from __future__ import annotations

import contextlib
import hashlib
import json
import ssl
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import trustme

from app.locallxd.image import build_busybox_image
from app.lxd import Client, Progress
from app.lxd.images import Image
from tests.support.cleanup import unique


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def simplestreams_server(root: Path) -> Iterator[tuple[str, str]]:
    """Serve `root` over HTTPS on a free loopback port; yields (url, server certificate PEM)."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(ctx)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{httpd.server_address[1]}", leaf.cert_chain_pems[0].bytes().decode()
    finally:
        httpd.shutdown()
        httpd.server_close()


def write_index(root: Path, image: Path, alias: str) -> str:
    data = image.read_bytes()
    fp = hashlib.sha256(data).hexdigest()
    (root / "images").mkdir(parents=True)
    (root / "images" / "busybox.tar.gz").write_bytes(data)
    product = "busybox:static:amd64:default"
    (root / "streams" / "v1").mkdir(parents=True)
    (root / "streams" / "v1" / "index.json").write_text(json.dumps({
        "format": "index:1.0", "index": {"images": {
            "datatype": "image-downloads", "path": "streams/v1/images.json", "format": "products:1.0",
            "products": [product]}}}))
    (root / "streams" / "v1" / "images.json").write_text(json.dumps({
        "content_id": "images", "datatype": "image-downloads", "format": "products:1.0", "products": {product: {
            "aliases": alias, "arch": "amd64", "os": "busybox", "release": "static", "release_title": "static",
            "versions": {"20240101_0000": {"items": {"lxd_combined.tar.gz": {
                "ftype": "lxd_combined.tar.gz", "path": "images/busybox.tar.gz", "sha256": fp,
                "size": len(data)}}}}}}}))
    return fp


async def test_copy_from_a_simplestreams_remote(lxd: Client, tmp_path: Path) -> None:
    image = build_busybox_image(tmp_path / "ss.tar.gz", description=unique("ss"))
    remote_alias = unique("busybox/ss")
    fp = write_index(tmp_path / "www", image, remote_alias)
    seen: list[Progress] = []
    local_alias = unique("from/simplestreams")
    with simplestreams_server(tmp_path / "www") as (url, cert):
        img = await lxd.images.copy(server=url, alias=remote_alias, protocol="simplestreams", certificate=cert,
                                    aliases=[local_alias], on_progress=seen.append)
    assert isinstance(img, Image)
    try:
        assert img.fingerprint == fp and local_alias in img.alias_names
        assert img.update_source is not None and img.update_source.protocol == "simplestreams"
    finally:
        await lxd.images.delete(fp)
