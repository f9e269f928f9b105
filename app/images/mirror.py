"""What the read model keeps of images: the local store (`Image`) and the aliases (`Alias`), each as the API shows
it. Any image or alias event reads the (small) collections again in full; projects may share images with
`default` (`features.images` off), so an event in one project reads them again in every mirrored project."""

from __future__ import annotations

from app.images.schemas import AliasOut, ImageOut
from app.lxd.client import Client
from app.lxd.errors import NotFound
from app.mirror import MirrorKind, Shaped

IMAGES = "images"
ALIASES = "image-aliases"


async def _images(client: Client, remote: str) -> list[tuple[str, Shaped]]:
    return [(i.fingerprint, ImageOut.of(i).model_dump(mode="json")) for i in await client.images.list()]


async def _image(client: Client, remote: str, fingerprint: str) -> Shaped | None:
    try:
        return ImageOut.of(await client.images.get(fingerprint)).model_dump(mode="json")
    except NotFound:
        return None


async def _aliases(client: Client, remote: str) -> list[tuple[str, Shaped]]:
    return [(a.name, AliasOut.of(a).model_dump(mode="json")) for a in await client.images.aliases()]


async def _alias(client: Client, remote: str, name: str) -> Shaped | None:
    try:
        return AliasOut.of(await client.images.alias(name)).model_dump(mode="json")
    except NotFound:
        return None


IMAGE_KIND = MirrorKind(name=IMAGES, load_all=_images, load_one=_image, whole=True, shared=True)
ALIAS_KIND = MirrorKind(name=ALIASES, collection="images", load_all=_aliases, load_one=_alias, whole=True,
                        shared=True)


def touched_by(job_kind: str) -> list[tuple[str, list[str]]]:
    """What a job of `job_kind` may have changed: image jobs and publishing change images and aliases, and a create
    or a copy may bring an image into the local store (LXD keeps a copy of a remote image it created from)."""
    if job_kind.startswith("image.") or job_kind in ("container.publish", "container.create", "container.copy"):
        return [(IMAGES, []), (ALIASES, [])]
    return []
