"""Turn an incoming CloudEvent into what Relay must do with it: read an object, take inline text, or skip."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from relay import naming
from relay.trace import Trace, incoming, span_for
from relay.triggers import Format, describe_value, format_for, not_utf8, value_shape

STORAGE_FINALIZED = "google.cloud.storage.object.v1.finalized"
PUBSUB_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"
NONCE_ATTRIBUTE = "nonce"  # set by `relay publish`, which must know the run key before any delivery
MAX_GENERATION = 2**63 - 1  # Cloud Storage generations are int64; a longer number can name no object version
# Cloud Storage's naming rules: what does not follow them names no object, and its client raises on some of it.
_OBJECT_RULE = "an object name: 1-1024 bytes of UTF-8, no carriage return or line feed, not . or .."
_GENERATION_RULE = f"a generation: a whole number from 1 to {MAX_GENERATION}"
_TRIGGER_URI_RULE = "trigger_uri gs://bucket/object[#generation]"


@dataclass(frozen=True)
class EventInfo:
    """The CloudEvent's own identity, carried into logs and records."""

    id: str
    type: str
    source: str
    time: datetime | None
    # The event's valid trace context as it came (relay.trace); the entry point makes Relay's span of it.
    trace: Trace | None = None


@dataclass(frozen=True)
class Message:
    """The Pub/Sub message a delivery came in. Its topic, never the object it names, decides the tenant; its
    identity keys a refusal, so that a message never writes a record under a key of the object's."""

    topic: str
    message_id: str
    nonce_or_publish_time: str | None = None

    @property
    def identity(self) -> str:
        return naming.message_identity(self.topic, self.message_id, self.nonce_or_publish_time)


@dataclass(frozen=True)
class ObjectDelivery:
    """Read gs://bucket/name (at `generation`, when known) as a trigger file."""

    event: EventInfo
    bucket: str
    name: str
    generation: int | None
    size: int | None  # a storage event's, as Cloud Storage sent it; None for a message's object (read from storage)
    via: str  # storage-event, storage-notification or trigger-uri
    # Where it came from: the message that named the object (a trigger_uri or a storage notification); None for
    # the bucket's own storage event, which Eventarc delivers from the bucket the deployment wired.
    origin: Message | None = None

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
    # The publisher's nonce attribute, else the message's publish time: both stay the same on redeliveries, and
    # they tell apart the emulator's messages, which it numbers from 1 again after every restart.
    nonce_or_publish_time: str | None = None

    @property
    def uri(self) -> str:
        return f"{self.topic}#{self.message_id}"

    @property
    def identity(self) -> str:
        """What the message's derived run key is a digest of."""
        return naming.message_identity(self.topic, self.message_id, self.nonce_or_publish_time)


@dataclass(frozen=True)
class Skip:
    """Nothing to launch; `reason` goes to the log. `malformed` marks events no platform sends (Relay's or its
    deployment's problem); `authored` marks a publisher's own mistake, theirs to fix."""

    event: EventInfo
    uri: str
    reason: str
    malformed: bool = False
    authored: bool = False


Delivery = ObjectDelivery | InlineDelivery | Skip


def event_info(attributes: Mapping[str, Any]) -> EventInfo:
    return EventInfo(
        id=str(attributes.get("id", "")),
        type=str(attributes.get("type", "")),
        source=str(attributes.get("source", "")),
        time=_parse_time(attributes.get("time")),
        trace=incoming(attributes),
    )


def with_span(delivery: Delivery) -> Delivery:
    """The delivery as Relay works on it: its event's trace context is Relay's own span of the event's trace (a new
    trace when the event came with none), which its records and its outcome line carry."""
    return replace(delivery, event=replace(delivery.event, trace=span_for(delivery.event.trace)))


