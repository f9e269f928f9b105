"""Finding OS images: alias names, the order sources are searched in, copy requests and progress messages.

The search itself (`find_image`) talks to LXD; `ImageSearch` holds its rules: the local alias first (a hit ends
the search without contacting any source), then each source in order, where an alias miss is silent but a source
that cannot be reached or an image that cannot be fetched becomes the error reported when nothing is found.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.http.errors import ProblemError
from app.lxd.servers import ServerSpec, is_not_found

DEFAULT_ALIAS_TEMPLATE = "juju/{series}/{arch}"
NO_MATCHING_IMAGE = "no matching image found"
IMAGE_TYPE_CONTAINER = "container"

UBUNTU_SERIES = (
    "precise", "quantal", "raring", "saucy", "trusty", "utopic", "vivid", "wily", "xenial", "yakkety", "zesty",
    "artful", "bionic", "cosmic", "disco", "eoan", "focal", "groovy", "hirsute", "impish", "jammy", "kinetic",
    "lunar", "mantic", "noble", "oracular", "plucky", "questing",
)
_OS_OF_SERIES: dict[str, str] = {s: "ubuntu" for s in UBUNTU_SERIES} | {
    "centos7": "centos", "centos8": "centos", "centos9": "centos",
    "opensuseleap": "opensuse",
    "genericlinux": "genericlinux",
    "win2012": "windows", "win2012r2": "windows", "win2016": "windows", "win2019": "windows", "win10": "windows",
}
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")


class ImageError(ProblemError):
    """An image cannot be found or copied."""

    status = 404
    slug = "image-not-found"


class SeriesError(ImageError, ValueError):
    """A series that is unknown, or that has no image alias on the remote servers."""


class ImageNotFound(ImageError):
    """No source has the image."""


def alias_for(series: str, arch: str, template: str = DEFAULT_ALIAS_TEMPLATE) -> str:
    """The local alias an image of `series`/`arch` is cached under, e.g. `juju/jammy/amd64`."""
    return template.format(series=series, arch=arch)


def os_of_series(series: str) -> str:
    if not series:
        raise SeriesError('series "" not valid')
    try:
        return _OS_OF_SERIES[series]
    except KeyError:
        raise SeriesError(f'unknown OS for series: "{series}"') from None


def remote_aliases(series: str, arch: str) -> list[str]:
    """The aliases an image of `series`/`arch` has on the image servers (a list of exactly one)."""
    os_name = os_of_series(series)
    if os_name == "ubuntu":
        return [f"{series}/{arch}"]
    if os_name == "centos" and arch == "amd64" and series in ("centos7", "centos8"):
        return [f"centos/{series[-1]}/amd64"]
    if os_name == "opensuse" and arch == "amd64" and series == "opensuseleap":
        return ["opensuse/42.2/amd64"]
    raise SeriesError(f'series "{series}" not supported')


@dataclass(frozen=True)
class ImageSource:
    """A resolved image: its fingerprint and where it is (`server` None means the local store)."""

    fingerprint: str
    server: ServerSpec | None = None
    alias: str = ""
    certificate: str = ""
    secret: str = ""
    info: Mapping[str, Any] | None = None

    @property
    def local(self) -> bool:
        return self.server is None

    def create_source(self) -> dict[str, Any]:
        """The `source` of an instance create request for this image."""
        if self.server is None:
            return {"type": "image", "fingerprint": self.fingerprint}
        src: dict[str, Any] = {"type": "image", "mode": "pull", "server": self.server.host,
                               "protocol": self.server.protocol, "fingerprint": self.fingerprint}
        cert = self.certificate or (self.server.connection.server_cert if self.server.connection else "")
        if cert:
            src["certificate"] = cert
        if self.secret:
            src["secret"] = self.secret
        return src


class ImageSearch:
    """The rules of an image search; the caller does the LXD calls and reports each outcome here.

    Order of reports: `local_hit` (the search ends, no source is contacted) or `local_alias_missing` /
    `local_alias_failed`; then for each source in `sources`: `source_unreachable`, or `source_contacted` and per
    alias in `aliases` `alias_resolved` / `alias_missing`; when `target_for_source()` is set, `image_found` (the
    search ends) or `image_fetch_failed`. When nothing was found, `error()` is what to report.
    """

    def __init__(self, local_alias: str, aliases: Sequence[str], sources: Sequence[ServerSpec],
                 series: tuple[str, str] | None = None) -> None:
        self.local_alias = local_alias
        self.aliases = list(aliases)
        self.sources = list(sources)
        self.found: ImageSource | None = None
        self.contacted: list[str] = []
        self._series = series
        self._target = ""
        self._last_error: BaseException | None = None

    @classmethod
    def for_series(cls, series: str, arch: str, sources: Sequence[ServerSpec],
                   template: str = DEFAULT_ALIAS_TEMPLATE) -> ImageSearch:
        """A search for `series`/`arch`; the series' remote aliases are worked out when the local cache misses."""
        return cls(alias_for(series, arch, template), [], sources, series=(series, arch))

    @classmethod
    def for_alias(cls, alias: str, sources: Sequence[ServerSpec], local_alias: str | None = None) -> ImageSearch:
        """A search for an image known as `alias` on the sources, cached locally as `local_alias` (default: same)."""
        return cls(local_alias or alias, [alias], sources)

    @property
    def done(self) -> bool:
        return self.found is not None

    def local_hit(self, fingerprint: str, info: Mapping[str, Any] | None = None) -> ImageSource:
        """The local alias and its image exist: the search ends, no source is contacted."""
        self.found = ImageSource(fingerprint=fingerprint, alias=self.local_alias, info=info)
        return self.found

    def local_alias_missing(self) -> None:
        """The local alias does not exist (or its image could not be read): search the sources.

        For a series search, an unknown or unsupported series is raised here, after the local check.
        """
        if self._series is not None:
            self.aliases = remote_aliases(*self._series)

    def local_alias_failed(self, error: BaseException) -> None:
        """The local alias lookup failed: "not found" is a miss, anything else is raised."""
        if not is_not_found(error):
            raise error
        self.local_alias_missing()

    def source_unreachable(self, source: ServerSpec, error: BaseException) -> None:
        self.contacted.append(source.name or source.host)
        self._last_error = error
        self._target = ""

    def source_contacted(self, source: ServerSpec) -> None:
        self.contacted.append(source.name or source.host)
        self._target = ""

    def alias_resolved(self, target: str) -> None:
        if target and not self._target:
            self._target = target

    def alias_missing(self, error: BaseException | None = None) -> None:
        """A source lacks the alias (or the lookup failed): no effect on the error reported."""

    def target_for_source(self) -> str:
        """The fingerprint to fetch from the current source, or "" when none of its aliases resolved."""
        return self._target

    def image_found(self, source: ServerSpec, info: Mapping[str, Any]) -> ImageSource:
        cert = source.connection.server_cert if source.connection else ""
        self.found = ImageSource(fingerprint=info.get("fingerprint") or self._target, server=source,
                                 alias=self.aliases[0] if self.aliases else "", certificate=cert, info=info)
        return self.found

    def image_fetch_failed(self, source: ServerSpec, error: BaseException) -> None:
        self._last_error = error

    def error(self) -> BaseException:
        """What to report when no source had the image: the last connection or fetch error, else "not found"."""
        return self._last_error or ImageNotFound(NO_MATCHING_IMAGE)

    def copy_aliases(self) -> list[str]:
        return [self.local_alias]

    def copied(self) -> ImageSource:
        """After a successful copy, the image is in the local store under the local alias."""
        if self.found is None:
            raise ImageError("nothing was found to copy")
        self.found = ImageSource(fingerprint=self.found.fingerprint, alias=self.local_alias, info=self.found.info)
        return self.found


@dataclass(frozen=True)
class ImageProgress:
    percent: int | None
    message: str


def image_progress(metadata: Mapping[str, Any] | None) -> ImageProgress | None:
    """"Retrieving image: N%" from an LXD operation's metadata; None when it carries no progress.

    Structured `progress.percent` wins; then the `fs_progress` or `download_progress` text, reduced to its
    percentage when it has one and passed on as it is otherwise.
    """
    if not metadata:
        return None
    progress = metadata.get("progress")
    if isinstance(progress, Mapping) and progress.get("percent") not in (None, ""):
        try:
            pct = int(float(progress["percent"]))
        except (TypeError, ValueError):
            pct = None
        if pct is not None:
            return ImageProgress(pct, f"Retrieving image: {pct}%")
    for key in ("fs_progress", "download_progress"):
        text = metadata.get(key)
        if text:
            m = _PERCENT.search(str(text))
            if m:
                pct = int(float(m.group(1)))
                return ImageProgress(pct, f"Retrieving image: {pct}%")
            return ImageProgress(None, f"Retrieving image: {text}")
    return None


def acquisition_error(error: BaseException) -> ImageError:
    """The error of a container create whose image could not be acquired."""
    return ImageError(f"acquiring LXD image: {error}")
