"""The watchdog that bounds an answer's head: a blocked read is woken when its deadline passes, never before; and
a request's head and body, sent in one write."""

from __future__ import annotations

import functools
import socket
import time

from relay.adapters.deadlines import POOL_CLASSES, Watchdog


def test_a_read_blocked_past_its_deadline_is_woken_and_one_unwatched_in_time_is_left_alone():
    watchdog = Watchdog()
    reader, writer = socket.socketpair()
    spare, other = socket.socketpair()
    with reader, writer, spare, other:
        reader.settimeout(30)  # only if the watchdog never woke it
        late = watchdog.watch(time.monotonic() + 0.2, functools.partial(reader.shutdown, socket.SHUT_RDWR))
        kept = watchdog.watch(time.monotonic() + 3600, functools.partial(spare.shutdown, socket.SHUT_RDWR))
        assert reader.recv(1) == b""  # woken as if the server had closed
        assert not watchdog.unwatch(late)  # the caller learns its read was cut short
        assert watchdog.unwatch(kept)
        other.sendall(b"x")
        assert spare.recv(1) == b"x"  # still open


class RecordingSocket:
    """A real socket whose writes are noted, one entry per sendall."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.writes: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self._sock.sendall(data)

    def settimeout(self, value: float | None) -> None:
        self._sock.settimeout(value)


def writes_of(method: str, body: object, headers: dict[str, str] | None = None) -> list[bytes]:
    """The writes one request on a new connection of the client's pools makes."""
    near, far = socket.socketpair()
    with near, far:
        connection = POOL_CLASSES["http"].ConnectionCls("127.0.0.1", 80)
        recording = RecordingSocket(near)
        connection.sock = recording
        connection.request(method, "/runs", body=body, headers=headers)
        return recording.writes


def test_a_body_given_as_bytes_goes_out_with_its_head_in_one_write_framed_by_its_length():
    [write] = writes_of("POST", b'{"a": 1}', {"Authorization": "Bearer t"})
    head, _, body = write.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /runs HTTP/1.1\r\n")
    assert b"\r\nContent-Length: 8\r\n" in head + b"\r\n" and b"\r\nAuthorization: Bearer t" in head
    assert body == b'{"a": 1}'


def test_a_body_not_given_as_bytes_is_framed_and_sent_as_urllib3_does():
    head, *chunks = writes_of("POST", [b"ab", b"cd"])  # an iterable: chunked, a write a chunk
    assert b"\r\nTransfer-Encoding: chunked\r\n" in head and head.endswith(b"\r\n\r\n")
    assert chunks == [b"2\r\nab\r\n", b"2\r\ncd\r\n", b"0\r\n\r\n"]
    [get] = writes_of("GET", None)
    assert get.startswith(b"GET /runs HTTP/1.1\r\n") and get.endswith(b"\r\n\r\n") and b"Content-Length" not in get
