"""The instance's HTTP client: urllib3's keep-alive pools, connections and TLS (one pool per host, proxies as the
environment says on each request, TLS verified), each request written and its answer read by relay.adapters.wire,
the timeouts and the size cap that bound every call, and what an answer means.

Each call is bounded as a whole: `Timeouts.total` (by default the connect and read timeouts together) covers
connecting, sending, the answer's head and its body, and a repeat; the head itself must come within the read
timeout, however it trickles in. The answer is refused, before its body is read, when its framing is ambiguous
(Content-Length with Transfer-Encoding: smuggling's shape, RFC 9112 6.3) or its length is no count of bytes (-1
would mean reading until the server closes), and read no further than `max_answer` bytes (32 MiB unless the call
says otherwise); relay.adapters.wire lists what else it refuses. A connection goes back to its pool only after an
answer framed cleanly.
Credentials in a URL (user:password@host) are refused, not sent as Basic auth: Relay's servers take tokens, a
password in a URL ends up in settings and messages, and over plain http it would cross the network readable.

CPU per loopback round trip (a GET with a 200-byte bearer token, a 2 KB JSON answer by Content-Length, from a
server in another process; medians of 3,000, interleaved; 2 CPUs shared with other work, load 6-10): this client
0.11 ms, where it took 0.33 ms through urllib3's urlopen and response objects; a requests.Session 0.56-0.58 ms.
Inside the function (in-process CPU of a whole warm event through functions-framework's test client, its four
requests to fake-gcs-server and the KFP fake in processes of their own; medians of 300 events, the two builds run
in turn): 1.9-2.0 ms against 2.8-3.6 ms. What urlopen cost besides: re-encoding the target, http.client parsing the
answer's head through the email package, urllib3's request and response objects, and a watchdog thread's lock and
wake-ups to bound the head (here the head's reads carry that bound themselves).
"""

from __future__ import annotations

import json as jsonlib
import os
import re
import ssl
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.client import HTTPException
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import urllib3
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import ClosedPoolError, HTTPError

from relay import waits
from relay.adapters import wire
from relay.adapters.proxies import Proxies, Proxy
from relay.errors import BackendBusyError

# A little over 3 s, a multiple of TCP's initial retransmission window (requests' documentation advises it).
CONNECT_TIMEOUT = 3.05
READ_TIMEOUT = 30.0
MAX_ANSWER = 32 * 1024 * 1024  # an answer's body, by default: Relay's own documents are at most a few MiB
# Idle connections kept per host: each thread the functions-framework serves events on may hold one.
_POOL_SIZE = 32
_HOSTS = 16  # pools kept per manager (the function talks to three or four hosts)
# Methods whose repetition changes nothing on the server: sent once more when the connection broke unanswered.
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_ENCODED_KEPT = 64  # documents EncodedOnce keeps: a catalog's pipelines
# What a request target may carry as it is: printable ASCII but the space; anything else is percent-encoded.
_UNSAFE = re.compile(r"[^!-~]")
_SAFE = "!#$%&'()*+,-./:;=?@[]_~"
_QUOTA = re.compile(r"RESOURCE_EXHAUSTED|quota exceeded|rate ?limit exceeded", re.IGNORECASE)
_GRPC_RESOURCE_EXHAUSTED = 8


@dataclass(frozen=True)
class Timeouts:
    """Connect and read timeouts of one request (the read timeout applies to each wait for bytes), and `total`,
    the whole call's (by default the two together: an answer trickling in never outlasts them)."""

    connect: float = CONNECT_TIMEOUT
    read: float = READ_TIMEOUT
    total: float | None = None

    def __post_init__(self) -> None:
        if min(self.connect, self.read, self.whole) <= 0:
            raise ValueError(f"timeouts: expected seconds above 0, found {self}")

    @property
    def whole(self) -> float:
        return self.connect + self.read if self.total is None else self.total

    @classmethod
    def within(cls, seconds: float) -> Timeouts:
        """Timeouts whose sum stays under `seconds`: a submit started before its deadline ends before the lease."""
        connect = min(CONNECT_TIMEOUT, seconds / 4)
        return cls(connect=connect, read=min(READ_TIMEOUT, seconds * 0.9 - connect))