def envelope_problem(attributes: Mapping[str, Any], data: Any) -> str | None:
    """Why a CloudEvent cannot be read at all: data past a trigger's own bounds (depth, values), or text with no
    UTF-8 form (a lone surrogate, which JSON can spell and no platform sends), which would fail whatever reads it."""
    shape = value_shape(data)
    if shape is not None:
        return f"expected event data of {shape.expected}, found {shape.found}"
    if not_utf8([dict(attributes), data], limit=1):
        return "expected event attributes and data in UTF-8, found a lone surrogate"
    return None


def parse_storage_event(attributes: Mapping[str, Any], data: Any) -> Delivery:
    """A `storage.object.v1.finalized` CloudEvent, as Eventarc delivers it."""
    event = event_info(attributes)
    unreadable = envelope_problem(attributes, data)
    if unreadable:
        return Skip(event, event.source, unreadable, malformed=True)
    if event.type != STORAGE_FINALIZED:
        return Skip(event, event.source, f"event type {event.type!r} is not {STORAGE_FINALIZED}")
    if not isinstance(data, Mapping) or not data.get("bucket") or not data.get("name"):
        return Skip(event, event.source, "expected object data with bucket and name, found none", malformed=True)
    return _object(
        event, data["bucket"], data["name"], data.get("generation"), _int_or_none(data.get("size")), "storage-event"
    )


def parse_pubsub_event(attributes: Mapping[str, Any], data: Any) -> Delivery:
    """A `pubsub.topic.v1.messagePublished` CloudEvent: a storage notification, a trigger URI, or inline text."""
    event = event_info(attributes)
    unreadable = envelope_problem(attributes, data)
    if unreadable:
        return Skip(event, event.source, unreadable, malformed=True)
    if event.type != PUBSUB_PUBLISHED:
        return Skip(event, event.source, f"event type {event.type!r} is not {PUBSUB_PUBLISHED}")
    message = data.get("message") if isinstance(data, Mapping) else None
    if not isinstance(message, Mapping):
        return Skip(event, event.source, "expected a Pub/Sub message in the event data, found none", malformed=True)
    # Every field is checked for its type here: whoever can publish chooses the shape, and a shape that slipped
    # through would raise later, outside the outcome log, and be redelivered until the dead letter.
    topic = topic_of(event.source)
    if not naming.is_topic_path(topic):
        # Eventarc names the topic it delivers from; a source that names none matches no tenant's topic either.
        found = describe_value(event.source)
        return Skip(
            event, event.source, f"expected a source naming {naming.TOPIC_PATH_RULE}, found {found}", malformed=True
        )
    message_id = message.get("messageId") or message.get("message_id") or event.id
    if not isinstance(message_id, str):
        found = describe_value(message_id)
        return Skip(event, topic, f"expected messageId: a string, found {found}", malformed=True)
    uri = f"{topic}#{message_id}"
    publish_time = message.get("publishTime", message.get("publish_time"))
    if publish_time is not None and not isinstance(publish_time, str):
        found = describe_value(publish_time)
        return Skip(event, uri, f"expected publishTime: a string, found {found}", malformed=True)
    message_attributes = message.get("attributes") or {}
    if not isinstance(message_attributes, Mapping) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in message_attributes.items()
    ):
        found = describe_value(message_attributes)
        return Skip(event, uri, f"expected message attributes: a mapping of strings, found {found}", malformed=True)
    if event.trace is None:  # the message's trace context, when the CloudEvent carries none of its own
        event = replace(event, trace=incoming({}, message_attributes))
    encoded = message.get("data") or ""
    if not isinstance(encoded, str):
        return Skip(event, uri, f"expected message data: base64 text, found {describe_value(encoded)}", malformed=True)
    try:
        body = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return Skip(event, uri, "expected message data: base64 text, found other text", malformed=True)
    stamp = message_attributes.get(NONCE_ATTRIBUTE) or publish_time or None
    if message_attributes.get("payloadFormat") == "JSON_API_V1" or "bucketId" in message_attributes:
        return _notification(event, message_attributes, Message(topic, message_id, stamp))
    if "trigger_uri" in message_attributes:
        return _trigger_uri(event, message_attributes["trigger_uri"], Message(topic, message_id, stamp))
    fmt: Format = "yaml" if message_attributes.get("format", "").lower() in ("yaml", "yml") else "json"
    return InlineDelivery(event, topic, message_id, body, fmt, nonce_or_publish_time=stamp)


