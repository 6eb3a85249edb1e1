"""Events straight to the functions, for machines where the Pub/Sub emulator cannot run (no Java, no Cloud SDK)."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Self

from devstack.bridge import cloud_event_from_push, post
from devstack.lifecycle import Lifecycle

_RETRY_SECONDS = 1.0  # as often as the emulator redelivers a push that was not acknowledged
_GIVE_UP_SECONDS = 600.0


class DirectDelivery(Lifecycle):
    """Posts each event until the function acknowledges it (2xx), as a push subscription would, in the background."""

    def __init__(self, object_finalized_url: str, push_endpoint: str) -> None:
        self._object_finalized_url = object_finalized_url
        self._push_endpoint = push_endpoint
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def storage_event(self, resource: Mapping[str, Any]) -> str:
        """Deliver `google.cloud.storage.object.v1.finalized` for an object resource; return the event id."""
        event_id = uuid.uuid4().hex
        notification = {
            "message": {
                "messageId": event_id,
                "data": base64.b64encode(json.dumps(dict(resource)).encode()).decode(),
                "attributes": {
                    "bucketId": str(resource["bucket"]),
                    "objectId": str(resource["name"]),
                    "objectGeneration": str(resource["generation"]),
                    "eventType": "OBJECT_FINALIZE",
                    "eventTime": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                    "payloadFormat": "JSON_API_V1",
                },
            }
        }
        event = cloud_event_from_push(notification)
        if event is None:
            raise AssertionError("an OBJECT_FINALIZE notification always makes an event")
        self._deliver(self._object_finalized_url, event.data, event.headers())
        return event_id

    def message(self, data: bytes, attributes: Mapping[str, str]) -> str:
        """Deliver a message as the push subscription of the trigger topic would; return its message id."""
        message_id = str(uuid.uuid4().int % 10**16)  # Pub/Sub message ids are decimal strings
        push = {
            "subscription": "direct-delivery",
            "message": {
                "data": base64.b64encode(data).decode(),
                "attributes": dict(attributes),
                "messageId": message_id,
                "publishTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            },
        }
        self._deliver(self._push_endpoint, json.dumps(push).encode(), {"Content-Type": "application/json"})
        return message_id

    def _deliver(self, url: str, body: bytes, headers: Mapping[str, str]) -> None:
        def attempt_until_acknowledged() -> None:
            deadline = time.monotonic() + _GIVE_UP_SECONDS
            while not self._stopping.is_set() and time.monotonic() < deadline:
                try:
                    if 200 <= post(url, body, headers, timeout=540) < 300:
                        return
                except OSError:
                    pass  # the function is restarting or stopping: try again, as Pub/Sub would
                self._stopping.wait(_RETRY_SECONDS)

        thread = threading.Thread(target=attempt_until_acknowledged, name="direct-delivery", daemon=True)
        self._threads.append(thread)
        thread.start()

    def start(self) -> Self:
        self._stopping.clear()
        return self

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
