from __future__ import annotations

import base64
import json

import pytest

from relay.events import (
    MAX_GENERATION,
    InlineDelivery,
    ObjectDelivery,
    Skip,
    parse_pubsub_event,
    parse_storage_event,
)

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


def envelope(**message: object) -> dict[str, object]:
    return {"subscription": "projects/p/subscriptions/s", "message": {"messageId": "42", **message}}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (envelope(data=5), "expected message data: base64 text, found number 5"),
        (envelope(data=["eyJ9"]), "expected message data: base64 text, found a list of 1"),
        (envelope(data={"a": 1}), "expected message data: base64 text, found a mapping of 1"),
        (envelope(data="ab\u00e9="), "expected message data: base64 text, found other text"),
        (envelope(attributes=["trigger_uri", "gs://b/t.json"]), "expected message attributes: a mapping of strings"),
        (envelope(attributes="trigger_uri"), "expected message attributes: a mapping of strings, found string"),
        (envelope(attributes={"trigger_uri": 7}), "expected message attributes: a mapping of strings"),
        (envelope(attributes={"bucketId": ["b"]}), "expected message attributes: a mapping of strings"),
        (envelope(messageId=42.5), "expected messageId: a string, found number 42.5"),
        (envelope(messageId=["42"]), "expected messageId: a string, found a list of 1"),
        ({"message": ["data"]}, "expected a Pub/Sub message in the event data"),
        ({"message": "eyJ9"}, "expected a Pub/Sub message in the event data"),
        (["message"], "expected a Pub/Sub message in the event data"),
        (b'{"message": {}}', "expected a Pub/Sub message in the event data"),
        (None, "expected a Pub/Sub message in the event data"),
    ],
)
def test_every_malformed_envelope_is_a_malformed_skip_never_an_exception(data: object, reason: str):
    delivery = parse_pubsub_event(PUBSUB, data)
    assert isinstance(delivery, Skip) and delivery.malformed
    assert reason in delivery.reason, delivery.reason


BUCKET_RULE = "expected a bucket name"
OBJECT_RULE = "expected an object name"
GENERATION_RULE = f"expected a generation: a whole number from 1 to {MAX_GENERATION}"


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("gs://Bad Bucket!/a.json", BUCKET_RULE),
        ("gs://ab/a.json", BUCKET_RULE),  # 2 characters: one short
        ("gs://" + "b" * 64 + "/a.json", BUCKET_RULE),  # 64 without dots: one past
        ("gs://" + ".".join(["b" * 63] * 3) + "." + "b" * 31 + "/a.json", BUCKET_RULE),  # 223 with dots
        ("gs://" + ".".join(["b" * 64, "b"]) + "/a.json", BUCKET_RULE),  # a part of 64 between dots
        ("gs://-bucket/a.json", BUCKET_RULE),
        ("gs://b/a\n.json", OBJECT_RULE),
        ("gs://b/" + "\u00e9" * 509 + "xy.json", OBJECT_RULE),  # 1,018 + 7 bytes: one past 1,024
        ("gs://b/\ud800.json", OBJECT_RULE),  # JSON can carry a lone surrogate; UTF-8 cannot
        ("gs://b/", OBJECT_RULE),
        ("gs://b/t.json#" + "9" * 30, GENERATION_RULE),
        (f"gs://b/t.json#{MAX_GENERATION + 1}", GENERATION_RULE),  # one past int64
        ("gs://b/t.json#0", GENERATION_RULE),
        ("gs://b/t.json#", GENERATION_RULE),
        ("gs://b/t.json#\u0663", GENERATION_RULE),  # an Arabic-Indic digit, which int() would read
        ("s3://b/t.json", "expected trigger_uri gs://bucket/object[#generation]"),
    ],
)
def test_a_trigger_uri_that_names_no_cloud_storage_object_is_a_malformed_skip(uri: str, reason: str):
    delivery = parse_pubsub_event(PUBSUB, message(trigger_uri=uri))
    assert isinstance(delivery, Skip) and delivery.malformed
    assert delivery.reason.startswith(reason), delivery.reason


@pytest.mark.parametrize(
    "uri",
    [
        "gs://abc/t.json",  # 3 characters: the shortest name
        "gs://" + "b" * 63 + "/t.json",
        "gs://" + ".".join(["b" * 63] * 3) + "." + "b" * 30 + "/t.json",  # 222 with dots
        "gs://my_bucket.example-1/" + "\u00e9" * 509 + "x.json",  # 1,018 + 6 bytes: exactly 1,024
        f"gs://b00/t.json#{MAX_GENERATION}",
        "gs://b00/t.json#1",
    ],
)
def test_names_and_generations_at_cloud_storage_limits_are_objects(uri: str):
    delivery = parse_pubsub_event(PUBSUB, message(trigger_uri=uri))
    assert isinstance(delivery, ObjectDelivery), delivery
    assert delivery.uri == uri.partition("#")[0]


def test_a_generation_out_of_int64_range_is_malformed_on_every_path():
    too_big = "9" * 30
    stored = parse_storage_event(STORAGE, {"bucket": "triggers", "name": "t.json", "generation": too_big})
    notified = parse_pubsub_event(
        PUBSUB,
        message(
            b"{}",
            payloadFormat="JSON_API_V1",
            bucketId="triggers",
            objectId="t.json",
            objectGeneration=too_big,
            eventType="OBJECT_FINALIZE",
        ),
    )
    for delivery in (stored, notified):
        assert isinstance(delivery, Skip) and delivery.malformed and delivery.reason.startswith(GENERATION_RULE)


def test_a_notification_with_a_hostile_body_still_names_its_object():
    attrs = {"bucketId": "triggers", "objectId": "t.json", "objectGeneration": "3", "eventType": "OBJECT_FINALIZE"}
    deep = parse_pubsub_event(PUBSUB, message(b"[" * 100_000, **attrs))
    assert isinstance(deep, ObjectDelivery) and (deep.generation, deep.size) == (3, None)