DEFAULT_TIMEOUTS = Timeouts()


class NoAnswerError(Exception):
    """No answer came: the connection failed, timed out or broke. `sent` is False only when the request surely
    never left (no connection was made), so a non-idempotent request may be sent again at once."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class AnswerTooLargeError(NoAnswerError):
    """The answer's body is larger than the call takes; no more of it was read (callers treat it as no answer)."""


@dataclass(frozen=True)
class Response:
    """An answer, read whole; header names are lower-cased. Also a google.auth.transport.Response."""

    status: int
    headers: Mapping[str, str]
    data: bytes

    @property
    def ok(self) -> bool:
        return self.status < 400

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return jsonlib.loads(self.data)


@dataclass(frozen=True)
class Encoded:
    """JSON encoded before, sent as is where it stands among the members of a request's `json` object."""

    data: bytes


class EncodedOnce:
    """Encodes each document once: a catalog's specs are parsed once per instance and never change, and encoding
    the echo pipeline's (3 KB) takes 0.14 ms, as much as a round trip's own CPU; larger specs take more."""

    def __init__(self) -> None:
        self._done: dict[int, tuple[object, Encoded]] = {}  # by id(), the document kept so the id stays its own

    def __call__(self, document: object) -> Encoded:
        done = self._done.get(id(document))
        if done is None or done[0] is not document:
            if len(self._done) >= _ENCODED_KEPT:
                self._done.clear()  # documents made afresh per request (tests) never pile up
            done = self._done[id(document)] = (document, Encoded(jsonlib.dumps(document).encode()))
        return done[1]


def _json_bytes(value: Any) -> bytes:
    if isinstance(value, Mapping) and any(isinstance(member, Encoded) for member in value.values()):
        members = (
            jsonlib.dumps(name).encode() + b": " + (member.data if isinstance(member, Encoded) else _json_bytes(member))
            for name, member in value.items()
        )
        return b"{" + b", ".join(members) + b"}"
    return jsonlib.dumps(value).encode()


