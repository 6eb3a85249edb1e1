"""Turns Pub/Sub pushes of GCS notifications into the binary-mode CloudEvents Eventarc delivers to functions."""

from __future__ import annotations

import base64
import binascii
import http.client
import http.server
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import urlsplit

from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from devstack.lifecycle import Lifecycle
from devstack.processes import LOOPBACK

__all__ = ["STORAGE_FINALIZED", "StorageCloudEvent", "StorageEventBridge", "cloud_event_from_push"]

STORAGE_FINALIZED = "google.cloud.storage.object.v1.finalized"

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StorageCloudEvent:
    """A storage CloudEvent in binary mode: attributes travel as ce-* headers, the object resource as body."""

    id: str
    type: str
    source: str
    subject: str
    time: str
    data: bytes

    def headers(self) -> dict[str, str]:
        """The ce-* headers and Content-Type, as the cloudevents SDK writes a binary-mode event (spec version 1.0)."""
        attributes = {
            "id": self.id,
            "type": self.type,
            "source": self.source,
            "subject": self.subject,
            "time": self.time,
            "datacontenttype": "application/json",
        }
        headers, _ = to_binary(CloudEvent(attributes, self.data), data_marshaller=_as_is)
        # Header names are case-insensitive; the SDK writes content-type, Eventarc (and the stack's logs) Content-Type.
        return {("Content-Type" if name == "content-type" else name): value for name, value in headers.items()}


def _as_is(data: bytes) -> bytes:
    """The object resource is already JSON: the body is sent as read, not serialized again."""
    return data


def cloud_event_from_push(push: Mapping[str, Any]) -> StorageCloudEvent | None:
    """Map a push of a JSON_API_V1 notification to the finalized CloudEvent; None for other event types.

    Raises ValueError for a push that is not a JSON_API_V1 storage notification.
    """
    message = push.get("message")
    if not isinstance(message, Mapping):
        raise ValueError("push body has no message")
    attributes = message.get("attributes") or {}
    if attributes.get("eventType") != "OBJECT_FINALIZE":
        return None
    if attributes.get("payloadFormat") != "JSON_API_V1":
        raise ValueError(f"payloadFormat {attributes.get('payloadFormat')!r} carries no object resource")
    try:
        bucket, name = attributes["bucketId"], attributes["objectId"]
        event_id, event_time = message["messageId"], attributes["eventTime"]
        data = base64.b64decode(message["data"], validate=True)
    except (KeyError, TypeError, binascii.Error) as exc:
        raise ValueError(f"incomplete storage notification: {exc!r}") from exc
    return StorageCloudEvent(
        # Eventarc uses the id of the Pub/Sub message that carried the notification.
        id=event_id,
        type=STORAGE_FINALIZED,
        source=f"//storage.googleapis.com/projects/_/buckets/{bucket}",
        subject=f"objects/{name}",
        time=event_time,
        data=data,
    )


def post(url: str, body: bytes, headers: Mapping[str, str], *, timeout: float) -> int:
    """POST and return the status. http.client, not urllib or requests: those route loopback through http_proxy."""
    target = urlsplit(url)
    conn = http.client.HTTPConnection(target.hostname or LOOPBACK, target.port or 80, timeout=timeout)
    try:
        path = (target.path or "/") + (f"?{target.query}" if target.query else "")
        conn.request("POST", path, body=body, headers=dict(headers))
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


class _Server(http.server.ThreadingHTTPServer):
    # Several deliveries may be in flight at once (the emulator pushes concurrently), as in production.
    daemon_threads = True
    bridge: StorageEventBridge


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self._reply(self.server.bridge.handle_push(body))

    def _reply(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("bridge %s: " + format, self.address_string(), *args)


class StorageEventBridge(Lifecycle):
    """A loopback HTTP endpoint for a push subscription on the GCS notification topic.

    Each OBJECT_FINALIZE notification is POSTed to `target_url` as a binary-mode
    `google.cloud.storage.object.v1.finalized` CloudEvent. The push is answered with 204 when the target
    answered 2xx and 500 otherwise, so the emulator redelivers what the function failed, as Eventarc would.
    Other event types and malformed pushes are acknowledged and dropped: redelivery cannot fix them.
    """

    def __init__(self, target_url: str, *, host: str = LOOPBACK, port: int = 0, forward_timeout: float = 540.0) -> None:
        target = urlsplit(target_url)
        if target.scheme != "http" or not target.hostname:
            raise ValueError(f"target_url must be an http:// URL, got {target_url!r}")
        self.target_url = target_url
        self._forward_timeout = forward_timeout
        self._host = host
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("bridge is not running")
        port: int = self._server.server_address[1]
        return port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}/"

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("bridge is already running")
        # Binding in the constructor of the server means the port is live before start() returns.
        server = _Server((self._host, self._port), _Handler)
        server.bridge = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="storage-event-bridge", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()

    def handle_push(self, body: bytes) -> int:
        """Forward one push body; return the status to answer the emulator with."""
        try:
            event = cloud_event_from_push(json.loads(body))
        except (ValueError, TypeError, AttributeError) as exc:
            _log.warning("bridge: dropping a push that is not a storage notification: %s", exc)
            return 204
        if event is None:
            return 204
        try:
            status = self.forward(event)
        except (OSError, http.client.HTTPException) as exc:
            _log.warning("bridge: %s for %s failed: %s", event.id, event.subject, exc)
            return 500
        if 200 <= status < 300:
            return 204
        _log.info(
            "bridge: target answered %d for event %s (%s); it will be redelivered", status, event.id, event.subject
        )
        return 500

    def forward(self, event: StorageCloudEvent) -> int:
        """POST `event` to the target in binary mode and return the target's status."""
        return post(self.target_url, event.data, event.headers(), timeout=self._forward_timeout)
