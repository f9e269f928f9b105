"""§12.2 proxy settings pushed to LXD."""

from __future__ import annotations

from app.server.proxies import ProxySettings, detect_proxies, proxy_config


def test_detect_proxies_lower_case_first_then_upper() -> None:
    env = {"http_proxy": "http://h", "HTTP_PROXY": "http://H", "HTTPS_PROXY": "http://S", "https_proxy": "",
           "NO_PROXY": "localhost", "ftp_proxy": "ftp://f"}
    assert detect_proxies(env) == ProxySettings(http="http://h", https="http://S", ftp="ftp://f", no_proxy="localhost")


def test_proxy_config_from_env_always_has_the_three_keys() -> None:
    env = {"http_proxy": "http://user@10.0.0.1", "https_proxy": "https://user@10.0.0.1", "no_proxy": "10.0.0.1,x"}
    assert proxy_config(env=env) == {"core.proxy_http": "http://user@10.0.0.1",
                                     "core.proxy_https": "https://user@10.0.0.1",
                                     "core.proxy_ignore_hosts": "10.0.0.1,x"}
    assert proxy_config(env={}) == {"core.proxy_http": "", "core.proxy_https": "", "core.proxy_ignore_hosts": ""}


def test_proxy_config_given_values_win_and_empty_clears() -> None:
    env = {"http_proxy": "http://env", "https_proxy": "http://env", "no_proxy": "env"}
    assert proxy_config(http="http://given", https="", env=env) == {
        "core.proxy_http": "http://given", "core.proxy_https": "", "core.proxy_ignore_hosts": "env"}
