"""Notifier on a Pub/Sub topic; the client is created on first publish (it costs ~0.2 s to import)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from relay.errors import NotifyUnavailableError

_PUBLISH_TIMEOUT = 30.0


class PubSubNotifier:
    def __init__(self, topic: str) -> None:
        self._topic = topic
        self._client: Any = None
        self._lock = threading.Lock()

    def publish(self, data: bytes, attributes: Mapping[str, str]) -> None:
        # Here, not at the top: the client loads with the first notification, never at the function's cold start.
        from google.api_core import exceptions

        with self._lock:
            if self._client is None:
                from google.cloud import pubsub_v1

                # With PUBSUB_EMULATOR_HOST set the client goes anonymous to the emulator.
                self._client = pubsub_v1.PublisherClient()
        try:
            self._client.publish(self._topic, data, **attributes).result(timeout=_PUBLISH_TIMEOUT)
        except (exceptions.GoogleAPIError, TimeoutError) as exc:
            raise NotifyUnavailableError(f"{self._topic}: publish failed: {exc}") from exc
