"""StorageEventBridge: the exact binary-mode CloudEvent it sends, and what it answers the emulator."""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from devstack.bridge import StorageEventBridge, cloud_event_from_push
from devstack.processes import free_port

pytestmark = pytest.mark.integration

OBJECT = {
    "kind": "storage#object",
    "id": "in/a b.csv#1700000000000001",
    "name": "a b.csv",
    "bucket": "in",
    "generation": "1700000000000001",
    "size": "3",
    "contentType": "text/csv",
}


def push(event_type: str = "OBJECT_FINALIZE", **overrides: Any) -> dict[str, Any]:
    attributes = {
        "bucketId": "in",
        "objectId": "a b.csv",
        "objectGeneration": "1700000000000001",
        "eventType": event_type,
        "eventTime": "2026-11-21T12:00:00Z",
        "payloadFormat": "JSON_API_V1",
    }
    message = {
        "attributes": attributes,
        "data": base64.b64encode(json.dumps(OBJECT).encode()).decode(),
        "messageId": "42",
        "publishTime": "2026-11-21T12:00:00.1Z",
    }
    message.update(overrides)
    return {"message": message, "subscription": "projects/relay-local/subscriptions/gcs-events-bridge"}


class Target(http.server.ThreadingHTTPServer):
    """Records each request and answers with `status`."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _TargetHandler)
        self.status = 204
        self.requests: list[tuple[str, dict[str, str], bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class _TargetHandler(http.server.BaseHTTPRequestHandler):
    server: Target

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append((self.path, dict(self.headers.items()), body))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def target() -> Iterator[Target]:
    server = Target()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def bridge(target: Target) -> Iterator[StorageEventBridge]:
    with StorageEventBridge(target.url) as running:
        yield running


def deliver(bridge: StorageEventBridge, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", bridge.port, timeout=5)
    try:
        conn.request("POST", "/", body=body, headers={"Content-Type": "application/json"})
        return conn.getresponse().status
    finally:
        conn.close()


def test_finalize_is_forwarded_as_the_eventarc_binary_cloudevent(bridge: StorageEventBridge, target: Target) -> None:
    assert deliver(bridge, json.dumps(push()).encode()) == 204
    [(path, headers, body)] = target.requests
    assert path == "/"
    ce = {k.lower(): v for k, v in headers.items() if k.lower().startswith("ce-")}
    assert ce == {
        "ce-id": "42",
        "ce-specversion": "1.0",
        "ce-type": "google.cloud.storage.object.v1.finalized",
        "ce-source": "//storage.googleapis.com/projects/_/buckets/in",
        "ce-subject": "objects/a b.csv",
        "ce-time": "2026-11-21T12:00:00Z",
    }
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == OBJECT


@pytest.mark.parametrize("status", [400, 404, 500, 503])
def test_a_failing_target_gets_a_500_so_the_message_is_redelivered(
    bridge: StorageEventBridge, target: Target, status: int
) -> None:
    target.status = status
    assert deliver(bridge, json.dumps(push()).encode()) == 500


def test_an_unreachable_target_gets_a_500() -> None:
    with StorageEventBridge(f"http://127.0.0.1:{free_port()}/") as bridge:
        assert deliver(bridge, json.dumps(push()).encode()) == 500


@pytest.mark.parametrize(
    "body",
    [
        json.dumps(push("OBJECT_DELETE")).encode(),
        json.dumps(push("OBJECT_METADATA_UPDATE")).encode(),
        b"not json",
        json.dumps({"no": "message"}).encode(),
        json.dumps(push(data="%%% not base64")).encode(),
    ],
    ids=["delete", "metadata-update", "not-json", "no-message", "bad-data"],
)
def test_other_events_and_malformed_pushes_are_acked_and_dropped(
    bridge: StorageEventBridge, target: Target, body: bytes
) -> None:
    assert deliver(bridge, body) == 204
    assert target.requests == []


def test_concurrent_deliveries_are_in_flight_together(target: Target) -> None:
    gate = threading.Barrier(3, timeout=5)

    class Slow(_TargetHandler):
        def do_POST(self) -> None:
            gate.wait()  # only passes once three requests are being handled at the same time
            super().do_POST()

    target.RequestHandlerClass = Slow
    with StorageEventBridge(target.url) as bridge:
        results: list[int] = []
        threads = [
            threading.Thread(target=lambda: results.append(deliver(bridge, json.dumps(push()).encode())))
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results == [204, 204, 204]


def test_payload_format_none_is_rejected_by_the_mapping() -> None:
    body = push()
    body["message"]["attributes"]["payloadFormat"] = "NONE"
    with pytest.raises(ValueError, match="payloadFormat"):
        cloud_event_from_push(body)
