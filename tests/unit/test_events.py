from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from relay.events import (
    MAX_GENERATION,
    Delivery,
    InlineDelivery,
    Message,
    ObjectDelivery,
    Skip,
    event_info,
    parse_pubsub_event,
    parse_storage_event,
)
from relay.naming import TOPIC_PATH_RULE
from relay.service import Relay, handle_delivery
from relay.triggers import MAX_VALUES, describe_value

STORAGE = {
    "id": "evt-1",
    "type": "google.cloud.storage.object.v1.finalized",
    "source": "//storage.googleapis.com/projects/_/buckets/triggers",
    "time": "2026-11-21T12:00:00.123456789Z",
}
PUBSUB = {
    "id": "msg-1",
    "type": "google.cloud.pubsub.topic.v1.messagePublished",
    "source": "//pubsub.googleapis.com/projects/proj-p/topics/relay-triggers",
    "time": "2026-11-21T12:00:00Z",
}


def message(data: bytes = b"", **attributes: str) -> dict[str, object]:
    return {
        "subscription": "projects/proj-p/subscriptions/s",
        "message": {"data": base64.b64encode(data).decode(), "attributes": attributes, "messageId": "42"},
    }


def logged(relay: Relay, delivery: Delivery) -> tuple[str, str, str]:
    """What the outcome line of this delivery says: outcome, severity, message."""
    outcome = handle_delivery(relay, delivery)
    return outcome.outcome, outcome.severity, outcome.message


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
    # The body's size is its publisher's to choose: the object's own is read from storage.
    assert (delivery.uri, delivery.generation, delivery.size, delivery.via) == (
        "gs://triggers/a/t.json",
        17,
        None,
        "storage-notification",
    )
    assert delivery.origin == Message("projects/proj-p/topics/relay-triggers", "42")
    # Its nonce, else its publish time, tells it from another message of the same id (a restarted emulator's).
    stamped = parse_pubsub_event(PUBSUB, message(resource, **attrs, nonce="n-7"))
    assert isinstance(stamped, ObjectDelivery) and stamped.origin == Message(
        "projects/proj-p/topics/relay-triggers", "42", "n-7"
    )
    deleted = parse_pubsub_event(PUBSUB, message(resource, **{**attrs, "eventType": "OBJECT_DELETE"}))
    assert isinstance(deleted, Skip) and "OBJECT_DELETE" in deleted.reason


def test_a_trigger_uri_attribute_names_an_object_with_or_without_generation():
    plain = parse_pubsub_event(PUBSUB, message(trigger_uri="gs://b00/t.yaml"))
    pinned = parse_pubsub_event(PUBSUB, message(trigger_uri="gs://b00/t.yaml#9"))
    assert isinstance(plain, ObjectDelivery) and plain.generation is None and plain.format == "yaml"
    assert isinstance(pinned, ObjectDelivery) and pinned.generation == 9
    # The message that named it travels with it: its topic, never the object, decides the tenant.
    assert plain.origin is not None and (plain.origin.topic, plain.origin.message_id) == (
        "projects/proj-p/topics/relay-triggers",
        "42",
    )
    stamped = parse_pubsub_event(PUBSUB, envelope(attributes={"trigger_uri": "gs://b00/t.yaml"}, publishTime="T1"))
    assert isinstance(stamped, ObjectDelivery) and stamped.origin == Message(
        "projects/proj-p/topics/relay-triggers", "42", "T1"
    )
    for bad_uri in ("s3://b/t.yaml", "gs://b00/t.yaml#\u00b2", "gs://b00/t.yaml#-1"):
        bad = parse_pubsub_event(PUBSUB, message(trigger_uri=bad_uri))
        assert isinstance(bad, Skip) and bad.authored and not bad.malformed


def test_anything_else_is_an_inline_document():
    delivery = parse_pubsub_event(PUBSUB, message(b"pipeline: echo", format="yaml"))
    assert isinstance(delivery, InlineDelivery)
    assert (delivery.topic, delivery.message_id, delivery.format) == (
        "projects/proj-p/topics/relay-triggers",
        "42",
        "yaml",
    )
    assert delivery.uri == "projects/proj-p/topics/relay-triggers#42"


