"""The local stack end to end: uploads and messages reach functions-framework shaped as in production."""

from __future__ import annotations

import base64
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from devstack import LocalStack
from devstack.processes import group_members
from devstack.pubsub import subscriber_client, subscription_path, topic_path
from tests.devstack.support import (
    NOTIFY_TOPIC,
    TRIGGER_BUCKET,
    TRIGGER_TOPIC,
    EventLog,
    make_stack,
    skip_without_emulators,
)

pytestmark = pytest.mark.integration

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def test_upload_reaches_on_object_finalized_as_the_eventarc_cloudevent(stack: LocalStack, events: EventLog) -> None:
    # A pull subscription on the notification topic shows which Pub/Sub message the bridge turned into the event.
    spy = subscription_path(stack.project, "gcs-events-spy")
    with subscriber_client(stack.pubsub_host) as subscriber:
        subscriber.create_subscription(name=spy, topic=topic_path(stack.project, "gcs-events"))
        client = stack.storage_client()
        try:
            blob = client.bucket(TRIGGER_BUCKET).blob("inbox/run 1.json")
            blob.upload_from_string(b'{"pipeline": "echo"}', content_type="application/json", if_generation_match=0)
        finally:
            client.close()
        # fake-gcs-server publishes the notification after answering the upload, and a pull may answer before it is
        # there with no message at all: pull until it arrives (or give up after 30 s).
        deadline = time.monotonic() + 30
        received = []
        while not received and time.monotonic() < deadline:
            received = list(subscriber.pull(subscription=spy, max_messages=10, timeout=10).received_messages)
        assert received, "no storage notification reached the spy subscription within 30 s"
        notification = received[0].message

    subject = "objects/inbox/run 1.json"
    got = events.wait_for(lambda evs: any(e["attributes"].get("subject") == subject for e in evs))
    time.sleep(0.3)  # long enough for a stray duplicate to show up
    mine = [e for e in events.read() if e["attributes"].get("subject") == subject]
    assert len(mine) == 1, got
    event = mine[0]
    assert event["target"] == "on_object_finalized"
    assert event["status"] == 200
    assert event["attributes"] == {
        "specversion": "1.0",
        "id": notification.message_id,
        "type": "google.cloud.storage.object.v1.finalized",
        "source": f"//storage.googleapis.com/projects/_/buckets/{TRIGGER_BUCKET}",
        "subject": subject,
        "time": notification.attributes["eventTime"],
        "datacontenttype": "application/json",
    }
    assert RFC3339.match(event["attributes"]["time"])
    data = event["data"]
    assert data["kind"] == "storage#object"
    assert data["bucket"] == TRIGGER_BUCKET
    assert data["name"] == "inbox/run 1.json"
    assert int(data["generation"]) == blob.generation
    assert int(data["size"]) == len(b'{"pipeline": "echo"}')
    assert data["md5Hash"] == blob.md5_hash
    assert data["crc32c"] == blob.crc32c
    assert data["contentType"] == "application/json"
    assert {"timeCreated", "updated"} <= data.keys()


def test_message_reaches_on_message_published_as_message_published(stack: LocalStack, events: EventLog) -> None:
    message_id = stack.publish(TRIGGER_TOPIC, b'{"pipeline": "echo"}', {"pipeline": "echo"})

    events.wait_for(lambda evs: bool(events.matching(id=message_id)(evs)))
    time.sleep(0.3)
    mine = events.matching(id=message_id)(events.read())
    assert len(mine) == 1, mine
    event = mine[0]
    assert event["target"] == "on_message_published"
    assert event["attributes"]["type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert event["attributes"]["source"] == f"//pubsub.googleapis.com/projects/{stack.project}/topics/{TRIGGER_TOPIC}"
    message = event["data"]["message"]
    assert base64.b64decode(message["data"]) == b'{"pipeline": "echo"}'
    assert message["attributes"] == {"pipeline": "echo"}
    assert message["messageId"] == message_id


def test_a_record_on_the_notify_topic_reaches_on_run_ended(stack: LocalStack, events: EventLog) -> None:
    # As deploy.sh wires it: a run's end, published there, frees its slots and drains the queue at once.
    message_id = stack.publish(NOTIFY_TOPIC, b"{}", {"state": "succeeded", "run_key": "echo-a"})
    events.wait_for(lambda evs: bool(events.matching(id=message_id)(evs)))
    [event] = events.matching(id=message_id)(events.read())
    assert event["target"] == "on_run_ended"
    assert event["attributes"]["source"] == f"//pubsub.googleapis.com/projects/{stack.project}/topics/{NOTIFY_TOPIC}"
    assert event["data"]["message"]["attributes"] == {"state": "succeeded", "run_key": "echo-a"}


@pytest.mark.parametrize("path", ["storage", "pubsub"])
def test_a_failed_delivery_is_redelivered(stack: LocalStack, events: EventLog, path: str) -> None:
    if path == "storage":
        name = f"fail-once-{time.time_ns()}.txt"
        client = stack.storage_client()
        try:
            client.bucket(TRIGGER_BUCKET).blob(name).upload_from_string(b"x")
        finally:
            client.close()
        select = events.matching(subject=f"objects/{name}")
        mine = select(events.wait_for(lambda evs: len(select(evs)) >= 2))
    else:
        message_id = stack.publish(TRIGGER_TOPIC, b"x", {"mode": "fail-once"})
        select = events.matching(id=message_id)
        mine = select(events.wait_for(lambda evs: len(select(evs)) >= 2))
    first, second = mine[:2]
    assert [first["status"], second["status"]] == [500, 200]
    assert first["attributes"] == second["attributes"]
    assert first["data"] == second["data"]


def _refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_teardown_leaves_nothing_running(tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    skip_without_emulators()
    stack = make_stack(tmp_path / "work", tmp_path / "events.jsonl")
    with stack:
        ports = [
            stack.pubsub.port,
            stack.storage.port,
            stack.object_finalized.port,
            stack.message_published.port,
            stack.bridge.port,
        ]
        services = [stack.pubsub, stack.storage, stack.object_finalized, stack.message_published]
        pids = {pid for s in services if s.process.pid is not None for pid in group_members(s.process.pid)}
        java = stack.pubsub.process.pid
        assert java is not None
        assert b"java" in Path(f"/proc/{java}/cmdline").read_bytes()
        assert len(pids) >= 5  # each function runs a gunicorn arbiter and a worker
        assert not any(_refuses(port) for port in ports)

    assert stack.startup_seconds is not None and stack.teardown_seconds is not None
    record_property("startup_seconds", round(stack.startup_seconds, 3))
    record_property("teardown_seconds", round(stack.teardown_seconds, 3))
    print(f"\nLocalStack startup {stack.startup_seconds:.2f} s, teardown {stack.teardown_seconds:.2f} s")
    assert [port for port in ports if not _refuses(port)] == []
    assert sorted(pid for pid in pids if _alive(pid)) == []
    assert not _alive(java)
    assert stack.startup_seconds < 15
    assert stack.teardown_seconds < 10