class HttpClient:
    """Thread-safe: urllib3's pools hand a connection to one request at a time.

    urllib3 pools the connections and makes them (TCP, TLS, tunnels through proxies); each request is written and
    its answer read by relay.adapters.wire on the connection's socket, and the connection goes back to its pool
    only when that answer was framed cleanly. REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE name the CA file (or folder) as
    they do for requests; else certifi's, else the system's. Nothing is retried or redirected but the one repeat.
    """

    def __init__(self, *, user_agent: str = "relay", max_answer: int = MAX_ANSWER) -> None:
        self._user_agent = user_agent
        self._max_answer = max_answer
        self._proxies = Proxies()
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None
        self._managers: dict[Proxy | None, urllib3.PoolManager] = {None: self._manager(None)}
        # The pool of each route, as its manager gave it: asking the manager costs more than a request's own work.
        self._pools: dict[tuple[Proxy | None, str, str, int], HTTPConnectionPool] = {}
        # A client dropped with connections still idle closes them, rather than leave it to the socket's finaliser.
        weakref.finalize(self, _clear, self._managers)

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        repeatable: bool | None = None,
        max_answer: int | None = None,
    ) -> Response:
        """Send one request and read its answer; NoAnswerError when none came (AnswerTooLargeError when its body
        passes `max_answer` bytes). A request that is `repeatable` (by default: an idempotent method) is sent once
        more when a kept connection broke before any answer (the server had closed it); any other is never sent
        twice."""
        deadline = time.monotonic() + timeouts.whole
        split = urlsplit(url)
        scheme = split.scheme
        if scheme not in ("http", "https"):
            raise ValueError(f"not an http(s) URL: {scheme}://{split.hostname}")
        if "@" in split.netloc:
            raise ValueError(f"{_redacted(url)}: credentials in a URL are refused; Relay sends tokens in headers")
        target = split.path or "/"
        query = split.query
        if params:
            query = f"{query}&{urlencode(params)}" if query else urlencode(params)
        if query:
            target = f"{target}?{query}"
        if _UNSAFE.search(target):
            target = quote(target, safe=_SAFE)  # as urllib3 sends it: spaces and what is not ASCII, percent-encoded
        sent = {"User-Agent": self._user_agent, **(headers or {})}
        if json is not None:
            body = _json_bytes(json)
            sent["Content-Type"] = "application/json"
        host, port = split.hostname or "", split.port or (443 if scheme == "https" else 80)
        proxy = self._proxies.for_request(scheme, host)
        if proxy is not None and scheme == "http":
            target = f"http://{split.netloc}{target}"  # a forwarding proxy takes the absolute URL
            sent.update(_proxy_headers(proxy))
        where = f"{method} {_redacted(url)}"
        try:
            head = wire.request_head(method, target, split.netloc, sent, body)
        except ValueError as exc:  # a header value (a token, a name) would smuggle in headers of its own
            raise ValueError(f"{where}: {exc}") from None
        if repeatable is None:
            repeatable = method in _IDEMPOTENT
        cap = self._max_answer if max_answer is None else max_answer
        while True:
            pool = self._pool(proxy, scheme, host, port)
            left = deadline - time.monotonic()
            if left <= 0:  # only before a repeat (Timeouts are positive): the first try took the call's time
                raise _no_answer(where, TimeoutError(), deadline, timeouts)
            try:
                conn: Any = pool._get_conn()  # an idle connection still open, else one to connect (its sock None)
            except ClosedPoolError:
                self._pools.clear()  # closed by close(), or by its manager making room for another host's
                continue
            kept = conn.sock is not None
            if not kept:
                _connect(conn, pool, proxy, scheme, host, port, min(timeouts.connect, left))
            try:
                wire.send(conn.sock, head, body, deadline=deadline)
                answer = wire.read_answer(conn.sock, method, read_timeout=timeouts.read, deadline=deadline, cap=cap)
            except BaseException as exc:
                conn.close()  # what is left of the answer is never read as the next one's
                pool._put_conn(None)  # its place in the pool, for a new connection
                if isinstance(exc, wire.BodyTooLargeError):
                    raise AnswerTooLargeError(f"{where}: {exc}", sent=True) from exc
                # A kept connection the server had closed: nothing reached its handler, but a request lost on the
                # way cannot be told from that, so only one that may be repeated goes again.
                if kept and repeatable and isinstance(exc, wire.UnansweredError):
                    repeatable = False  # once
                    continue
                if isinstance(exc, (OSError, ValueError)):
                    raise _no_answer(where, exc, deadline, timeouts) from exc
                raise
            if answer.reusable:
                pool._put_conn(conn)
            else:
                conn.close()
                pool._put_conn(None)
            return Response(answer.status, answer.headers, answer.data)

    def close(self) -> None:
        """Close the idle connections (those in use close when their request ends)."""
        self._pools.clear()
        _clear(self._managers)

    def _pool(self, proxy: Proxy | None, scheme: str, host: str, port: int) -> HTTPConnectionPool:
        key = (proxy, scheme, host, port)
        pool = self._pools.get(key)
        if pool is None:
            manager = self._managers.get(proxy)
            if manager is None:
                with self._lock:
                    manager = self._managers.get(proxy) or self._managers.setdefault(proxy, self._manager(proxy))
            tls = scheme == "https" or (proxy is not None and proxy.url.startswith("https:"))
            kwargs = {"ssl_context": self._tls_context()} if tls else None
            pool = self._pools[key] = manager.connection_from_host(host, port, scheme, pool_kwargs=kwargs)
        return pool

    def _manager(self, proxy: Proxy | None) -> urllib3.PoolManager:
        common: dict[str, Any] = {"num_pools": _HOSTS, "maxsize": _POOL_SIZE, "retries": False}
        if proxy is None:
            return urllib3.PoolManager(**common)
        tls = self._tls_context() if proxy.url.startswith("https:") else None
        return urllib3.ProxyManager(proxy.url, proxy_headers=_proxy_headers(proxy), proxy_ssl_context=tls, **common)

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            if not bundle:
                try:
                    import certifi

                    bundle = certifi.where()
                except ImportError:
                    bundle = None  # the system's store
            folder = bundle is not None and os.path.isdir(bundle)  # requests takes a folder of certificates too
            self._tls = ssl.create_default_context(cafile=None if folder else bundle, capath=bundle if folder else None)
        return self._tls