def test_malformed_messages_are_skipped_as_errors(relay: Relay):
    empty = parse_pubsub_event(PUBSUB, {"nothing": 1})
    assert isinstance(empty, Skip) and empty.malformed and empty.uri == PUBSUB["source"]
    assert logged(relay, empty) == ("skipped", "ERROR", "expected a Pub/Sub message in the event data, found none")
    broken = parse_pubsub_event(PUBSUB, {"message": {"data": "***", "attributes": {"a": "b"}}})
    assert isinstance(broken, Skip) and broken.malformed and broken.uri == "projects/proj-p/topics/relay-triggers#msg-1"
    assert logged(relay, broken) == ("skipped", "ERROR", "expected message data: base64 text, found other text")


TOPIC = "projects/proj-p/topics/relay-triggers"


def envelope(**message: object) -> dict[str, object]:
    return {"subscription": "projects/proj-p/subscriptions/s", "message": {"messageId": "42", **message}}


@pytest.mark.parametrize(
    ("data", "reason", "uri"),
    [
        (envelope(data=5), "expected message data: base64 text, found number 5", f"{TOPIC}#42"),
        (envelope(data=["eyJ9"]), "expected message data: base64 text, found a list of 1", f"{TOPIC}#42"),
        (envelope(data={"a": 1}), "expected message data: base64 text, found a mapping of 1", f"{TOPIC}#42"),
        (envelope(data="ab\u00e9="), "expected message data: base64 text, found other text", f"{TOPIC}#42"),
        (
            envelope(attributes=["trigger_uri", "gs://b00/t.json"]),
            "expected message attributes: a mapping of strings",
            f"{TOPIC}#42",
        ),
        (
            envelope(attributes="trigger_uri"),
            "expected message attributes: a mapping of strings, found string",
            f"{TOPIC}#42",
        ),
        (envelope(attributes={"trigger_uri": 7}), "expected message attributes: a mapping of strings", f"{TOPIC}#42"),
        (envelope(attributes={"bucketId": ["b"]}), "expected message attributes: a mapping of strings", f"{TOPIC}#42"),
        (envelope(messageId=42.5), "expected messageId: a string, found number 42.5", TOPIC),
        (envelope(messageId=["42"]), "expected messageId: a string, found a list of 1", TOPIC),
        (envelope(publishTime=1764453501), "expected publishTime: a string, found number 1764453501", f"{TOPIC}#42"),
        (envelope(publish_time={"seconds": 1}), "expected publishTime: a string, found a mapping of 1", f"{TOPIC}#42"),
        ({"message": ["data"]}, "expected a Pub/Sub message in the event data", PUBSUB["source"]),
        ({"message": "eyJ9"}, "expected a Pub/Sub message in the event data", PUBSUB["source"]),
        (["message"], "expected a Pub/Sub message in the event data", PUBSUB["source"]),
        (b'{"message": {}}', "expected a Pub/Sub message in the event data", PUBSUB["source"]),
        (None, "expected a Pub/Sub message in the event data", PUBSUB["source"]),
    ],
)
def test_every_malformed_envelope_is_a_malformed_skip_never_an_exception(
    relay: Relay, data: object, reason: str, uri: str
):
    delivery = parse_pubsub_event(PUBSUB, data)
    assert isinstance(delivery, Skip) and delivery.malformed and delivery.uri == uri
    assert reason in delivery.reason, delivery.reason
    assert logged(relay, delivery)[:2] == ("skipped", "ERROR")


PUBLISHED = "2026-11-29T21:58:21.511Z"


@pytest.mark.parametrize(
    ("fields", "stamp"),
    [
        ({"attributes": {"nonce": "5f3a"}, "publishTime": PUBLISHED}, "5f3a"),
        ({"attributes": {"nonce": "5f3a"}}, "5f3a"),
        ({"publishTime": PUBLISHED}, PUBLISHED),
        ({"publish_time": PUBLISHED}, PUBLISHED),
        ({"publishTime": PUBLISHED, "publish_time": "2026-11-29T21:58:22Z"}, PUBLISHED),
        ({"attributes": {"nonce": ""}, "publishTime": PUBLISHED}, PUBLISHED),
        ({"attributes": {"nonce": ""}, "publishTime": ""}, None),
        ({}, None),
    ],
    ids=["nonce-wins", "nonce", "publishTime", "publish_time", "camel-case-wins", "empty-nonce", "empty", "neither"],
)
def test_an_inline_message_is_told_apart_by_its_nonce_else_its_publish_time(fields: dict[str, object], stamp: str):
    delivery = parse_pubsub_event(PUBSUB, envelope(data=base64.b64encode(b"{}").decode(), **fields))
    assert isinstance(delivery, InlineDelivery) and delivery.nonce_or_publish_time == stamp
    assert delivery.identity == (f"pubsub:{TOPIC}#42@{stamp}" if stamp else f"pubsub:{TOPIC}#42")


