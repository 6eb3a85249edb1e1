"""Cloud Functions entry points: decode the event, hand it to Relay, log one outcome line."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import functions_framework
from cloudevents.http import CloudEvent

from relay import logs, runtime
from relay.errors import TransientError
from relay.events import Delivery, parse_pubsub_event, parse_storage_event
from relay.outcome import Outcome
from relay.service import handle_delivery

logs.configure()


@functions_framework.cloud_event
def on_object_finalized(cloud_event: CloudEvent) -> None:
    """google.cloud.storage.object.v1.finalized: read the object as a trigger file."""
    _handle(cloud_event, parse_storage_event)


@functions_framework.cloud_event
def on_message_published(cloud_event: CloudEvent) -> None:
    """google.cloud.pubsub.topic.v1.messagePublished: an inline trigger, a storage notification or a URI."""
    _handle(cloud_event, parse_pubsub_event)


def _handle(cloud_event: CloudEvent, parse: Callable[[Mapping[str, Any], Any], Delivery]) -> None:
    attributes = cloud_event.get_attributes()
    event_id, uri = str(attributes.get("id", "")), str(attributes.get("source", ""))
    try:
        # The parser turns every malformed shape into a Skip; it sits inside the try all the same, so that even a
        # bug there ends in this event's one outcome line.
        delivery = parse(attributes, cloud_event.get_data())
        event_id, uri = delivery.event.id, delivery.uri
        outcome = handle_delivery(runtime.current(os.environ), delivery)
    except Exception as error:
        # Permanent problems were recorded and returned as outcomes; anything raised is worth a redelivery
        # (transient faults, settings that need a redeploy, or a bug that a fix will clear).
        severity = None if isinstance(error, TransientError) else "ERROR"
        message = f"{type(error).__name__}: {error}"
        logs.log_outcome(Outcome("retried", message, event_id, uri, severity_override=severity))
        raise
    logs.log_outcome(outcome)