def _connect(
    conn: Any, pool: HTTPConnectionPool, proxy: Proxy | None, scheme: str, host: str, port: int, timeout: float
) -> None:
    """Connect a connection the pool made (or one the server closed while it was idle): TCP, the tunnel through an
    https request's proxy, TLS. Nothing was sent when this fails."""
    conn.timeout = timeout
    try:
        if proxy is not None and scheme == "https":
            # What urllib3's pool does before a new tunnelled connection's first request: CONNECT, then TLS.
            conn.set_tunnel(host, port, headers=_proxy_headers(proxy), scheme=proxy.url.split(":", 1)[0])
        conn.connect()
    except (HTTPError, OSError, ValueError, HTTPException) as exc:
        conn.close()
        pool._put_conn(None)
        raise NoAnswerError(f"{scheme}://{host}:{port}: no connection: {_describe(exc)}", sent=False) from exc


def _proxy_headers(proxy: Proxy) -> dict[str, str]:
    return urllib3.make_headers(proxy_basic_auth=proxy.credentials) if proxy.credentials else {}


def _no_answer(where: str, exc: BaseException, deadline: float, timeouts: Timeouts) -> NoAnswerError:
    """What broke a call that may have reached the server; a wait the call's deadline cut short says so."""
    if isinstance(exc, TimeoutError) and time.monotonic() >= deadline:
        return NoAnswerError(f"{where}: TimeoutError: no whole answer in the call's {timeouts.whole:g} s", sent=True)
    return NoAnswerError(f"{where}: {_describe(exc)}", sent=True)


def _clear(managers: Mapping[Any, urllib3.PoolManager]) -> None:
    for manager in list(managers.values()):
        manager.clear()


def _cause(exc: BaseException) -> BaseException | None:
    """What urllib3 wrapped, among its arguments or as its cause."""
    inner = [arg for arg in exc.args if isinstance(arg, BaseException)]
    return inner[-1] if inner else exc.__cause__ or exc.__context__


def _redacted(url: str) -> str:
    # Query strings may carry a token or a trigger's words, a URL's user part a password: messages name the place.
    place = url.split("?", 1)[0]
    scheme, _, rest = place.partition("://")
    netloc, slash, path = rest.partition("/")
    return f"{scheme}://{netloc.rpartition('@')[2]}{slash}{path}"


def _describe(exc: BaseException) -> str:
    """The innermost error, named: urllib3's wrappers repeat the pool and the URL around it."""
    while isinstance(exc, HTTPError) and (inner := _cause(exc)) is not None:
        exc = inner
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def error_detail(response: Response) -> str:
    """The message of a JSON error answer (Google's {"error": {...}} or grpc-gateway's), else the body's start."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return f"{error.get('status', '')} {error.get('message', '')}".strip()
        return str(body.get("message") or error or body)[:200]
    return str(body)[:200]


def refused_for_load(response: Response, detail: str) -> BackendBusyError | None:
    """A BackendBusyError when the server refused for load or quota, which creates nothing: a 429, or a 403 or 5xx
    whose body says RESOURCE_EXHAUSTED or that a quota was exceeded (some proxies answer 503 "Quota exceeded").
    A 400's body is never read for this: it may echo the trigger's own words."""
    status = response.status
    if status != 429 and status != 403 and status < 500:
        return None
    if status != 429 and not _QUOTA.search(response.text[:4096]) and _grpc_code(response) != _GRPC_RESOURCE_EXHAUSTED:
        return None
    return BackendBusyError(detail, retry_after(response))


def _grpc_code(response: Response) -> int | None:
    try:
        body = response.json()
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def retry_after(response: Response) -> float | None:
    """Seconds to wait: the Retry-After header (seconds or an HTTP date), or a google.rpc.RetryInfo detail."""
    header = waits.retry_after(response.headers.get("retry-after"), datetime.now(UTC))
    if header is not None:
        return header
    try:
        details = response.json()["error"]["details"]
    except (ValueError, KeyError, TypeError):
        return None
    for detail in details if isinstance(details, list) else []:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            return waits.seconds(delay[:-1])
    return None