def test_a_redelivery_keeps_its_run_key_and_a_reused_message_id_gets_a_new_one(relay: Relay):
    trigger = base64.b64encode(json.dumps({"pipeline": "echo", "parameters": {"message": "hi"}}).encode()).decode()
    first = envelope(data=trigger, publishTime=PUBLISHED)
    launched = handle_delivery(relay, parse_pubsub_event(PUBSUB, first))
    again = handle_delivery(relay, parse_pubsub_event(PUBSUB, first))
    # The emulator after a restart: message 42 again, published later.
    reused = handle_delivery(
        relay, parse_pubsub_event(PUBSUB, envelope(data=trigger, publishTime="2026-11-29T22:30:00Z"))
    )
    assert (launched.outcome, again.outcome, reused.outcome) == ("launched", "duplicate", "launched")
    assert again.run_key == launched.run_key != reused.run_key


BUCKET_RULE = "expected a bucket name"
OBJECT_RULE = "expected an object name"
GENERATION_RULE = f"expected a generation: a whole number from 1 to {MAX_GENERATION}"


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("gs://Bad Bucket!/a.json", BUCKET_RULE),
        ("gs://b/a.json", BUCKET_RULE),  # 1 character, which the events once took
        ("gs://ab/a.json", BUCKET_RULE),  # 2 characters: one short
        ("gs://" + "b" * 64 + "/a.json", BUCKET_RULE),  # 64 without dots: one past
        ("gs://" + ".".join(["b" * 63] * 3) + "." + "b" * 31 + "/a.json", BUCKET_RULE),  # 223 with dots
        ("gs://" + ".".join(["b" * 64, "b"]) + "/a.json", BUCKET_RULE),  # a part of 64 between dots
        ("gs://-bucket/a.json", BUCKET_RULE),
        ("gs://b00/a\n.json", OBJECT_RULE),
        ("gs://b00/" + "\u00e9" * 509 + "xy.json", OBJECT_RULE),  # 1,018 + 7 bytes: one past 1,024
        ("gs://b00/", OBJECT_RULE),
        ("gs://b00/t.json#" + "9" * 30, GENERATION_RULE),
        (f"gs://b00/t.json#{MAX_GENERATION + 1}", GENERATION_RULE),  # one past int64
        ("gs://b00/t.json#0", GENERATION_RULE),
        ("gs://b00/t.json#", GENERATION_RULE),
        ("gs://b00/t.json#\u0663", GENERATION_RULE),  # an Arabic-Indic digit, which int() would read
        ("s3://b/t.json", "expected trigger_uri gs://bucket/object[#generation], found string 's3://b/t.json'"),
    ],
)
def test_a_trigger_uri_that_names_no_cloud_storage_object_is_its_publisher_s_skip(relay: Relay, uri: str, reason: str):
    # The publisher wrote the attribute: theirs to fix (WARNING), not a fault of Relay's (ERROR).
    delivery = parse_pubsub_event(PUBSUB, message(trigger_uri=uri))
    assert isinstance(delivery, Skip) and (delivery.authored, delivery.malformed) == (True, False)
    assert delivery.reason.startswith(reason), delivery.reason
    assert delivery.uri == (uri.partition("#")[0] if uri.startswith("gs://") else uri)
    assert logged(relay, delivery)[:2] == ("skipped", "WARNING")


