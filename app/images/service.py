"""Finding an OS image and copying it into the local image store.

`find_image` looks up the local alias first (a hit returns at once and no image server is contacted), then asks
each image server in order for the image's alias; the first server that has it wins. With `copy_local` the image
is pulled into the local store under the local alias (default `juju/<series>/<arch>`), reporting progress as
"Retrieving image: N%". The description of a local image is kept for a few seconds (`local_images`, dropped on
any image event), so that a burst of creates reads only the alias, not the image too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, cast

import httpx

from app.images.search import (
    DEFAULT_ALIAS_TEMPLATE,
    IMAGE_TYPE_CONTAINER,
    ImageError,
    ImageSearch,
    ImageSource,
    image_progress,
)
from app.jobs.progress import PROVISIONING, ProgressFn, report
from app.lxd.client import Client
from app.lxd.errors import LXDError, NotFound
from app.lxd.events import EventBus
from app.lxd.kept import Kept, kept_on
from app.lxd.models import Event, Progress
from app.lxd.operations import Operation
from app.lxd.pem import fingerprint_of_pem
from app.lxd.servers import Protocol as ServerProtocol
from app.lxd.servers import ServerSpec, image_remote_protocol

log = logging.getLogger(__name__)

ACQUIRING_MESSAGE = "acquiring LXD image"


class ImageCopyError(ImageError):
    """The copy into the local store failed; `source` is the image that was found on the image server."""

    status = 502
    slug = "image-copy-failed"

    def __init__(self, message: str, source: ImageSource | None = None) -> None:
        super().__init__(message)
        self.source = source


class ImageRemote(Protocol):
    """An image server as `find_image` uses it."""

    async def alias_target(self, alias: str, image_type: str = IMAGE_TYPE_CONTAINER) -> str | None:
        """The fingerprint `alias` points at (for images of `image_type`); None when there is no such alias."""
        ...

    async def image(self, fingerprint: str) -> dict[str, Any]:
        """The image's description (at least its `fingerprint`)."""
        ...

    async def aclose(self) -> None: ...


ImageRemoteConnector = Callable[[ServerSpec], Awaitable[ImageRemote]]


class LXDImageRemote:
    """A public LXD (or Incus) image server, reached over HTTPS without a client certificate.

    The server is pinned by the certificate in the spec when there is one (by its sha256), else it must present
    a certificate the system trusts (or the spec must say not to verify).
    """

    def __init__(self, spec: ServerSpec, *, timeout: float = 30.0) -> None:
        args = spec.connection
        cert = args.server_cert if args else ""
        self.spec = spec
        self.client = Client.https(spec.host, client_cert="", client_key="",
                                   server_fingerprint=fingerprint_of_pem(cert) if cert else None,
                                   insecure=bool(args and args.insecure_skip_verify),
                                   proxy=args.proxy if args else None, project=None, timeout=timeout)

    async def connect(self) -> LXDImageRemote:
        await self.client.server_info(refresh=True)
        return self

    async def alias_target(self, alias: str, image_type: str = IMAGE_TYPE_CONTAINER) -> str | None:
        try:
            entry = await self.client.images.alias(alias)
        except NotFound:
            return None
        if (entry.type or IMAGE_TYPE_CONTAINER) != image_type:
            return None
        return entry.target or None

    async def image(self, fingerprint: str) -> dict[str, Any]:
        image = await self.client.images.get(fingerprint)
        return image.model_dump(mode="json", by_alias=True, exclude_unset=True)

    async def aclose(self) -> None:
        await self.client.aclose()


_SS_FINGERPRINT_KEYS = ("combined_squashfs_sha256", "combined_rootxz_sha256", "combined_sha256")


