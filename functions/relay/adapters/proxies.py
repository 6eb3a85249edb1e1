"""Where a request goes: straight to its host, or through the proxy the environment names for its scheme.

A module of its own so that the client (http.py) reads as the wire and this as the one rule of routing. The
variables are read on every request (a process may change them, as tests and the CLI's devstack do), but only the
four that bear on the scheme, so a request pays a few dictionary reads; what they say is decided by urllib's own
getproxies_environment and proxy_bypass_environment, once for each new combination of host and variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

# A client sees a handful of hosts; decisions past this many are forgotten (a long-lived CLI process changing proxies).
_KEPT = 64


@dataclass(frozen=True)
class Proxy:
    """A proxy as urllib3's ProxyManager takes it: its URL without credentials, and the header carrying them."""

    url: str
    credentials: str | None  # "user:password", unquoted, for a Proxy-Authorization: Basic header


class Proxies:
    """The proxy for each request, from the environment as it is when the request is made."""

    def __init__(self) -> None:
        self._decided: dict[tuple[str, str, tuple[str | None, ...]], Proxy | None] = {}

    def for_request(self, scheme: str, host: str) -> Proxy | None:
        """The proxy for scheme://host, or None to go straight there (none set, or NO_PROXY names the host)."""
        environ = os.environ
        upper = scheme.upper()
        seen = (
            environ.get(f"{scheme}_proxy"),
            environ.get(f"{upper}_PROXY"),
            environ.get("no_proxy"),
            environ.get("NO_PROXY"),
        )
        if seen[0] is None and seen[1] is None:
            return None  # nothing to route through, whatever NO_PROXY says: the common case costs no more
        key = (scheme, host, seen)
        try:
            return self._decided[key]
        except KeyError:
            pass
        if len(self._decided) >= _KEPT:
            self._decided.clear()
        proxy = self._decided[key] = _decide(scheme, host)
        return proxy


def _decide(scheme: str, host: str) -> Proxy | None:
    # urllib.request costs ~7 ms to import: only a process with a proxy set pays it.
    from urllib.request import getproxies_environment, proxy_bypass

    url = getproxies_environment().get(scheme)  # lower-case names first, HTTP_PROXY ignored under CGI, as urllib
    if not url or proxy_bypass(host):  # NO_PROXY, as urllib reads it from the environment
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")  # a bare host:port means an http:// proxy
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{scheme}_proxy: expected an http:// or https:// proxy URL, found {parts.scheme}://")
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    credentials = None
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return Proxy(f"{parts.scheme}://{netloc}", credentials)
