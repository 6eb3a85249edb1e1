"""The records Relay publishes on the notify topic, as `make up` reads them: through a pull subscription of its own.

Every writer publishes what it records (the functions, the local runner, the `relay` command's cancels and reruns,
the reconciler), so this is where the terminal learns of what no function logged.
"""

from __future__ import annotations

import json
from typing import Any

from devstack.pubsub import create_push_subscription, subscriber_client, subscription_path

_BATCH = 100
_PULL_SECONDS = 0.5


class RecordFeed:
    """Records published since the subscription was made, each once; `with` closes the client."""

    def __init__(self, host_port: str, project: str, topic: str, subscription: str) -> None:
        # An empty push endpoint makes a pull subscription (Pub/Sub's rule).
        create_push_subscription(host_port, project, subscription, topic=topic, endpoint="")
        self._path = subscription_path(project, subscription)
        self._client: Any = subscriber_client(host_port)

    def poll(self) -> list[dict[str, Any]]:
        """What arrived since the last poll, acknowledged; a message that is not a JSON record is dropped."""
        from google.api_core.exceptions import DeadlineExceeded

        try:
            response = self._client.pull(
                subscription=self._path, max_messages=_BATCH, timeout=_PULL_SECONDS, retry=None
            )
        except DeadlineExceeded:
            return []  # nothing within the wait
        received = list(response.received_messages)
        if received:
            self._client.acknowledge(subscription=self._path, ack_ids=[item.ack_id for item in received])
        found = []
        for item in received:
            try:
                record = json.loads(bytes(item.message.data))
            except ValueError:
                continue
            if isinstance(record, dict):
                found.append(record)
        return found

    def close(self) -> None:
        self._client.close()
