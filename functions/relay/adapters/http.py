"""The instance's HTTP client (keep-alive connections, one small pool per host), the timeouts that bound every
call, and what an answer means.

CPU per round trip on loopback: requests ~1.5 ms (URL and request building), http.client ~0.34 ms (half of it
parsing headers with the email package), this client 0.15 ms: http.client connects (TLS, proxy tunnels), and the
request is written in one piece and its answer read here. The function sends four a launch.
"""

from __future__ import annotations

import base64
import http.client
import json as jsonlib
import os
import re
import select
import socket
import ssl
import threading
import urllib.request
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

from relay import waits
from relay.errors import BackendBusyError

# A little over 3 s, a multiple of TCP's initial retransmission window (requests' documentation advises it).
CONNECT_TIMEOUT = 3.05
READ_TIMEOUT = 30.0
# Idle connections kept per host: each thread the functions-framework serves events on may hold one.
_POOL_SIZE = 32
# Methods whose repetition changes nothing on the server: sent once more when a reused connection proved stale.
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})  # sent with a Content-Length even when empty
_MAX_LINE = 65536
_MAX_HEADERS = 200
_ENCODED_KEPT = 64  # documents EncodedOnce keeps: a catalog's pipelines
_QUOTA = re.compile(r"RESOURCE_EXHAUSTED|quota exceeded|rate ?limit exceeded", re.IGNORECASE)
_GRPC_RESOURCE_EXHAUSTED = 8


@dataclass(frozen=True)
class Timeouts:
    """Connect and read timeouts of one request (the read timeout applies to each socket read)."""

    connect: float = CONNECT_TIMEOUT
    read: float = READ_TIMEOUT

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


@dataclass(frozen=True)
class _Route:
    """Where connections for one scheme://host:port go: straight there, or through a proxy."""

    scheme: str
    host: str
    port: int
    proxy: tuple[str, int] | None = None
    proxy_headers: Mapping[str, str] | None = None


