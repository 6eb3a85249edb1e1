"""HttpClient on raw loopback sockets: kept-alive connections, stale ones, what "sent" means, proxies and TLS."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest

from relay.adapters.http import Encoded, EncodedOnce, HttpClient, NoAnswerError, Timeouts
from tests.integration.support import eventually
from tests.pipelines.test_egress import _certificate

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{"ok": true}'


class RawHttp:
    """HTTP/1.1 on 127.0.0.1 at the socket level, so a test says exactly when a connection closes.

    Each request is noted as its first line; `drop` makes the server read the next request on a kept connection
    and close it unanswered (a server timing out an idle connection as the request arrives); `close_after` makes
    it close every connection once it has answered, without saying so; `hanging` makes it never answer; `answer`
    is what it answers."""

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
                    self.bodies.append(body)
                    drop = self.drop and answered > 0  # only a kept connection is dropped
                    self.drop = self.drop and not drop
                if drop:
                    return
                if self.hanging:
                    self._stopping.wait()
                    return
                conn.sendall(self.answer)
                answered += 1
                if self.close_after:
                    return
        except OSError:
            return
        finally:
            conn.close()
            with self._lock:
                self.closed += 1


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
