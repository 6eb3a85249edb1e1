"""Turn an incoming CloudEvent into what Relay must do with it: read an object, take inline text, or skip."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from relay import naming
from relay.triggers import Format, format_for

STORAGE_FINALIZED = "google.cloud.storage.object.v1.finalized"
PUBSUB_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"


@dataclass(frozen=True)
class EventInfo:
    """The CloudEvent's own identity, carried into logs and records."""

    id: str
    type: str
    source: str
    time: datetime | None


@dataclass(frozen=True)
class ObjectDelivery:
    """Read gs://bucket/name (at `generation`, when known) as a trigger file."""

    event: EventInfo
    bucket: str
    name: str
    generation: int | None
    size: int | None
    via: str  # storage-event, storage-notification or trigger-uri

    @property
    def uri(self) -> str:
        return naming.object_uri(self.bucket, self.name)

    @property
    def format(self) -> Format | None:
        return format_for(self.name)


@dataclass(frozen=True)
class InlineDelivery:
    """A trigger document carried in the message itself."""

    event: EventInfo
    topic: str
    message_id: str
    data: bytes
    format: Format

    @property
    def uri(self) -> str:
        return f"{self.topic}#{self.message_id}"


@dataclass(frozen=True)
class Skip:
    """Nothing to launch; `reason` goes to the log. `malformed` marks events that should never happen."""

    event: EventInfo
    uri: str
    reason: str
    malformed: bool = False


Delivery = ObjectDelivery | InlineDelivery | Skip


def event_info(attributes: Mapping[str, Any]) -> EventInfo:
    return EventInfo(
        id=str(attributes.get("id", "")),
        type=str(attributes.get("type", "")),
        source=str(attributes.get("source", "")),
        time=_parse_time(attributes.get("time")),
    )


def parse_storage_event(attributes: Mapping[str, Any], data: Any) -> Delivery:
    """A `storage.object.v1.finalized` CloudEvent, as Eventarc delivers it."""
    event = event_info(attributes)
    if event.type != STORAGE_FINALIZED:
        return Skip(event, event.source, f"event type {event.type!r} is not {STORAGE_FINALIZED}")
    if not isinstance(data, Mapping) or not data.get("bucket") or not data.get("name"):
        return Skip(event, event.source, "expected object data with bucket and name, found none", malformed=True)
    return ObjectDelivery(
        event=event,
        bucket=str(data["bucket"]),
        name=str(data["name"]),
        generation=_int_or_none(data.get("generation")),
        size=_int_or_none(data.get("size")),
        via="storage-event",
    )


def parse_pubsub_event(attributes: Mapping[str, Any], data: Any) -> Delivery:
    """A `pubsub.topic.v1.messagePublished` CloudEvent: a storage notification, a trigger URI, or inline text."""
    event = event_info(attributes)
    if event.type != PUBSUB_PUBLISHED:
        return Skip(event, event.source, f"event type {event.type!r} is not {PUBSUB_PUBLISHED}")
    message = data.get("message") if isinstance(data, Mapping) else None
    if not isinstance(message, Mapping):
        return Skip(event, event.source, "expected a Pub/Sub message in the event data, found none", malformed=True)
    message_attributes = message.get("attributes") or {}
    message_id = str(message.get("messageId") or message.get("message_id") or event.id)
    topic = _topic(event.source)
    try:
        body = base64.b64decode(message.get("data") or "", validate=True)
    except (binascii.Error, ValueError):
        return Skip(event, f"{topic}#{message_id}", "message data is not base64", malformed=True)
    if message_attributes.get("payloadFormat") == "JSON_API_V1" or "bucketId" in message_attributes:
        return _notification(event, message_attributes, body)
    if "trigger_uri" in message_attributes:
        return _trigger_uri(event, str(message_attributes["trigger_uri"]))
    fmt: Format = "yaml" if str(message_attributes.get("format", "")).lower() in ("yaml", "yml") else "json"
    return InlineDelivery(event=event, topic=topic, message_id=message_id, data=body, format=fmt)


def _notification(event: EventInfo, attributes: Mapping[str, Any], body: bytes) -> Delivery:
    uri = naming.object_uri(str(attributes.get("bucketId", "")), str(attributes.get("objectId", "")))
    if attributes.get("eventType") != "OBJECT_FINALIZE":
        return Skip(event, uri, f"notification event type {attributes.get('eventType')!r} is not OBJECT_FINALIZE")
    if not attributes.get("bucketId") or not attributes.get("objectId"):
        return Skip(event, uri, "expected bucketId and objectId attributes, found none", malformed=True)
    try:
        resource = json.loads(body) if body else {}
    except ValueError:
        resource = {}
    return ObjectDelivery(
        event=event,
        bucket=str(attributes["bucketId"]),
        name=str(attributes["objectId"]),
        generation=_int_or_none(attributes.get("objectGeneration")),
        size=_int_or_none(resource.get("size")) if isinstance(resource, dict) else None,
        via="storage-notification",
    )


def _trigger_uri(event: EventInfo, value: str) -> Delivery:
    location, _, generation = value.partition("#")
    try:
        bucket, name = naming.split_gs_uri(location)
    except ValueError:
        bucket = name = ""
    if not bucket or not name or (generation and not (generation.isascii() and generation.isdecimal())):
        return Skip(event, value, "expected trigger_uri gs://bucket/object[#generation]", malformed=True)
    return ObjectDelivery(
        event=event,
        bucket=bucket,
        name=name,
        generation=int(generation) if generation else None,
        size=None,
        via="trigger-uri",
    )


def _topic(source: str) -> str:
    """`projects/P/topics/T` from `//pubsub.googleapis.com/projects/P/topics/T`."""
    return source.split("pubsub.googleapis.com/", 1)[-1] if source else "pubsub"


def _int_or_none(value: object) -> int | None:
    # Storage int64 fields arrive as strings or numbers depending on the path.
    try:
        return int(str(value))
    except ValueError:
        return None


def _parse_time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