@pytest.mark.parametrize(
    "uri",
    [
        "gs://abc/t.json",  # 3 characters: the shortest name
        "gs://abc/a",  # 1 byte: the shortest object name
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


NOTIFICATION = {"bucketId": "triggers", "objectId": "t.json", "objectGeneration": "3", "eventType": "OBJECT_FINALIZE"}


def test_a_storage_notification_is_recognised_by_either_of_its_marks(relay: Relay):
    by_bucket = parse_pubsub_event(PUBSUB, message(b'{"size": "7"}', **NOTIFICATION))
    assert isinstance(by_bucket, ObjectDelivery)
    assert (by_bucket.uri, by_bucket.generation, by_bucket.size, by_bucket.via) == (
        "gs://triggers/t.json",
        3,
        None,
        "storage-notification",
    )
    # The payload format alone says "notification": one without its object is malformed, not an inline document.
    bare = parse_pubsub_event(PUBSUB, message(b"{}", payloadFormat="JSON_API_V1", eventType="OBJECT_FINALIZE"))
    assert isinstance(bare, Skip) and bare.malformed and bare.uri == "gs:///"
    assert logged(relay, bare) == ("skipped", "ERROR", "expected bucketId and objectId attributes, found none")
    no_object = parse_pubsub_event(PUBSUB, message(b"{}", **{**NOTIFICATION, "objectId": ""}))
    assert isinstance(no_object, Skip) and no_object.malformed and no_object.uri == "gs://triggers/"
    assert no_object.reason == "expected bucketId and objectId attributes, found none"


def test_a_notification_of_another_event_type_is_skipped_quietly(relay: Relay):
    archived = parse_pubsub_event(PUBSUB, message(b"{}", **{**NOTIFICATION, "eventType": "OBJECT_ARCHIVE"}))
    assert isinstance(archived, Skip) and not archived.malformed and archived.uri == "gs://triggers/t.json"
    assert logged(relay, archived) == (
        "skipped",
        "INFO",
        "notification event type 'OBJECT_ARCHIVE' is not OBJECT_FINALIZE",
    )
    untyped = parse_pubsub_event(PUBSUB, message(b"{}", bucketId="triggers", objectId="t.json"))
    assert isinstance(untyped, Skip) and untyped.reason == "notification event type None is not OBJECT_FINALIZE"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b'["size", 5]',
        b'{"size": 5, "contentType": "text/csv", "metadata": {"run": "a"}}',
        b'{"size": "x", "contentType": 5, "metadata": {"run": 1}}',
    ],
)
def test_a_notification_body_gives_nothing_but_the_object_it_names(body: bytes):
    # Whoever may publish on the topic writes the body: the object's facts are read from storage, at the generation.
    delivery = parse_pubsub_event(PUBSUB, message(body, **NOTIFICATION))
    assert isinstance(delivery, ObjectDelivery)
    assert (delivery.uri, delivery.generation, delivery.size) == ("gs://triggers/t.json", 3, None)
    assert not hasattr(delivery, "metadata") and not hasattr(delivery, "content_type")


def inline(relay: Relay, data: bytes, **attributes: str) -> tuple[str, str, str]:
    delivery = parse_pubsub_event(PUBSUB, message(data, **attributes))
    assert isinstance(delivery, InlineDelivery)
    return (delivery.format, *logged(relay, delivery)[:2])


NAN = b'{"pipeline": "echo", "parameters": {"message": NaN}}'  # not JSON; as YAML, the string "NaN"


def test_an_inline_message_is_json_unless_its_format_says_yaml(relay: Relay):
    assert inline(relay, NAN) == ("json", "rejected", "WARNING")
    assert inline(relay, NAN, format="JSON") == ("json", "rejected", "WARNING")
    assert inline(relay, NAN, format="toml") == ("json", "rejected", "WARNING")
    assert inline(relay, NAN, sender="lab") == ("json", "rejected", "WARNING")
    assert inline(relay, b"pipeline: echo\nparameters: {message: hi}\n", format="YML") == ("yaml", "launched", "INFO")


def test_an_inline_message_without_a_message_id_is_named_by_its_event():
    envelope_ = {"message": {"data": base64.b64encode(b"{}").decode(), "message_id": "snake-7"}}
    snake = parse_pubsub_event(PUBSUB, envelope_)
    assert isinstance(snake, InlineDelivery) and snake.uri == "projects/proj-p/topics/relay-triggers#snake-7"
    bare = parse_pubsub_event(PUBSUB, {"message": {}})
    assert isinstance(bare, InlineDelivery) and (bare.message_id, bare.data, bare.format) == ("msg-1", b"", "json")


@pytest.mark.parametrize(
    ("source", "topic"),
    [
        ("//pubsub.googleapis.com/projects/proj-p/topics/tee", "projects/proj-p/topics/tee"),
        ("projects/proj-p/topics/tee", "projects/proj-p/topics/tee"),
    ],
)
def test_the_topic_is_the_event_source_without_its_service(source: str, topic: str):
    delivery = parse_pubsub_event({**PUBSUB, "source": source}, message(b"{}"))
    assert isinstance(delivery, InlineDelivery) and delivery.topic == topic


