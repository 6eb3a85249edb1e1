from __future__ import annotations

import base64
import json

from relay.events import InlineDelivery, ObjectDelivery, Skip, parse_pubsub_event, parse_storage_event

STORAGE = {
    "id": "evt-1",
    "type": "google.cloud.storage.object.v1.finalized",
    "source": "//storage.googleapis.com/projects/_/buckets/triggers",
    "time": "2026-11-21T12:00:00.123456789Z",
}
PUBSUB = {
    "id": "msg-1",
    "type": "google.cloud.pubsub.topic.v1.messagePublished",
    "source": "//pubsub.googleapis.com/projects/p/topics/relay-triggers",
    "time": "2026-11-21T12:00:00Z",
}


def message(data: bytes = b"", **attributes: str) -> dict[str, object]:
    return {
        "subscription": "projects/p/subscriptions/s",
        "message": {"data": base64.b64encode(data).decode(), "attributes": attributes, "messageId": "42"},
    }


def test_storage_event_fields_arrive_as_strings_or_numbers():
    delivery = parse_storage_event(STORAGE, {"bucket": "triggers", "name": "a/t.json", "generation": "17", "size": 5})
    assert isinstance(delivery, ObjectDelivery)
    assert (delivery.uri, delivery.generation, delivery.size, delivery.via) == (
        "gs://triggers/a/t.json",
        17,
        5,
        "storage-event",
    )
    assert delivery.event.time is not None and delivery.event.time.microsecond == 123456


def test_other_storage_event_types_are_skipped():
    delivery = parse_storage_event({**STORAGE, "type": "google.cloud.storage.object.v1.deleted"}, {})
    assert isinstance(delivery, Skip) and not delivery.malformed


def test_a_storage_notification_is_the_same_object_as_the_storage_event():
    resource = json.dumps({"name": "a/t.json", "bucket": "triggers", "size": "5"}).encode()
    attrs = {
        "payloadFormat": "JSON_API_V1",
        "bucketId": "triggers",
        "objectId": "a/t.json",
        "objectGeneration": "17",
        "eventType": "OBJECT_FINALIZE",
    }
    delivery = parse_pubsub_event(PUBSUB, message(resource, **attrs))
    assert isinstance(delivery, ObjectDelivery)
    assert (delivery.uri, delivery.generation, delivery.size, delivery.via) == (
        "gs://triggers/a/t.json",
        17,
        5,
        "storage-notification",
    )
    deleted = parse_pubsub_event(PUBSUB, message(resource, **{**attrs, "eventType": "OBJECT_DELETE"}))
    assert isinstance(deleted, Skip) and "OBJECT_DELETE" in deleted.reason


def test_a_trigger_uri_attribute_names_an_object_with_or_without_generation():
    plain = parse_pubsub_event(PUBSUB, message(trigger_uri="gs://b/t.yaml"))
    pinned = parse_pubsub_event(PUBSUB, message(trigger_uri="gs://b/t.yaml#9"))
    assert isinstance(plain, ObjectDelivery) and plain.generation is None and plain.format == "yaml"
    assert isinstance(pinned, ObjectDelivery) and pinned.generation == 9
    for bad_uri in ("s3://b/t.yaml", "gs://b/t.yaml#\u00b2", "gs://b/t.yaml#-1"):
        bad = parse_pubsub_event(PUBSUB, message(trigger_uri=bad_uri))
        assert isinstance(bad, Skip) and bad.malformed


def test_anything_else_is_an_inline_document():
    delivery = parse_pubsub_event(PUBSUB, message(b"pipeline: echo", format="yaml"))
    assert isinstance(delivery, InlineDelivery)
    assert (delivery.topic, delivery.message_id, delivery.format) == ("projects/p/topics/relay-triggers", "42", "yaml")
    assert delivery.uri == "projects/p/topics/relay-triggers#42"


def test_malformed_messages_are_skipped_as_errors():
    assert isinstance(parse_pubsub_event(PUBSUB, {"nothing": 1}), Skip)
    broken = parse_pubsub_event(PUBSUB, {"message": {"data": "***", "attributes": {"a": "b"}}})
    assert isinstance(broken, Skip) and broken.malformed
