"""HTTP/1.1 over a connected socket: a request written (a small one in one write), and its answer read back by a
small strict parser that says whether the connection may carry another request.

urllib3 makes and pools the connections (TCP, TLS, proxy tunnels); this replaces only what http.client and
urllib3's response objects would do with each request on them, at about a third of their CPU (http.client parses
an answer's head through the email package). Strict where leniency is how answers are split or smuggled (RFC 9112):
a head that is not CRLF-delimited lines of `name: value`, a field name that is not a token, a length that is no
count of bytes, both Content-Length and Transfer-Encoding, a transfer coding other than chunked alone, a chunk that
runs past its size; each is refused, and neither a refused answer's connection nor one that brought bytes after an
answer is used again. A folded line (obs-fold) continues the field above it, joined by a space, as RFC 9112 5.2
lets a recipient read it.

Every read waits no longer than the read timeout, and no later than the call's deadline; the head as a whole must
come within one read timeout of the request, however it trickles in.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

MAX_HEAD = 65536  # bytes of an answer's status line and fields together, or of a chunked answer's trailers
_MAX_FIELDS = 100
_RECV = 65536  # the most one read takes: the deadline and the size cap are checked between reads
_ONE_WRITE = 16384  # a body up to this size goes out with its head in one write
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})  # sent with a Content-Length even when empty, as urllib3 does
_BLANK = " \t"  # optional whitespace around a field's value (RFC 9110 5.6.3)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NOT_CRLF = "the answer's head has a line break other than CRLF"
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")


class BodyTooLargeError(ValueError):
    """The answer's body is larger than the call takes; no more of it was read."""


class UnansweredError(ConnectionError):
    """The connection closed or broke before a byte of an answer came: a kept connection the server had closed."""


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]  # names lower-cased; repeated fields joined by ", "
    data: bytes
    reusable: bool  # framed cleanly, nothing left over, and the server keeps the connection open