@pytest.mark.parametrize(
    "source",
    [
        "",
        "//pubsub.googleapis.com/",
        "//pubsub.googleapis.com/projects/p/topics/relay-triggers",  # a project id has 6-30 characters
        "//pubsub.googleapis.com/projects/proj-p/topics/te",  # a topic name has 3-255
        "//pubsub.googleapis.com/projects/proj-p/topics/goog-triggers",  # Pub/Sub's own
        "//pubsub.googleapis.com/projects/proj-p/topics/tr\u00efggers",  # ASCII letters only
        "//pubsub.googleapis.com/projects/proj-p/subscriptions/relay-triggers",
    ],
)
def test_a_message_whose_source_names_no_topic_is_malformed(relay: Relay, source: str):
    # Eventarc names the topic it delivered from; no policy's topic matches anything else, so nothing is launched.
    delivery = parse_pubsub_event({**PUBSUB, "source": source}, message(b"{}"))
    assert isinstance(delivery, Skip) and (delivery.malformed, delivery.authored, delivery.uri) == (True, False, source)
    assert delivery.reason == f"expected a source naming {TOPIC_PATH_RULE}, found {describe_value(source)}"
    assert logged(relay, delivery)[:2] == ("skipped", "ERROR")


def test_events_of_another_type_are_skipped_quietly(relay: Relay):
    stored = parse_pubsub_event({**PUBSUB, "type": STORAGE["type"]}, message(b"{}"))
    assert isinstance(stored, Skip) and not stored.malformed and stored.uri == PUBSUB["source"]
    assert logged(relay, stored) == (
        "skipped",
        "INFO",
        f"event type {STORAGE['type']!r} is not google.cloud.pubsub.topic.v1.messagePublished",
    )
    published = parse_storage_event({**STORAGE, "type": PUBSUB["type"]}, {"bucket": "b00", "name": "t.json"})
    assert isinstance(published, Skip) and not published.malformed and published.uri == STORAGE["source"]
    assert logged(relay, published)[:2] == ("skipped", "INFO")
    assert published.reason == f"event type {PUBSUB['type']!r} is not google.cloud.storage.object.v1.finalized"


@pytest.mark.parametrize(
    "data",
    [None, ["bucket"], {"name": "t.json"}, {"bucket": "triggers"}, {"bucket": "", "name": "t.json"}],
)
def test_a_storage_event_without_its_object_is_an_error(relay: Relay, data: object):
    delivery = parse_storage_event(STORAGE, data)
    assert isinstance(delivery, Skip) and delivery.malformed and delivery.uri == STORAGE["source"]
    assert logged(relay, delivery) == ("skipped", "ERROR", "expected object data with bucket and name, found none")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"bucket": 7, "name": "t.json"}, "expected a bucket name: 3-63 lower-case letters, digits, -, _ or ."),
        ({"bucket": 7, "name": "t.json"}, "starting and ending with a letter or digit, found number 7"),
        ({"bucket": "triggers", "name": ["t.json"]}, "expected an object name: 1-1024 bytes of UTF-8,"),
        ({"bucket": "triggers", "name": "t\r.json"}, "no carriage return or line feed, not . or .., found string"),
        ({"bucket": "triggers", "name": "."}, "expected an object name"),
        ({"bucket": "triggers", "name": ".."}, "expected an object name"),
        ({"bucket": "triggers", "name": "t.json", "generation": True}, "found boolean true"),
        ({"bucket": "triggers", "name": "t.json", "generation": 0}, "found number 0"),
        ({"bucket": "triggers", "name": "t.json", "generation": 1.0}, "found number 1.0"),
        ({"bucket": "triggers", "name": "t.json", "generation": "0" * 19 + "1"}, "whole number from 1 to"),
    ],
)
def test_a_storage_event_naming_no_object_names_the_part_that_is_wrong(relay: Relay, data: object, reason: str):
    delivery = parse_storage_event(STORAGE, data)
    assert isinstance(delivery, Skip) and delivery.malformed
    assert reason in delivery.reason, delivery.reason
    assert logged(relay, delivery)[:2] == ("skipped", "ERROR")


@pytest.mark.parametrize(
    ("generation", "number"),
    [(MAX_GENERATION, MAX_GENERATION), (1, 1), ("0" * 18 + "1", 1), (None, None)],
)
def test_a_generation_is_a_number_or_up_to_19_digits(generation: object, number: int | None):
    delivery = parse_storage_event(STORAGE, {"bucket": "triggers", "name": "t.json", "generation": generation})
    assert isinstance(delivery, ObjectDelivery) and delivery.generation == number


