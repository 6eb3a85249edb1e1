"""Where steps may connect: public addresses only, unless the deployment's policy names a private host or range.

A host is checked after DNS resolution, every address it resolves to, and the connection then dials the very
address that was checked (resolving again would let a rebinding DNS server answer differently the second time).
`Egress.session()` and `Egress.pool_manager()` do that for requests and urllib3; SDKs that dial out themselves get
`Egress.check(url)` before their client is built, which leaves them that rebinding gap.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import ssl
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection

from pipelines.steps.errors import StepError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]

# Special-purpose ranges no step may reach unless the policy names them (IANA's special-purpose registries).
# Explicit rather than only `ipaddress`' is_* flags, whose tables have changed between CPython releases.
_REFUSED: tuple[tuple[Network, str], ...] = tuple(
    (ipaddress.ip_network(cidr), reason)
    for cidr, reason in (
        ("0.0.0.0/8", "'this network' (0.0.0.0/8)"),
        ("10.0.0.0/8", "private (RFC 1918)"),
        ("100.64.0.0/10", "shared address space (CGNAT, 100.64.0.0/10)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (where cloud metadata servers answer)"),
        ("172.16.0.0/12", "private (RFC 1918)"),
        ("192.168.0.0/16", "private (RFC 1918)"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved (240.0.0.0/4, broadcast included)"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("64:ff9b:1::/48", "local-use NAT64 (RFC 8215)"),
        ("2001::/32", "Teredo tunnel"),
        ("fc00::/7", "unique local (private)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local (deprecated)"),
        ("ff00::/8", "multicast"),
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Names that mean "inside": cloud metadata servers, cluster services, this machine. Caught by their addresses too
# once resolved; refused by name as well, so that an answer from a DNS server other than the cluster's changes nothing.
_REFUSED_NAMES = frozenset({"localhost", "metadata", "metadata.google.internal"})
_REFUSED_SUFFIXES = (".localhost", ".internal", ".svc", ".cluster.local", ".local")


class EgressError(StepError):
    """A connection the egress rule refuses: the host, the address and the rule, in the message."""

    def __init__(self, message: str) -> None:
        super().__init__(403, message)


def classify(address: str | Address) -> str | None:
    """Why no step may connect to `address` (None: it is public).

    An IPv4 address embedded in IPv6 (mapped ::ffff:a.b.c.d, NAT64 64:ff9b::/96, 6to4 2002::/16) is judged as
    that IPv4 address: the packets go there.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    inner = _embedded(ip)
    if inner is not None:
        reason = classify(inner)
        return f"{reason} (embedded in {ip})" if reason else None
    for network, reason in _REFUSED:
        if ip in network:
            return reason
    if ip.is_multicast:
        return "multicast"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "special-purpose (not globally routable)"
    return None


def _embedded(ip: Address) -> ipaddress.IPv4Address | None:
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def status_line(status: int) -> str:
    """What of a remote service's error answer goes into messages and records: `HTTP 403 Forbidden`.

    The status code and the standard phrase for it, never the server's own words: not its body, and not its reason
    phrase either (careless servers echo tokens back in both).
    """
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP {status} {phrase}".rstrip()


def client_failure(exc: BaseException) -> str:
    """What of a client library's failure goes into messages and records: its type, and the TLS verdict when one
    is behind it (`SSLError (CERTIFICATE_VERIFY_FAILED)`).

    Not its text: requests, urllib3 and httpx quote the URL they were at, a redirect's Location among them, which
    is the server's word (careless servers put tokens there).
    """
    seen: set[int] = set()
    pending: list[object] = [exc]
    while pending and len(seen) < 20:
        item = pending.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ssl.SSLError) and isinstance(item.reason, str) and item.reason.isupper():
            return f"{type(exc).__name__} ({item.reason})"
        pending += [*item.args, item.__cause__, item.__context__, getattr(item, "reason", None)]
    return type(exc).__name__


def system_resolver(host: str, port: int) -> list[str]:
    """Every address (A and AAAA) `host` resolves to, in the order the system would try them."""
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


