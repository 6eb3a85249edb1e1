"""HttpClient on raw loopback sockets: kept-alive connections, stale ones, what "sent" means, proxies and TLS, and
servers that misbehave (folded headers, ambiguous or impossible lengths, answers too large or too slow)."""

from __future__ import annotations

import base64
import inspect
import json
import select
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest
from urllib3.connectionpool import HTTPConnectionPool

from relay.adapters.http import AnswerTooLargeError, Encoded, EncodedOnce, HttpClient, NoAnswerError, Timeouts
from tests.integration.support import eventually
from tests.pipelines.test_egress import _certificate

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{"ok": true}'


class RawHttp:
    """HTTP/1.1 on 127.0.0.1 at the socket level, so a test says exactly when a connection closes.

    Each request is noted as its first line; `drop` makes the server read the next request on a kept connection
    and close it unanswered (a server timing out an idle connection as the request arrives); `close_after` makes
    it close every connection once it has answered, without saying so; `hanging` makes it never answer; `answer`
    is what it answers, after the answers queued in `answers`, one a request; `trickle` sends each byte of an
    answer's body (its head too, with `trickle_head`) that many seconds after the last."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._tls = tls
        self._lock = threading.Lock()
        self.lines: list[str] = []
        self.bodies: list[bytes] = []
        self.connections = 0
        self.closed = 0  # connections the server has closed
        self.drop = False
        self.close_after = False
        self.hanging = False
        self.answer = OK  # the bytes of every answer
        self.answers: list[bytes] = []
        self.heads: list[bytes] = []
        self.trickle = 0.0
        self.trickle_head = False
        self._stopping = threading.Event()
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stopping.set()
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() under way; close() alone would not
        self._listener.close()
        with self._lock:
            for conn in self._open:
                conn.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True)
            reader = conn.makefile("rb")
            answered = 0
            while True:
                head = [reader.readline()]
                while head[-1] not in (b"\r\n", b""):
                    head.append(reader.readline())
                if head[0] == b"":
                    return
                length = next((int(h.split(b":")[1]) for h in head if h.lower().startswith(b"content-length")), 0)
                body = reader.read(length)
                with self._lock:
                    self.lines.append(head[0].decode().strip())
                    self.heads.append(b"".join(head))
                    self.bodies.append(body)
                    drop = self.drop and answered > 0  # only a kept connection is dropped
                    self.drop = self.drop and not drop
                    answer = self.answers.pop(0) if self.answers else self.answer
                if drop:
                    return
                if self.hanging:
                    self._stopping.wait()
                    return
                self._send(conn, answer)
                answered += 1
                if self.close_after:
                    return
        except OSError:
            return
        finally:
            conn.close()
            with self._lock:
                self.closed += 1

    def _send(self, conn: socket.socket, answer: bytes) -> None:
        if not self.trickle:
            conn.sendall(answer)
            return
        head, blank, body = answer.partition(b"\r\n\r\n")
        if self.trickle_head:
            head, blank, body = b"", b"", answer
        conn.sendall(head + blank)
        for index in range(len(body)):
            if self._stopping.wait(self.trickle):
                return
            conn.sendall(body[index : index + 1])


@pytest.fixture
def server() -> Iterator[RawHttp]:
    with RawHttp() as running:
        yield running


def test_requests_to_one_host_share_a_kept_alive_connection(server: RawHttp):
    http = HttpClient()
    url = f"http://127.0.0.1:{server.port}/storage/v1/b/x/o"
    answers = [http.request("GET", url, params={"prefix": "a b/"}) for _ in range(3)]
    http.request("POST", url, json={"name": "claim"})
    http.close()
    assert [a.json() for a in answers] == [{"ok": True}] * 3
    assert answers[0].headers["content-type"] == "application/json"  # names lower-cased
    assert server.connections == 1
    assert server.lines == [*["GET /storage/v1/b/x/o?prefix=a+b%2F HTTP/1.1"] * 3, "POST /storage/v1/b/x/o HTTP/1.1"]


def test_a_connection_the_server_closed_while_idle_is_not_reused(server: RawHttp):
    http = HttpClient()
    server.close_after = True
    url = f"http://127.0.0.1:{server.port}/apis/v2beta1/runs"
    http.request("GET", url)
    eventually(lambda: server.closed == 1)
    # Closed without a word: seen before anything is sent on it, so even a submit goes out once, on a new one.
    assert http.request("POST", url, json={}).status == 200
    http.close()
    assert server.connections == 2 and [line.split()[0] for line in server.lines] == ["GET", "POST"]


def test_a_kept_connection_dropped_with_the_request_on_it_repeats_only_what_may_be_repeated(server: RawHttp):
    http = HttpClient()
    url = f"http://127.0.0.1:{server.port}/x"
    http.request("GET", url)
    server.drop = True
    assert http.request("GET", url).status == 200  # once more, on a new connection
    server.drop = True
    with pytest.raises(NoAnswerError) as lost:
        http.request("POST", url, json={})
    http.close()
    assert lost.value.sent  # it may have been acted on: a submit is never sent twice
    assert [line.split()[0] for line in server.lines] == ["GET", "GET", "GET", "POST"]
    assert server.connections == 2


def test_a_conditional_write_marked_repeatable_is_sent_again(server: RawHttp):
    http = HttpClient()
    url = f"http://127.0.0.1:{server.port}/upload"
    http.request("GET", url)
    server.drop = True
    assert http.request("POST", url, body=b"claim", repeatable=True).status == 200
    http.close()
    assert [line.split()[0] for line in server.lines] == ["GET", "POST", "POST"]


@pytest.mark.parametrize(
    ("answer", "kept"),
    [
        (
            b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\n{"ok"\r\n7\r\n: true}\r\n0\r\nT: 1\r\n\r\n',
            True,
        ),
        (b"HTTP/1.1 100 Continue\r\n\r\n" + OK, True),
        (b'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 12\r\n\r\n{"ok": true}', False),
        (b'HTTP/1.0 200 OK\r\n\r\n{"ok": true}', False),  # no length: the body ends with the connection
    ],
    ids=["chunked", "continue-first", "connection-close", "until-close"],
)
def test_answers_are_read_by_length_chunks_or_close(server: RawHttp, answer: bytes, kept: bool):
    server.answer = answer
    server.close_after = not kept
    http = HttpClient()
    url = f"http://127.0.0.1:{server.port}/x"
    assert [http.request("GET", url).json() for _ in range(2)] == [{"ok": True}] * 2
    http.close()
    assert server.connections == (1 if kept else 2)


def test_a_short_body_or_a_garbled_answer_is_no_answer(server: RawHttp):
    http = HttpClient()
    url = f"http://127.0.0.1:{server.port}/x"
    server.close_after = True
    for answer in (b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n{}", b"SSH-2.0-OpenSSH\r\n\r\n"):
        server.answer = answer
        with pytest.raises(NoAnswerError) as broken:
            http.request("GET", url)
        assert broken.value.sent


def test_a_line_break_in_a_header_is_refused_before_anything_is_sent(server: RawHttp):
    with pytest.raises(ValueError, match="line break"):
        HttpClient().request("GET", f"http://127.0.0.1:{server.port}/x", headers={"Authorization": "a\r\nX-Evil: 1"})
    assert server.lines == []


def test_a_member_encoded_before_is_sent_as_it_was_encoded(server: RawHttp):
    spec = {"pipelineInfo": {"name": "echo"}, "root": {"dag": {"tasks": {}}}}
    specs = EncodedOnce()
    assert specs(spec) is specs(spec) and specs(dict(spec)) is not specs(spec)  # by the document, not its value
    http = HttpClient()
    http.request(
        "POST", f"http://127.0.0.1:{server.port}/runs", json={"display_name": "k", "pipeline_spec": specs(spec)}
    )
    http.request("POST", f"http://127.0.0.1:{server.port}/runs", json={"spec": Encoded(b"[1, 2]"), "n": {"m": 1}})
    http.close()
    assert [json.loads(body) for body in server.bodies] == [
        {"display_name": "k", "pipeline_spec": spec},
        {"spec": [1, 2], "n": {"m": 1}},
    ]


def test_no_connection_means_nothing_was_sent_and_a_silent_server_means_it_may_have_been():
    with RawHttp() as gone:
        port = gone.port
    with pytest.raises(NoAnswerError, match="no connection") as refused:
        HttpClient().request("POST", f"http://127.0.0.1:{port}/runs", json={})
    assert not refused.value.sent
    with RawHttp() as silent:
        silent.hanging = True
        with pytest.raises(NoAnswerError, match="TimeoutError") as timed_out:
            HttpClient().request("POST", f"http://127.0.0.1:{silent.port}/runs", json={}, timeouts=Timeouts(1, 0.3))
    assert timed_out.value.sent


def test_a_configured_proxy_is_used_and_no_proxy_is_honoured(server: RawHttp, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{server.port}")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    http = HttpClient()
    assert http.request("GET", "http://kfp.lab.test/apis/v2beta1/runs", params={"page_size": "5"}).status == 200
    assert http.request("GET", f"http://127.0.0.1:{server.port}/token").status == 200  # straight there
    http.close()
    assert server.lines == ["GET http://kfp.lab.test/apis/v2beta1/runs?page_size=5 HTTP/1.1", "GET /token HTTP/1.1"]


def test_tls_is_verified_against_requests_ca_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cert_path, key_path = _certificate(tmp_path, "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    with RawHttp(tls=context) as server:
        url = f"https://localhost:{server.port}/x"
        with pytest.raises(NoAnswerError, match="CERTIFICATE_VERIFY_FAILED") as untrusted:
            HttpClient().request("GET", url)  # certifi's roots do not hold a self-signed certificate
        assert not untrusted.value.sent
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert_path))
        http = HttpClient()
        assert http.request("GET", url).json() == {"ok": True}
        http.close()


class TlsTunnel:
    """An https:// proxy on 127.0.0.1: TLS to it, then CONNECT host:port, then the bytes both ways (to 127.0.0.1
    at that port, whatever the name). Each CONNECT line is noted."""

    def __init__(self, tls: ssl.SSLContext) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._tls = tls
        self.connects: list[str] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stopping.set()
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, raw: socket.socket) -> None:
        try:
            with self._tls.wrap_socket(raw, server_side=True) as client:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += client.recv(4096)
                line = head.split(b"\r\n", 1)[0].decode()
                self.connects.append(line)
                port = int(line.split()[1].rsplit(":", 1)[1])
                with socket.create_connection(("127.0.0.1", port)) as upstream:
                    client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    while not self._stopping.is_set():
                        ready, _, _ = select.select([client, upstream], [], [], 0.1)
                        for source in ready:
                            target = upstream if source is client else client
                            data = source.recv(65536)
                            while isinstance(source, ssl.SSLSocket) and source.pending():
                                data += source.recv(source.pending())
                            if not data:
                                return
                            target.sendall(data)
        except OSError:
            return


def test_a_folded_header_line_continues_the_header_before_it(server: RawHttp):
    # obs-fold (RFC 9112 5.2): a line starting with a space or tab belongs to the header above it.
    server.answer = b"HTTP/1.1 200 OK\r\nX-Goog-Meta: first\r\n  second\r\n\tthird\r\nContent-Length: 2\r\n\r\n{}"
    http = HttpClient()
    answer = http.request("GET", f"http://127.0.0.1:{server.port}/x")
    http.close()
    assert answer.headers["x-goog-meta"] == "first second third"
    assert answer.headers["content-length"] == "2" and answer.json() == {}


def test_an_answer_framed_by_both_length_and_chunks_is_refused_and_its_connection_closed(server: RawHttp):
    # Content-Length with Transfer-Encoding: how a response is split or smuggled; whatever follows is never read as
    # the next answer (RFC 9112 6.3), and the connection is not used again.
    server.answers = [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"]
    http = HttpClient()
    url = f"http://127.0.0.1:{server.port}/x"
    with pytest.raises(NoAnswerError, match="both by Content-Length and Transfer-Encoding") as refused:
        http.request("GET", url)
    assert refused.value.sent
    assert http.request("GET", url).json() == {"ok": True}
    http.close()
    assert server.connections == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\nContent-Length: 2\n\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Split: a\rb\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\n{}\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{}\r\n0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    ],
    ids=[
        "bare-LF-lines",
        "bare-CR",
        "field-name-no-token",
        "space-before-colon",
        "two-lengths",
        "coding-not-chunked-alone",
        "chunk-size-not-hex",
        "chunk-past-its-size",
        "protocol-switched",
    ],
)
def test_an_answer_read_strictly_as_no_answer_is_refused_at_once_and_its_connection_closed(
    server: RawHttp, answer: bytes
):
    # Each is how an answer is split or smuggled past a lenient reader (RFC 9112): refused before any wait, and
    # whatever follows it is never read as the next answer.
    server.answers = [answer]
    http = HttpClient()
    url = f"http://127.0.0.1:{server.port}/x"
    with pytest.raises(NoAnswerError, match=r"^GET http://127\.0\.0\.1:\d+/x: ValueError: ") as refused:
        http.request("GET", url, timeouts=Timeouts(connect=1, read=30))
    assert refused.value.sent
    assert http.request("GET", url).json() == {"ok": True}
    http.close()
    assert server.connections == 2


def test_bytes_after_an_answer_that_nobody_asked_for_leave_its_connection_unused(server: RawHttp):
    server.answers = [OK + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"]
    http = HttpClient()
    url = f"http://127.0.0.1:{server.port}/x"
    assert [http.request("GET", url).json() for _ in range(2)] == [{"ok": True}] * 2  # never the stray {}
    http.close()
    assert server.connections == 2


def test_the_urllib3_pool_methods_the_client_borrows_connections_through_keep_their_shape():
    # HttpClient takes a connection from urllib3's pool and gives it back through these two private methods
    # (urlopen, the public way, costs a request about three times the CPU): an urllib3 that renames or reshapes
    # them fails here, by name.
    assert list(inspect.signature(HTTPConnectionPool._get_conn).parameters) == ["self", "timeout"]
    assert list(inspect.signature(HTTPConnectionPool._put_conn).parameters) == ["self", "conn"]


def test_a_length_that_is_no_count_of_bytes_is_refused_at_once(server: RawHttp):
    # The server keeps the connection open after it: read "until the server closes", the call would wait it out.
    server.answer = b'HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n{"ok": true}'
    with pytest.raises(NoAnswerError, match="Content-Length '-1' is not a count of bytes"):
        HttpClient().request("GET", f"http://127.0.0.1:{server.port}/x", timeouts=Timeouts(connect=1, read=2))


@pytest.mark.parametrize(
    ("answer", "max_answer", "seen"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\n\r\n", None, "67108864 bytes, more than 33554432"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n" + b"x" * 4096, 1024, "4096 bytes, more than 1024"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"3e8\r\n" + b"x" * 1000 + b"\r\n" * 4, 2500, ""),
    ],
    ids=["declared-64MiB-default-cap", "declared-over-the-call's-cap", "chunked-over-the-call's-cap"],
)
def test_an_answer_larger_than_the_cap_is_refused_naming_the_place_the_cap_and_the_size(
    server: RawHttp, answer: bytes, max_answer: int | None, seen: str
):
    if not seen:  # chunks of 1000 bytes, without end: refused once the third passes the cap
        answer = answer[:-8] + b"\r\n" + (b"3e8\r\n" + b"x" * 1000 + b"\r\n") * 3
        seen = "more than 2500 bytes (read 3000)"
    server.answer = answer
    http = HttpClient()
    url = f"http://127.0.0.1:{server.port}/o/big.json"
    with pytest.raises(AnswerTooLargeError) as too_large:
        http.request("GET", f"{url}?token=secret", timeouts=Timeouts(connect=1, read=2), max_answer=max_answer)
    http.close()
    assert str(too_large.value) == f"GET {url}: the answer is {seen}"  # the query (a token, say) left out
    assert too_large.value.sent


def test_a_whole_call_is_bounded_though_each_read_comes_in_time(server: RawHttp):
    # Each byte comes well within the read timeout; the whole answer would take 10 s.
    server.answer = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100
    server.trickle = 0.1
    http = HttpClient()
    url = f"http://127.0.0.1:{server.port}/x"
    with pytest.raises(NoAnswerError, match=r"TimeoutError: no whole answer in the call's 1\.4 s"):
        http.request("GET", url, timeouts=Timeouts(connect=1, read=0.4))  # the whole call: the two together
    with pytest.raises(NoAnswerError, match=r"in the call's 0\.3 s"):
        http.request("GET", url, timeouts=Timeouts(connect=1, read=1, total=0.3))
    http.close()


def test_an_answer_head_trickling_in_is_cut_short_at_the_read_timeout(server: RawHttp):
    # Each byte of the status line and headers comes well within the read timeout; all of them would take 4 s.
    server.trickle, server.trickle_head = 0.1, True
    http = HttpClient()
    with pytest.raises(NoAnswerError, match=r"TimeoutError: the answer's head took longer than 0\.5 s") as late:
        http.request("GET", f"http://127.0.0.1:{server.port}/x", timeouts=Timeouts(connect=1, read=0.5))
    http.close()
    assert late.value.sent


def test_credentials_in_a_url_are_refused_before_anything_is_sent(server: RawHttp):
    with pytest.raises(ValueError, match="credentials in a URL are refused") as refused:
        HttpClient().request("GET", f"http://relay:s3cret@127.0.0.1:{server.port}/x")
    assert "s3cret" not in str(refused.value)
    assert server.lines == []


def test_proxy_settings_are_read_for_each_request(server: RawHttp, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with RawHttp() as proxy:
        http = HttpClient()
        url = f"http://127.0.0.1:{server.port}/runs"
        http.request("GET", url)
        monkeypatch.setenv("http_proxy", f"http://relay:pa%40ss@127.0.0.1:{proxy.port}")
        http.request("GET", url)
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        http.request("GET", url)
        http.close()
    assert server.lines == ["GET /runs HTTP/1.1"] * 2
    assert proxy.lines == [f"GET {url} HTTP/1.1"]
    fields = dict(line.split(": ", 1) for line in proxy.heads[0].decode().split("\r\n")[1:] if line)
    authorization = {name.lower(): value for name, value in fields.items()}["proxy-authorization"]
    assert authorization == "Basic " + base64.b64encode(b"relay:pa@ss").decode()


def test_an_https_proxy_is_used_for_http_and_https_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cert_path, key_path = _certificate(tmp_path, "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert_path))
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with RawHttp(tls=context) as forwarding, RawHttp(tls=context) as origin, TlsTunnel(context) as tunnel:
        # Plain http through an https:// proxy: TLS to the proxy, which takes the absolute URL.
        monkeypatch.setenv("http_proxy", f"https://localhost:{forwarding.port}")
        # https through an https:// proxy: TLS to the proxy, CONNECT, then TLS to the origin inside it.
        monkeypatch.setenv("https_proxy", f"https://localhost:{tunnel.port}")
        http = HttpClient()
        assert http.request("GET", "http://kfp.lab.test/apis/v2beta1/runs").json() == {"ok": True}
        assert http.request("GET", f"https://localhost:{origin.port}/o/x").json() == {"ok": True}
        http.close()
        assert tunnel.connects == [f"CONNECT localhost:{origin.port} HTTP/1.0"]  # as http.client sends it
    assert forwarding.lines == ["GET http://kfp.lab.test/apis/v2beta1/runs HTTP/1.1"]
    assert origin.lines == ["GET /o/x HTTP/1.1"]


def test_timeouts_are_positive_and_the_whole_call_defaults_to_connect_and_read_together():
    assert Timeouts(connect=1, read=2).whole == 3 and Timeouts(connect=1, read=2, total=5).whole == 5
    assert Timeouts.within(60).whole <= 54  # a submit started in time ends before the lease
    for seconds in ({"read": 0}, {"total": 0}):
        with pytest.raises(ValueError, match="expected seconds above 0"):
            Timeouts(**seconds)