class HttpClient:
    """Thread-safe: a connection is used by one request at a time, and the pool's lock is never held across I/O.

    Proxy variables are read once per host (requests would read them on every request), and
    REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE name the CA file as they do for requests; else certifi's, else the system's.
    """

    def __init__(self, *, user_agent: str = "relay") -> None:
        self._proxies = urllib.request.getproxies()
        self._user_agent = user_agent
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
        self._routes: dict[tuple[str, str], _Route] = {}
        self._tls: ssl.SSLContext | None = None
        # A client dropped with connections still idle closes them, rather than leave it to the socket's finaliser.
        weakref.finalize(self, _close_all, self._idle)

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
    ) -> Response:
        """Send one request and read its answer; NoAnswerError when none came. A request that is `repeatable`
        (by default: an idempotent method) is sent once more on a new connection when a reused one turns out
        stale; any other is never sent twice."""
        split = urlsplit(url)
        target = split.path or "/"
        query = split.query
        if params:
            query = f"{query}&{urlencode(params)}" if query else urlencode(params)
        if query:
            target = f"{target}?{query}"
        sent_headers = {"User-Agent": self._user_agent, **(headers or {})}
        if json is not None:
            body = _json_bytes(json)
            sent_headers["Content-Type"] = "application/json"
        route = self._route(split.scheme, split.netloc)
        if route.proxy is not None and route.scheme == "http":
            target = f"http://{split.netloc}{target}"  # a plain-http proxy takes the absolute URL
            sent_headers.update(route.proxy_headers or {})
        if repeatable is None:
            repeatable = method in _IDEMPOTENT
        head = _request_head(method, target, split.netloc, sent_headers, body)
        message = head + body if body else head  # one write: the body never waits on Nagle's algorithm
        fresh = False
        while True:
            connection, reused = self._connection(route, timeouts, fresh=fresh)
            try:
                sock = connection.sock
                if sock is None:
                    raise http.client.NotConnected("the connection was closed")
                sock.sendall(message)
                response, keep = _read_answer(sock, method)
            except (OSError, ValueError, http.client.HTTPException) as exc:
                connection.close()
                # A kept connection the server had closed: nothing reached it if it answered not even a status
                # line, but that cannot be told from a request lost on the way, so only a repeatable one goes again.
                if reused and repeatable and not isinstance(exc, TimeoutError):
                    fresh = True  # once, on a new connection
                    continue
                raise NoAnswerError(f"{method} {_redacted(url)}: {_describe(exc)}", sent=True) from exc
            if keep:
                self._release(route, connection)
            else:
                connection.close()
            return response

    def close(self) -> None:
        """Close the idle connections (those in use close when their request ends)."""
        with self._lock:
            idle = dict(self._idle)
            self._idle.clear()
        _close_all(idle)

    def _route(self, scheme: str, netloc: str) -> _Route:
        key = (scheme, netloc)
        route = self._routes.get(key)
        if route is None:
            route = self._routes[key] = self._new_route(scheme, netloc)
        return route

    def _new_route(self, scheme: str, netloc: str) -> _Route:
        if scheme not in ("http", "https"):
            raise ValueError(f"not an http(s) URL: {scheme}://{netloc}")
        parsed = urlsplit(f"//{netloc}")
        host = parsed.hostname or ""
        port = parsed.port or (443 if scheme == "https" else 80)
        proxy_url = self._proxies.get(scheme)
        if not proxy_url or urllib.request.proxy_bypass(host):
            return _Route(scheme, host, port)
        proxy = urlsplit(proxy_url if "://" in proxy_url else f"http://{proxy_url}")
        if proxy.scheme != "http":
            raise ValueError(f"{scheme}_proxy: only http:// proxies are supported, found {proxy.scheme}://")
        auth = {}
        if proxy.username is not None:
            credentials = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
            auth["Proxy-Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
        return _Route(scheme, host, port, (proxy.hostname or "", proxy.port or 80), auth)

    def _connection(self, route: _Route, timeouts: Timeouts, *, fresh: bool) -> tuple[http.client.HTTPConnection, bool]:
        key = (route.scheme, route.host, route.port)
        with self._lock:
            pool = None if fresh else self._idle.get(key)
            while pool:
                connection = pool.pop()
                if connection.sock is not None and not _readable(connection.sock):
                    connection.sock.settimeout(timeouts.read)
                    return connection, True
                connection.close()  # closed by the server while idle (or sent something unasked): never reused
        connection = self._new_connection(route, timeouts.connect)
        try:
            connection.connect()
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            connection.close()
            where = f"{route.scheme}://{route.host}:{route.port}"
            raise NoAnswerError(f"{where}: no connection: {_describe(exc)}", sent=False) from exc
        if connection.sock is not None:
            # A request goes out in one write, but a large one in several segments: without this, Nagle's
            # algorithm may hold the last back until the server's delayed ACK (40 ms on Linux), as urllib3 avoids.
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection.sock.settimeout(timeouts.read)
        return connection, False

    def _new_connection(self, route: _Route, connect_timeout: float) -> http.client.HTTPConnection:
        host, port = route.proxy or (route.host, route.port)
        if route.scheme == "http":
            return http.client.HTTPConnection(host, port, timeout=connect_timeout)
        connection = http.client.HTTPSConnection(host, port, timeout=connect_timeout, context=self._tls_context())
        if route.proxy is not None:
            connection.set_tunnel(route.host, route.port, headers=dict(route.proxy_headers or {}))
        return connection

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

    def _release(self, route: _Route, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            pool = self._idle.setdefault((route.scheme, route.host, route.port), [])
            if len(pool) < _POOL_SIZE:
                pool.append(connection)
                return
        connection.close()


def _request_head(method: str, target: str, host: str, headers: Mapping[str, str], body: bytes | None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Accept-Encoding: identity"]
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    if body is not None or method in _WITH_BODY:
        lines.append(f"Content-Length: {len(body or b'')}")
    flat = "".join(lines)
    if "\n" in flat or "\r" in flat:
        # A header value (a token, a name) carrying a line break would smuggle in headers of its own.
        raise ValueError(f"{method} {target.split('?', 1)[0]}: a line break in the request line or a header")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _read_answer(sock: socket.socket, method: str) -> tuple[Response, bool]:
    """The answer on `sock`, read whole, and whether the connection may be kept for another request.

    http.client's own reading parses headers with the email package, the bulk of a request's CPU here; this reads
    what Relay's servers send: a status line, headers, and a body by Content-Length, chunks, or until close."""
    reader = sock.makefile("rb")
    try:
        while True:
            status_line = reader.readline(_MAX_LINE)
            if not status_line:
                raise http.client.RemoteDisconnected("the server closed the connection without an answer")
            version, _, rest = status_line.partition(b" ")
            if not version.startswith(b"HTTP/1.") or not rest[:3].isdigit():
                raise http.client.BadStatusLine(repr(status_line[:100]))
            status = int(rest[:3])
            headers = _read_headers(reader)
            if status >= 200:
                break  # a 1xx (100 Continue, 103 Early Hints) is followed by the answer itself
        keep = version == b"HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        if method == "HEAD" or status in (204, 304):
            data = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            data = _read_chunks(reader)
        elif "content-length" in headers:
            data = _read_exactly(reader, int(headers["content-length"]))
        else:
            data, keep = reader.read(), False  # the body ends where the connection does
        return Response(status, headers, data), keep
    finally:
        reader.close()  # the reader only: the socket stays open for the next request


def _read_headers(reader: Any) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(_MAX_HEADERS):
        line = reader.readline(_MAX_LINE)
        if line in (b"\r\n", b"\n"):
            return headers
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon:
            raise http.client.HTTPException(f"not a header line: {line[:100]!r}")
        name, value = name.strip().lower(), value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    raise http.client.HTTPException(f"more than {_MAX_HEADERS} header lines, or no end to them")


def _read_exactly(reader: Any, size: int) -> bytes:
    data: bytes = reader.read(size)
    if len(data) < size:
        raise http.client.IncompleteRead(data, size - len(data))
    return data


def _read_chunks(reader: Any) -> bytes:
    chunks: list[bytes] = []
    while True:
        size = int(reader.readline(_MAX_LINE).split(b";", 1)[0], 16)  # ValueError when it is not a chunk size
        if size == 0:
            _read_headers(reader)  # trailers, up to the blank line that ends the body
            return b"".join(chunks)
        chunks.append(_read_exactly(reader, size))
        reader.readline(_MAX_LINE)  # the CRLF after each chunk


def _close_all(idle: Mapping[Any, list[http.client.HTTPConnection]]) -> None:
    for pool in list(idle.values()):
        for connection in pool:
            connection.close()


def _readable(sock: Any) -> bool:
    """True when an idle connection has something to read: the server closed it (EOF) or broke protocol."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _redacted(url: str) -> str:
    # Query strings may carry a token or a trigger's words: messages name the place only.
    return url.split("?", 1)[0]


def _describe(exc: BaseException) -> str:
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
