"""Where the gateway is and who calls it: arguments first, then `LXDGW_URL` and `LXDGW_TOKEN`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"


def version() -> str:
    try:
        return metadata.version("lxd-gateway-client")
    except metadata.PackageNotFoundError:  # run from a source tree that was not installed
        return "0.0.0"


def user_agent() -> str:
    return f"lxd-gateway-client/{version()}"


@dataclass(frozen=True)
class Settings:
    base_url: str
    token: str | None

    @classmethod
    def resolve(cls, base_url: str | None = None, token: str | None = None) -> Settings:
        url = base_url or os.environ.get("LXDGW_URL") or DEFAULT_URL
        return cls(url.rstrip("/"), token or os.environ.get("LXDGW_TOKEN") or None)

    def headers(self) -> dict[str, str]:
        headers = {"User-Agent": user_agent(), "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers


def is_directory_listing(response: httpx.Response) -> bool:
    """A file download that answered a directory's listing (JSON) instead of a file's bytes."""
    return "x-file-type" not in response.headers and response.headers.get("content-type", "").startswith(
        "application/json")
