"""A loopback HTTP server base: one thread, request recording and fault injection."""

from __future__ import annotations

import json
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Request:
    """One request as the server saw it; header names are lower-cased."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes = b""
    json: Any = None
    faulted: bool = False

    def param(self, name: str) -> str | None:
        """The first value of query parameter `name`, or None."""
        values = self.query.get(name)
        return values[0] if values else None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    reason: str | None = None  # the status line's phrase; None: the standard one for the status

    @classmethod
    def json(cls, status: int, obj: Any, headers: Mapping[str, str] | None = None) -> Response:
        return cls(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

    @classmethod
    def text(cls, status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> Response:
        return cls(status, text.encode(), {"Content-Type": content_type})


TokenCheck = Callable[[str], bool]


def any_token(token: str) -> bool:
    """The default `token_check`: any non-empty bearer token is accepted."""
    return bool(token)


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None when absent, empty or another scheme."""
    scheme, _, token = (request.header("Authorization") or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def google_error(status: int, code_name: str, message: str) -> Response:
    """The JSON error shape every Google REST API answers with."""
    return Response.json(status, {"error": {"code": status, "message": message, "status": code_name}})


@dataclass
class _Fault:
    remaining: int
    status: int
    body: bytes | None
    headers: Mapping[str, str]
    path_prefix: str


class LoopbackServer:
    """Serves `handle()` on 127.0.0.1:<ephemeral> while used as a context manager."""

    # Added to every response, injected faults included.
    always_headers: Mapping[str, str] = {}
    # Where it listens: any loopback address (127.0.0.2 serves tests that tell loopback addresses apart).
    address = "127.0.0.1"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[Request] = []
        self._faults: list[_Fault] = []
        self._errors: list[str] = []
        self._httpd: _Httpd | None = None
        self._thread: threading.Thread | None = None

    def handle(self, request: Request) -> Response:
        raise NotImplementedError

    def fault_response(self, status: int) -> Response:
        """The body sent by `fail_next` when the test gives none; servers override with their dialect."""
        return google_error(status, "UNAVAILABLE" if status >= 500 else "FAILED_PRECONDITION", "injected fault")

    # --- lifecycle -------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self._httpd is not None:
            raise RuntimeError(f"{type(self).__name__} is already running at {self.url}")
        self._httpd = _Httpd(self)
        # A short poll interval keeps stop() fast; the default 0.5 s would dominate quick tests.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        httpd.shutdown()
        httpd.server_close()  # also joins the per-connection handler threads (block_on_close)
        thread.join()
        self._httpd = self._thread = None

    # --- addresses -------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError(f"{type(self).__name__} is not running: use it as a context manager")
        return int(self._httpd.server_address[1])

    @property
    def host_port(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host_port}"

    # --- what tests inspect and inject -----------------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, path_prefix: str, method: str | None = None) -> list[Request]:
        return [r for r in self.requests if r.path.startswith(path_prefix) and (method is None or r.method == method)]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    @property
    def errors(self) -> list[str]:
        """Tracebacks of exceptions raised by `handle()` (each also answered with a 500)."""
        with self._lock:
            return list(self._errors)

    def fail_next(
        self,
        n: int,
        status: int,
        body: bytes | str | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        path_prefix: str = "",
    ) -> None:
        """Answer the next `n` requests (whose path starts with `path_prefix`) with `status`."""
        if n < 1:
            raise ValueError(f"n must be at least 1, found {n}")
        raw = body.encode() if isinstance(body, str) else json.dumps(body).encode() if body is not None else None
        fault_headers = dict(headers or {})
        if isinstance(body, Mapping):
            fault_headers.setdefault("Content-Type", "application/json")
        with self._lock:
            self._faults.append(_Fault(n, status, raw, fault_headers, path_prefix))

    # --- request path ----------------------------------------------------------------------------------

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if path.startswith(fault.path_prefix):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
            return None

    def _serve(self, request: Request) -> Response:
        fault = self._take_fault(request.path)
        with self._lock:
            self._requests.append(request if fault is None else replace(request, faulted=True))
        if fault is not None:
            if fault.body is None:
                default = self.fault_response(fault.status)
                return Response(fault.status, default.body, {**default.headers, **fault.headers})
            return Response(fault.status, fault.body, fault.headers)
        try:
            return self.handle(request)
        except Exception:
            # Answer like a crashing server would, and keep the traceback: a test can assert `errors == []`.
            trace = traceback.format_exc()
            with self._lock:
                self._errors.append(trace)
            return Response.text(500, trace)


class _Httpd(ThreadingHTTPServer):
    def __init__(self, app: LoopbackServer) -> None:
        self.app = app
        super().__init__((app.address, 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up before the answer was written (a test of timeouts, a cancelled call) leaves a
        # BrokenPipeError or ConnectionResetError here: the client's choice, not the server's bug. The default
        # prints its traceback in the middle of a passing run; anything else still gets printed.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Httpd
    # A client that opens a connection and never writes must not block stop() forever.
    timeout = 10
    # The status line and headers go out in one write and the body in another: with Nagle's algorithm on, the body
    # would wait for the client's delayed ACK of the headers (40 ms on Linux) on every kept-alive answer.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the default writes every request to stderr

    def _dispatch(self) -> None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self._send(Response.text(411, "chunked request bodies are not supported by this test server"))
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None  # not JSON: handlers that need JSON answer 400 themselves
        request = Request(
            method=self.command,
            path=split.path,
            # keep_blank_values: kfp sends `namespace=` and the server must see it was sent.
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            json=parsed,
        )
        self._send(self.server.app._serve(request))

    def _send(self, response: Response) -> None:
        self.send_response(response.status, response.reason)
        for name, value in {**response.headers, **self.server.app.always_headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _dispatch