class SimpleStreamsRemote:
    """A simplestreams image index (such as cloud-images.ubuntu.com/releases), read over HTTPS.

    An image's aliases are `<product alias>/<arch>` (`jammy/amd64`, `22.04/amd64`, ...); its fingerprint is the
    combined sha256 of the newest version, as LXD computes it.
    """

    def __init__(self, spec: ServerSpec, *, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        args = spec.connection
        verify: Any = not (args and args.insecure_skip_verify)
        self.spec = spec
        self.http = httpx.AsyncClient(base_url=spec.host.rstrip("/"), timeout=timeout, verify=verify,
                                      proxy=args.proxy if args else None, transport=transport, trust_env=False)
        self._images: dict[str, dict[str, Any]] | None = None
        self._aliases: dict[str, str] = {}

    async def connect(self) -> SimpleStreamsRemote:
        await self._load()
        return self

    async def _json(self, path: str) -> dict[str, Any]:
        r = await self.http.get(path)
        r.raise_for_status()
        return dict(r.json())

    async def _load(self) -> None:
        if self._images is not None:
            return
        index = await self._json("/streams/v1/index.json")
        images: dict[str, dict[str, Any]] = {}
        for entry in (index.get("index") or {}).values():
            if entry.get("datatype") != "image-downloads" or not entry.get("path"):
                continue
            products = await self._json("/" + str(entry["path"]).lstrip("/"))
            for product in (products.get("products") or {}).values():
                self._add_product(product, images)
        self._images = images

    def _add_product(self, product: Mapping[str, Any], images: dict[str, dict[str, Any]]) -> None:
        versions = product.get("versions") or {}
        arch = str(product.get("arch") or "")
        for version in sorted(versions, reverse=True):
            items = (versions[version] or {}).get("items") or {}
            fp = ""
            for item in items.values():
                for key in _SS_FINGERPRINT_KEYS:
                    if item.get(key):
                        fp = str(item[key])
                        break
                if fp:
                    break
            if not fp:
                continue
            names = [a.strip() for a in str(product.get("aliases") or "").split(",") if a.strip()]
            aliases = [f"{a}/{arch}" for a in names]
            images[fp] = {"fingerprint": fp, "architecture": arch, "type": IMAGE_TYPE_CONTAINER,
                          "aliases": [{"name": a} for a in aliases],
                          "properties": {"os": str(product.get("os") or ""),
                                         "release": str(product.get("release") or ""),
                                         "version": str(product.get("version") or ""), "serial": version}}
            for a in aliases:
                self._aliases.setdefault(a, fp)
            return

    async def alias_target(self, alias: str, image_type: str = IMAGE_TYPE_CONTAINER) -> str | None:
        await self._load()
        if image_type != IMAGE_TYPE_CONTAINER:
            return None
        return self._aliases.get(alias)

    async def image(self, fingerprint: str) -> dict[str, Any]:
        await self._load()
        assert self._images is not None
        found = [fp for fp in self._images if fp.startswith(fingerprint)] if fingerprint else []
        if len(found) != 1:
            raise NotFound("not found", status=404, path=f"{self.spec.host} {fingerprint}")
        return dict(self._images[found[0]])

    async def aclose(self) -> None:
        await self.http.aclose()


async def connect_image_remote(spec: ServerSpec) -> ImageRemote:
    """Reach an image server by its protocol (`lxd`/`incus`: a public server; `simplestreams`: an index).

    Any other protocol, including none, is refused: `bad protocol supplied for connection: <protocol>`.
    """
    protocol = image_remote_protocol(spec)
    remote: LXDImageRemote | SimpleStreamsRemote
    if protocol in (ServerProtocol.LXD, ServerProtocol.INCUS):
        remote = LXDImageRemote(spec)
    else:
        remote = SimpleStreamsRemote(spec)
    try:
        return await remote.connect()
    except BaseException:
        await remote.aclose()
        raise


LOCAL_KEEP = 5.0
"""Seconds the description of a local image is kept (for the creates of a burst) while no image event came."""


def _about_images(event: Event) -> bool:
    """An event after which an image's description may have changed: any image or alias lifecycle event (created,
    updated, renamed, deleted, refreshed...), any operation on images."""
    md = event.metadata
    if event.type == "lifecycle":
        return str(md.get("action", "")).startswith("image")
    return event.type == "operation" and bool((md.get("resources") or {}).get("images"))


def local_images(client: Client) -> tuple[EventBus, Kept[str, dict[str, Any]]] | None:
    """Descriptions of the client's local images by fingerprint, as last read, kept `LOCAL_KEEP` seconds while
    LXD's events stream carries no image event (`app.lxd.kept`). Which image a local alias names is always read
    from LXD (an alias moved behind the gateway's back is seen at once): only what a fingerprint names is kept.
    For the default project only (None for another: its images may be the default project's, whose events its
    stream does not carry)."""
    if (client.project or "default") != "default":
        return None
    bus = client.events.bus()
    return bus, kept_on(bus, "images", _about_images, LOCAL_KEEP)


async def _local_lookup(client: Client, search: ImageSearch) -> ImageSource | None:
    try:
        alias = await client.images.alias(search.local_alias)
    except LXDError as exc:
        search.local_alias_failed(exc)
        return None
    if alias.target:
        images = local_images(client)
        if images is not None and (info := images[1].get(images[0], alias.target)) is not None:
            return search.local_hit(alias.target, dict(info))
        begun = images[1].begin(images[0]) if images is not None else None
        try:
            image = await client.images.get(alias.target)
        except LXDError as exc:
            log.debug("local alias %s points at an unreadable image: %s", search.local_alias, exc)
        else:
            info = image.model_dump(mode="json")
            if images is not None:
                images[1].put(images[0], image.fingerprint, dict(info), begun)
            return search.local_hit(image.fingerprint, info)
    search.local_alias_missing()
    return None


async def _search_source(search: ImageSearch, source: ServerSpec, connect: ImageRemoteConnector) -> None:
    try:
        remote = await connect(source)
    except Exception as exc:
        log.info("image server %s cannot be reached: %s", source.name or source.host, exc)
        search.source_unreachable(source, exc)
        return
    try:
        search.source_contacted(source)
        for alias in search.aliases:
            try:
                target = await remote.alias_target(alias, IMAGE_TYPE_CONTAINER)
            except Exception as exc:
                search.alias_missing(exc)
                continue
            if target:
                search.alias_resolved(target)
                break
            search.alias_missing()
        target = search.target_for_source()
        if target:
            try:
                info = await remote.image(target)
            except Exception as exc:
                search.image_fetch_failed(source, exc)
            else:
                search.image_found(source, info)
    finally:
        with contextlib.suppress(Exception):
            await remote.aclose()


async def find_image(client: Client, *, series: str | None = None, alias: str | None = None,
                     arch: str | None = None, sources: Sequence[ServerSpec] = (), copy_local: bool = False,
                     progress: ProgressFn | None = None, alias_template: str = DEFAULT_ALIAS_TEMPLATE,
                     local_alias: str | None = None,
                     connect: ImageRemoteConnector = connect_image_remote) -> ImageSource:
    """Find an image by OS `series` (and `arch`, default the server's) or by image-server `alias`.

    1. The local alias (`alias_template` for a series, e.g. `juju/jammy/amd64`; for an alias `local_alias` or
       the alias itself): when it and its image exist, that image is returned and no image server is contacted,
       even with `copy_local`.
    2. Each source in order: the first whose alias resolves to an image it can describe wins; later sources are
       never contacted. An alias a source lacks is passed over silently; a source that cannot be reached or an
       image it cannot describe becomes the error raised when no source has the image.
    3. With `copy_local`, the image is pulled into the local store under the local alias (the alias is made
       to point at it even when the image was already there) and the result is the local image.
    """
    if (series is None) == (alias is None):
        raise ValueError("give exactly one of series or alias")
    await report(progress, PROVISIONING, None, ACQUIRING_MESSAGE)
    if series is not None:
        arch = arch or (await client.server_info()).host_arch
        search = ImageSearch.for_series(series, arch, sources, alias_template)
    else:
        assert alias is not None
        search = ImageSearch.for_alias(alias, sources, local_alias)
    local = await _local_lookup(client, search)
    if local is not None:
        return local
    for source in search.sources:
        await _search_source(search, source, connect)
        if search.done:
            break
    found = search.found
    if found is None:
        raise search.error()
    if not copy_local:
        return found
    await copy_remote_image(client, found, search.copy_aliases(), progress)
    return search.copied()


def _progress_metadata(p: Progress) -> dict[str, Any]:
    md: dict[str, Any] = {}
    if p.percent is not None:
        md["progress"] = {"percent": p.percent}
    if p.text:
        md[f"{p.stage or 'download'}_progress"] = p.text
    return md


async def copy_remote_image(client: Client, source: ImageSource, aliases: Sequence[str],
                            progress: ProgressFn | None = None, *, auto_update: bool = False,
                            timeout: float | None = None,
                            on_operation: Callable[[Operation], Awaitable[Any]] | None = None) -> str:
    """Pull `source` (an image found on an image server) into the local store under `aliases`; its fingerprint.

    Each progress update of the download is reported as "Retrieving image: N%". Every alias is made to point at
    the copied image, also when the image was already in the store under other aliases. A failed copy raises
    `ImageCopyError("image copy failed: <LXD's error>")`; cancelling the awaiting task cancels the download.
    `on_operation` is handed LXD's download operation as soon as it exists (to record it, or to cancel it).
    """
    if source.server is None:
        raise ImageError("the image is already local")
    src = source.create_source()
    op = cast(Operation, await client.images.copy(
        server=src["server"], fingerprint=src["fingerprint"], protocol=src["protocol"],
        certificate=src.get("certificate"), secret=src.get("secret"), aliases=list(aliases), auto_update=auto_update,
        wait=False))
    if on_operation is not None:
        await on_operation(op)

    async def follow() -> None:
        last = ""
        async for p in op.progress():
            update = image_progress(_progress_metadata(p))
            if update is not None and update.message != last:
                last = update.message
                await report(progress, PROVISIONING, update.percent, update.message)

    follower = asyncio.get_running_loop().create_task(follow()) if progress is not None else None
    try:
        await op.wait(timeout)
    except LXDError as exc:
        raise ImageCopyError(f"image copy failed: {getattr(exc, 'error', exc)}", source) from exc
    finally:
        if follower is not None:
            if not follower.done():
                with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                    await asyncio.wait_for(asyncio.shield(follower), 1.0)
            follower.cancel()
            with contextlib.suppress(BaseException):
                await follower
    fingerprint = str(op.metadata.get("fingerprint") or source.fingerprint)
    await client.images.ensure_aliases(fingerprint, list(aliases))
    return fingerprint