def request_head(method: str, target: str, host: str, headers: Mapping[str, str], body: bytes | None) -> bytes:
    """The request line and fields; ValueError when a line break in one would smuggle in fields of its own."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Accept-Encoding: identity"]
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    if body is not None or method in _WITH_BODY:
        lines.append(f"Content-Length: {len(body) if body is not None else 0}")
    flat = "".join(lines)
    if "\n" in flat or "\r" in flat:
        raise ValueError("a line break in the request line or a header")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def send(sock: Any, head: bytes, body: bytes | None, *, deadline: float) -> None:
    """The request, in one write when it is small (urllib3's connections set TCP_NODELAY: a second one never
    waits), all of it sent before `deadline`. UnansweredError when the connection broke meanwhile."""
    sock.settimeout(max(deadline - time.monotonic(), 1e-3))  # a socket's timeout bounds a whole sendall
    try:
        if body and len(body) > _ONE_WRITE:
            sock.sendall(head)
            sock.sendall(body)
        else:
            sock.sendall(head + body if body else head)
    except ConnectionError as exc:
        raise UnansweredError(f"{type(exc).__name__}: {exc}") from exc


def read_answer(sock: Any, method: str, *, read_timeout: float, deadline: float, cap: int) -> Answer:
    """The answer on `sock`, read whole within `deadline` (time.monotonic()) and `cap` bytes of body.

    Raises UnansweredError when the connection ended before any byte came, BodyTooLargeError, TimeoutError,
    ValueError for an answer refused, and OSError as the socket does."""
    reader = _Reader(sock, read_timeout)
    head_by = time.monotonic() + read_timeout
    if head_by <= deadline:
        late = f"the answer's head took longer than {read_timeout:g} s"
    else:
        head_by, late = deadline, "the call's deadline passed"
    while True:
        version, status, headers = _parse_head(reader.head(head_by, late))
        if status >= 200:
            break
        if status == 101:
            raise ValueError("the server switched protocols (101), unasked")
        # 100 Continue, 103 Early Hints: the answer itself follows.
    keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    length = headers.get("content-length")
    coding = headers.get("transfer-encoding")
    if length is not None and coding is not None:
        raise ValueError("the answer is framed both by Content-Length and Transfer-Encoding")
    if method == "HEAD" or status in (204, 304):
        data = b""
    elif coding is not None:
        if coding.lower() != "chunked":
            raise ValueError(f"the answer's Transfer-Encoding {coding[:40]!r} is not chunked alone")
        data = _chunks(reader, deadline, cap)
    elif length is not None:
        if not (length.isascii() and length.isdigit()):
            raise ValueError(f"the answer's Content-Length {length[:40]!r} is not a count of bytes")
        if int(length) > cap:
            raise BodyTooLargeError(f"the answer is {length} bytes, more than {cap}")
        data = reader.exactly(int(length), deadline)
    else:
        data, keep = _until_close(reader, deadline, cap), False
    return Answer(status, headers, data, keep and not reader.left_over())


def _parse_head(block: bytes) -> tuple[str, int, dict[str, str]]:
    if block.count(b"\n") != block.count(b"\r\n") or block.count(b"\r") != block.count(b"\r\n"):
        raise ValueError(_NOT_CRLF)
    lines = block.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if version not in ("HTTP/1.1", "HTTP/1.0") or not rest[:3].isdigit() or rest[3:4] not in ("", " "):
        raise ValueError(f"not an HTTP/1.x status line: {lines[0][:100]!r}")
    if len(lines) > _MAX_FIELDS + 1:
        raise ValueError(f"the answer's head has more than {_MAX_FIELDS} lines")
    headers: dict[str, str] = {}
    name = ""
    for line in lines[1:]:
        if line[0] in " \t":  # obs-fold: the field above goes on
            if not name:
                raise ValueError("the answer's first field line is folded")
            headers[name] = headers[name] + " " + line.strip(_BLANK)
            continue
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name):
            raise ValueError(f"not a field line: {line[:100]!r}")
        name = name.lower()
        value = value.strip(_BLANK)
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return version, int(rest[:3]), headers


def _chunks(reader: _Reader, deadline: float, cap: int) -> bytes:
    pieces: list[bytes] = []
    size = 0
    while True:
        line = reader.line(deadline)
        chunk = line.split(b";", 1)[0].rstrip(b" \t")  # chunk extensions are ignored
        if not _HEX.fullmatch(chunk):
            raise ValueError(f"not a chunk size: {line[:40]!r}")
        left = int(chunk, 16)
        if left == 0:
            reader.trailers(deadline)
            return b"".join(pieces)
        while left:
            piece = reader.some(left, deadline)
            size += len(piece)
            if size > cap:
                raise BodyTooLargeError(f"the answer is more than {cap} bytes (read {size})")
            pieces.append(piece)
            left -= len(piece)
        if reader.line(deadline):
            raise ValueError("a chunk runs past its size")


def _until_close(reader: _Reader, deadline: float, cap: int) -> bytes:
    pieces: list[bytes] = []
    size = 0
    while piece := reader.some(_RECV, deadline, eof_ok=True):
        size += len(piece)
        if size > cap:
            raise BodyTooLargeError(f"the answer is more than {cap} bytes (read {size})")
        pieces.append(piece)
    return b"".join(pieces)


class _Reader:
    """Reads from a socket through a small buffer; each read bounded by the read timeout and a deadline."""

    __slots__ = ("_buffer", "_read", "_received", "_sock")

    def __init__(self, sock: Any, read_timeout: float) -> None:
        self._sock = sock
        self._read = read_timeout
        self._buffer = b""
        self._received = 0

    def _recv(self, size: int, by: float, late: str = "the call's deadline passed") -> bytes:
        left = by - time.monotonic()
        if left <= 0:
            raise TimeoutError(late)
        self._sock.settimeout(min(self._read, left))
        try:
            data: bytes = self._sock.recv(size)
        except TimeoutError:
            if time.monotonic() >= by:
                raise TimeoutError(late) from None
            raise
        except ConnectionError as exc:
            if not self._received:
                raise UnansweredError(f"{type(exc).__name__}: {exc}") from exc
            raise
        if not data and not self._received:
            raise UnansweredError("the server closed the connection without an answer")
        self._received += len(data)
        return data

    def head(self, by: float, late: str) -> bytes:
        """The status line and fields, up to (not with) the blank line that ends them."""
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            if len(self._buffer) > MAX_HEAD:
                raise ValueError(f"the answer's head is longer than {MAX_HEAD} bytes")
            if self._buffer.count(b"\n") != self._buffer.count(b"\r\n"):  # all head so far: refused now, not waited out
                raise ValueError(_NOT_CRLF)
            data = self._recv(_RECV, by, late)
            if not data:
                raise ConnectionError("the server closed the connection within the answer's head")
            self._buffer += data
        block, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
        return block

    def line(self, by: float) -> bytes:
        while (end := self._buffer.find(b"\r\n")) < 0:
            if len(self._buffer) > MAX_HEAD:
                raise ValueError(f"a line of the answer's body framing is longer than {MAX_HEAD} bytes")
            data = self._recv(_RECV, by)
            if not data:
                raise ConnectionError("the server closed the connection within the answer")
            self._buffer += data
        line, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
        return line

    def trailers(self, by: float) -> None:
        """The trailer fields after the last chunk, up to the blank line that ends the answer (never used)."""
        read = 0
        while line := self.line(by):
            read += len(line)
            if read > MAX_HEAD:
                raise ValueError(f"the answer's trailers are longer than {MAX_HEAD} bytes")

    def some(self, most: int, by: float, *, eof_ok: bool = False) -> bytes:
        """Up to `most` bytes: what is buffered, else one read; b"" at the end only when `eof_ok`."""
        if self._buffer:
            piece, self._buffer = self._buffer[:most], self._buffer[most:]
            return piece
        data = self._recv(min(most, _RECV), by)
        if not data and not eof_ok:
            raise ConnectionError("the server closed the connection within the answer's body")
        return data

    def exactly(self, size: int, by: float) -> bytes:
        if len(self._buffer) >= size:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
            return data
        pieces = [self._buffer]
        got = len(self._buffer)
        self._buffer = b""
        while got < size:
            piece = self.some(size - got, by)
            pieces.append(piece)
            got += len(piece)
        return b"".join(pieces)

    def left_over(self) -> bool:
        """Bytes came after the answer (nothing was asked for them): the connection is not used again."""
        return bool(self._buffer)