@dataclass(frozen=True)
class Target:
    """A host, its port, and the addresses it may be reached at (each one checked)."""

    host: str
    port: int
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class Egress:
    """The egress rule of one deployment: public addresses, plus what `allow_private` names.

    `allow_private` holds exact host names (whatever they resolve to is allowed: the policy trusts their DNS) and
    CIDRs (addresses in them are allowed, whatever name led there). `resolver` is a seam for tests.
    """

    allow_private: tuple[str, ...] = ()
    resolver: Resolver = field(default=system_resolver, compare=False, repr=False)
    _names: frozenset[str] = field(init=False, repr=False, compare=False)
    _networks: tuple[Network, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names, networks = set(), []
        for entry in self.allow_private:
            try:
                networks.append(ipaddress.ip_network(entry))
                continue
            except ValueError as exc:
                if "/" in entry or _is_ip(entry.strip("[]")):
                    raise ValueError(f"egress.allow_private: expected a CIDR, found {entry!r}: {exc}") from None
            name = _normal(entry)
            if not name or not all(part and part.replace("-", "").isalnum() for part in name.split(".")):
                raise ValueError(f"egress.allow_private: expected host names and CIDRs, found {entry!r}")
            names.add(name)
        object.__setattr__(self, "_names", frozenset(names))
        object.__setattr__(self, "_networks", tuple(networks))

    @classmethod
    def loopback(cls, *, resolver: Resolver = system_resolver) -> Egress:
        """For local runs and tests, whose servers listen on this machine: loopback allowed, nothing else private."""
        return cls(("localhost", "127.0.0.0/8", "::1/128"), resolver=resolver)

    def resolve(self, url: str) -> Target:
        """The URL's host, resolved and checked: EgressError when refused, OSError when it does not resolve."""
        parts = urlsplit(url)
        if not parts.hostname:
            raise EgressError(f"expected a URL with a host, found {url.split('?', 1)[0]!r}")
        default = 443 if parts.scheme == "https" else 80
        return self._resolve(parts.hostname, parts.port or default)

    def check(self, url: str) -> None:
        """Before an SDK's client is built: refuse a URL whose host is refused.

        A name that does not resolve now is let through: the client fails to connect on its own.
        """
        with contextlib.suppress(OSError):
            self.resolve(url)

    def session(self) -> requests.Session:
        """A requests session whose every connection (redirects included) goes to a checked address, no proxy."""
        return self.mount(requests.Session())

    def mount(self, session: requests.Session) -> requests.Session:
        """Pin an existing session (an SDK's own) the way `session()` is."""
        # Proxies from the environment would make the connection for us, to an address never checked; trust_env
        # also brought ~/.netrc credentials. The CA bundle it brought is kept: a private CA stays trusted.
        session.trust_env = False
        session.proxies.clear()
        session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        adapter = _PinnedAdapter(self)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def pool_manager(self, **connection_pool_kw: Any) -> PoolManager:
        """A urllib3 PoolManager whose connections go to checked addresses only (for clients built on urllib3)."""
        return _PinnedPoolManager(self, **connection_pool_kw)

    def _resolve(self, host: str, port: int) -> Target:
        name = _normal(host)
        allowed_name = name in self._names
        # A name without a dot is completed by the resolver's search domains: a cluster's own services.
        inside = name in _REFUSED_NAMES or name.endswith(_REFUSED_SUFFIXES) or "." not in name
        if inside and not allowed_name and not _is_ip(name):
            raise EgressError(
                f"{name} names a private host (this machine, a cluster service or a metadata server): "
                f"refused unless the deployment's policy allows it"
            )
        addresses = (name,) if _is_ip(name) else tuple(self.resolver(name, port))
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, f"{name}: no address")
        for address in () if allowed_name else addresses:
            reason = self._refusal(address)
            if reason:
                what = f"{address} is" if address == name else f"{name} resolves to {address},"
                raise EgressError(f"{what} a {reason} address: refused unless the deployment's policy allows it")
        return Target(name, port, addresses)

    def _refusal(self, address: str) -> str | None:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return "not an IP"
        inner = _embedded(ip)
        if any(candidate in network for candidate in (ip, inner) if candidate for network in self._networks):
            return None
        return classify(ip)


STRICT = Egress()  # what deployed steps get unless the policy says more: public addresses only


def _normal(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# --- pinned connections for urllib3 and requests -------------------------------------------------------------


class _PinnedHTTPConnection(HTTPConnection):
    """Dials the checked addresses of its host; the Host header, TLS SNI and certificate check keep the name."""

    def __init__(self, *args: Any, egress: Egress, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._egress = egress

    def _new_conn(self) -> socket.socket:
        return _dial(self, self._egress)


class _PinnedHTTPSConnection(HTTPSConnection):
    def __init__(self, *args: Any, egress: Egress, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._egress = egress

    def _new_conn(self) -> socket.socket:
        return _dial(self, self._egress)


def _dial(conn: HTTPConnection, egress: Egress) -> socket.socket:
    """urllib3's own `_new_conn`, but to the addresses `egress` checked, never to a second DNS answer."""
    try:
        target = egress._resolve(conn.host, conn.port)
    except OSError as exc:  # no address: as urllib3 says it, a connection that never opened
        reason = exc if isinstance(exc, socket.gaierror) else socket.gaierror(str(exc))
        raise NameResolutionError(conn.host, conn, reason) from exc
    failure: OSError | None = None
    for address in target.addresses:
        try:
            sock = connection.create_connection(
                (address, conn.port), conn.timeout, source_address=conn.source_address,
                socket_options=conn.socket_options,
            )  # fmt: skip
        except OSError as exc:
            failure = exc
            continue
        sys.audit("http.client.connect", conn, conn.host, conn.port)
        return sock
    if isinstance(failure, TimeoutError):
        raise ConnectTimeoutError(conn, f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})")
    raise NewConnectionError(conn, f"Failed to establish a new connection: {failure}")


class _PinnedPoolManager(PoolManager):
    def __init__(self, egress: Egress, **connection_pool_kw: Any) -> None:
        super().__init__(**connection_pool_kw)
        self._egress = egress

    def _new_pool(
        self, scheme: str, host: str, port: int, request_context: dict[str, Any] | None = None
    ) -> HTTPConnectionPool:
        pool = super()._new_pool(scheme, host, port, request_context)
        pool.ConnectionCls = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
        pool.conn_kw["egress"] = self._egress
        return pool


class _PinnedAdapter(HTTPAdapter):
    def __init__(self, egress: Egress) -> None:
        self._egress = egress  # before super().__init__, which builds the pool manager
        super().__init__()

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        self._pool_connections, self._pool_maxsize, self._pool_block = connections, maxsize, block
        self.poolmanager = _PinnedPoolManager(
            self._egress, num_pools=connections, maxsize=maxsize, block=block, **pool_kwargs
        )

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        raise EgressError("a proxy would connect past the egress check: none is used")