@pytest.mark.parametrize(("size", "known"), [("12", 12), (12, 12), (True, None), ("12 bytes", None), (1.5, None)])
def test_a_storage_event_size_is_known_only_when_it_is_a_whole_number(size: object, known: int | None):
    delivery = parse_storage_event(STORAGE, {"bucket": "triggers", "name": "t.json", "size": size})
    assert isinstance(delivery, ObjectDelivery) and delivery.size == known


@pytest.mark.parametrize(
    ("attributes", "identity"),
    [
        ({}, ("", "", "", None)),
        ({"id": 7, "type": "t", "source": "s", "time": 1700000000}, ("7", "t", "s", None)),
        ({"time": ""}, ("", "", "", None)),
        ({"time": "yesterday"}, ("", "", "", None)),
        ({"time": datetime(2026, 1, 2, tzinfo=UTC)}, ("", "", "", datetime(2026, 1, 2, tzinfo=UTC))),
        ({"time": "2026-01-02T00:00:00Z"}, ("", "", "", datetime(2026, 1, 2, tzinfo=UTC))),
    ],
)
def test_an_event_s_identity_is_carried_as_far_as_it_can_be_read(
    attributes: dict[str, object], identity: tuple[object, ...]
):
    event = event_info(attributes)
    assert (event.id, event.type, event.source, event.time) == identity


@pytest.mark.parametrize(
    ("attributes", "data"),
    [
        # Pub/Sub's API takes UTF-8 only, so no publisher's message carries these: a push that does is forged.
        (PUBSUB, message(b'{"pipeline": "echo"}', nonce="\ud800")),
        (PUBSUB, message(b'{"pipeline": "echo"}', **{"\udfff": "key"})),
        (PUBSUB, message(trigger_uri="gs://b00/\ud800.json")),
        (PUBSUB, envelope(messageId="\ud800", data="")),
        (PUBSUB, envelope(publishTime="2026-11-29T21:58:21\ud800Z", data="")),
        ({**PUBSUB, "id": "\udc00"}, {"message": {"data": "", "attributes": {"a": "b"}}}),
        (
            {**PUBSUB, "source": "//pubsub.googleapis.com/projects/proj-p/topics/\ud800"},
            message(b'{"pipeline": "echo"}'),
        ),
        (STORAGE, {"bucket": "triggers", "name": "a/\ud800.json", "generation": "1"}),
    ],
    ids=["nonce", "attribute-key", "trigger-uri", "message-id", "publish-time", "event-id", "topic", "object-name"],
)
def test_text_with_no_utf8_form_anywhere_in_an_event_is_a_malformed_skip(
    relay: Relay, attributes: dict[str, str], data: object
):
    # Before, a nonce, message id, publish time or event id like these raised UnicodeEncodeError while the run key
    # was derived: a 500, redelivered until the dead letter.
    parse = parse_storage_event if attributes is STORAGE else parse_pubsub_event
    delivery = parse(attributes, data)
    assert isinstance(delivery, Skip) and delivery.malformed and delivery.uri == attributes["source"]
    assert delivery.reason == "expected event attributes and data in UTF-8, found a lone surrogate"
    assert logged(relay, delivery)[:2] == ("skipped", "ERROR")


def nest(levels: int) -> object:
    value: object = "x"
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        # The message itself is well formed: the bound holds over everything the event carries, read or not.
        ({**message(b'{"pipeline": "echo"}'), "extra": nest(64)}, "64 levels of lists and mappings, found more"),
        ({**message(b'{"pipeline": "echo"}'), "extra": list(range(MAX_VALUES))}, f"{MAX_VALUES} values"),
    ],
    ids=["deep", "wide"],
)
def test_event_data_past_a_trigger_s_bounds_is_a_malformed_skip(relay: Relay, data: object, reason: str):
    delivery = parse_pubsub_event(PUBSUB, data)
    assert isinstance(delivery, Skip) and delivery.malformed
    assert delivery.reason.startswith("expected event data of at most ") and reason in delivery.reason
    assert logged(relay, delivery)[:2] == ("skipped", "ERROR")
    within = {**message(b'{"pipeline": "echo", "parameters": {"message": "m"}}'), "extra": nest(60)}
    assert isinstance(parse_pubsub_event(PUBSUB, within), InlineDelivery)
