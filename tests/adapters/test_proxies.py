"""Proxies as the environment names them, read on each request and decided by urllib's own rules."""

from __future__ import annotations

import pytest

from relay.adapters.proxies import Proxies, Proxy


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)


def test_each_request_sees_the_variables_as_they_are_then(monkeypatch: pytest.MonkeyPatch):
    proxies = Proxies()
    assert proxies.for_request("https", "storage.googleapis.com") is None
    monkeypatch.setenv("HTTPS_PROXY", "proxy.lab.test:3128")  # no scheme: an http:// proxy, as curl and requests
    assert proxies.for_request("https", "storage.googleapis.com") == Proxy("http://proxy.lab.test:3128", None)
    assert proxies.for_request("http", "kfp.lab.test") is None  # HTTPS_PROXY is for https:// only
    monkeypatch.setenv("https_proxy", "https://relay:p%40ss@proxy.lab.test")  # lower case wins, as in urllib
    assert proxies.for_request("https", "storage.googleapis.com") == Proxy("https://proxy.lab.test", "relay:p@ss")
    monkeypatch.setenv("NO_PROXY", ".googleapis.com,127.0.0.1")
    assert proxies.for_request("https", "storage.googleapis.com") is None
    assert proxies.for_request("https", "kfp.lab.test") == Proxy("https://proxy.lab.test", "relay:p@ss")


def test_a_proxy_of_another_kind_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("https_proxy", "socks5://proxy.lab.test:1080")
    with pytest.raises(ValueError, match=r"https_proxy: expected an http:// or https:// proxy URL, found socks5://"):
        Proxies().for_request("https", "storage.googleapis.com")
