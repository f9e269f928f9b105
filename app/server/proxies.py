"""Proxy settings for LXD's own downloads (`core.proxy_http`, `core.proxy_https`, `core.proxy_ignore_hosts`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

PROXY_HTTP_KEY = "core.proxy_http"
PROXY_HTTPS_KEY = "core.proxy_https"
PROXY_IGNORE_HOSTS_KEY = "core.proxy_ignore_hosts"


@dataclass(frozen=True)
class ProxySettings:
    http: str = ""
    https: str = ""
    ftp: str = ""
    no_proxy: str = ""


def _env(env: Mapping[str, str], name: str) -> str:
    return env.get(name) or env.get(name.upper()) or ""


def detect_proxies(env: Mapping[str, str] | None = None) -> ProxySettings:
    """Proxies from `http_proxy`, `https_proxy`, `ftp_proxy`, `no_proxy` (the upper-case name when empty)."""
    env = os.environ if env is None else env
    return ProxySettings(http=_env(env, "http_proxy"), https=_env(env, "https_proxy"), ftp=_env(env, "ftp_proxy"),
                         no_proxy=_env(env, "no_proxy"))


def proxy_config(http: str | None = None, https: str | None = None, no_proxy: str | None = None,
                 env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The three LXD proxy keys, always all of them (empty clears one); a value not given comes from `env`."""
    detected = detect_proxies(env)
    return {
        PROXY_HTTP_KEY: detected.http if http is None else http,
        PROXY_HTTPS_KEY: detected.https if https is None else https,
        PROXY_IGNORE_HOSTS_KEY: detected.no_proxy if no_proxy is None else no_proxy,
    }