def _notification(event: EventInfo, attributes: Mapping[str, Any], origin: Message) -> Delivery:
    """The object a notification names, and nothing else it says: its body (size, content type, metadata) is
    whatever its publisher chose, so an object's facts are read from storage at the named generation."""
    uri = naming.object_uri(str(attributes.get("bucketId", "")), str(attributes.get("objectId", "")))
    if attributes.get("eventType") != "OBJECT_FINALIZE":
        return Skip(event, uri, f"notification event type {attributes.get('eventType')!r} is not OBJECT_FINALIZE")
    if not attributes.get("bucketId") or not attributes.get("objectId"):
        return Skip(event, uri, "expected bucketId and objectId attributes, found none", malformed=True)
    generation = attributes.get("objectGeneration")
    return _object(
        event, attributes["bucketId"], attributes["objectId"], generation, None, "storage-notification", origin
    )


def _trigger_uri(event: EventInfo, value: str, origin: Message) -> Delivery:
    """The object a `trigger_uri` attribute names; one that names none is its publisher's mistake (`authored`)."""
    location, hashed, generation = value.partition("#")
    if not location.startswith("gs://"):
        return Skip(event, value, f"expected {_TRIGGER_URI_RULE}, found {describe_value(value)}", authored=True)
    bucket, _, name = location.removeprefix("gs://").partition("/")
    return _object(event, bucket, name, generation if hashed else None, None, "trigger-uri", origin)


def _object(
    event: EventInfo,
    bucket: object,
    name: object,
    generation: object,
    size: int | None,
    via: str,
    origin: Message | None = None,
) -> Delivery:
    """An ObjectDelivery, or a skip naming the first part that names no Cloud Storage object: the publisher's own
    mistake when it wrote a trigger_uri (`authored`), else an event no platform sends (`malformed`)."""
    shown = f"gs://{bucket}/{name}"
    authored = via == "trigger-uri"

    def skip(rule: str, found: object) -> Skip:
        reason = f"expected {rule}, found {describe_value(found)}"
        return Skip(event, shown, reason, malformed=not authored, authored=authored)

    if not isinstance(bucket, str) or not naming.is_bucket_name(bucket):
        return skip(naming.BUCKET_RULE, bucket)
    if not isinstance(name, str) or not _valid_object(name):
        return skip(_OBJECT_RULE, name)
    number = _generation(generation)
    if generation is not None and number is None:
        return skip(_GENERATION_RULE, generation)
    return ObjectDelivery(event=event, bucket=bucket, name=name, generation=number, size=size, via=via, origin=origin)


def _valid_object(name: str) -> bool:
    try:
        size = len(name.encode("utf-8"))  # a lone surrogate (JSON's \ud800) cannot be encoded
    except UnicodeEncodeError:
        return False
    return 0 < size <= 1024 and "\r" not in name and "\n" not in name and name not in (".", "..")


def _generation(value: object) -> int | None:
    """A generation as Cloud Storage has them (int64, from 1), from a decimal string or a number; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        # isdecimal() alone takes other scripts' digits ("\u0663") that int() would read; 19 digits bound int().
        if not (value.isascii() and value.isdecimal() and len(value) <= 19):
            return None
        value = int(value)
    if isinstance(value, int) and 1 <= value <= MAX_GENERATION:
        return value
    return None


def topic_of(source: str) -> str:
    """`projects/P/topics/T` from a messagePublished event's source, `//pubsub.googleapis.com/projects/P/topics/T`."""
    return source.removeprefix("//pubsub.googleapis.com/")


def _int_or_none(value: object) -> int | None:
    # Storage int64 fields arrive as strings or numbers depending on the path; anything else is unknown.
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _parse_time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)  # Python 3.11's reads "Z" and nanoseconds
    except ValueError:
        return None
