"""Severity says whose problem it is: a `trigger_uri` attribute is what its publisher wrote, so one that names no
object is theirs to fix (WARNING, as a bad trigger document is), while the same name in an envelope only the
platform sends could not have come from it (ERROR: Relay's deployment is not what it thinks)."""

from __future__ import annotations

import base64

import pytest

from relay.events import parse_pubsub_event, parse_storage_event
from relay.service import Relay, handle_delivery

PUBSUB = {
    "id": "msg-1",
    "type": "google.cloud.pubsub.topic.v1.messagePublished",
    "source": "//pubsub.googleapis.com/projects/proj-p/topics/relay-triggers",
}
STORAGE = {"id": "evt-1", "type": "google.cloud.storage.object.v1.finalized", "source": "//storage.googleapis.com/b"}
BAD = [("Bad Bucket!", "a.json", None), ("relay-triggers", "a\n.json", None), ("relay-triggers", "a.json", "9" * 30)]
IDS = ["bucket", "object", "generation"]


def published(**attributes: str) -> dict[str, object]:
    return {"message": {"data": base64.b64encode(b"").decode(), "attributes": attributes, "messageId": "42"}}


@pytest.mark.parametrize(("bucket", "name", "generation"), BAD, ids=IDS)
def test_a_storage_event_naming_no_object_is_an_error(relay: Relay, bucket: str, name: str, generation: str | None):
    event = parse_storage_event(STORAGE, {"bucket": bucket, "name": name, "generation": generation})
    outcome = handle_delivery(relay, event)
    assert (outcome.outcome, outcome.severity) == ("skipped", "ERROR")


@pytest.mark.parametrize(("bucket", "name", "generation"), BAD, ids=IDS)
def test_a_trigger_uri_naming_no_object_is_its_publisher_s_problem(
    relay: Relay, bucket: str, name: str, generation: str | None
):
    uri = f"gs://{bucket}/{name}" + (f"#{generation}" if generation else "")
    outcome = handle_delivery(relay, parse_pubsub_event(PUBSUB, published(trigger_uri=uri)))
    assert (outcome.outcome, outcome.severity) == ("skipped", "WARNING")


def test_a_trigger_uri_that_is_no_gs_uri_is_its_publisher_s_problem(relay: Relay):
    outcome = handle_delivery(relay, parse_pubsub_event(PUBSUB, published(trigger_uri="s3://b/t.json")))
    assert (outcome.outcome, outcome.severity) == ("skipped", "WARNING")
