"""The delivery's origin decides everything, tried as assay's trigger author would against imaging's.

Two tenants share one deployment. Whoever may publish on assay's topic chooses every attribute and byte of a
message: a `trigger_uri` naming imaging's trigger, a hand-written storage notification naming imaging's data, a
body with the metadata a route fills its parameters from. Each must be refused (recorded for assay, nothing of
imaging's read) or made of what storage says, never of what the message says.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from relay import naming, records
from relay.catalog import Catalog
from relay.events import Delivery, EventInfo, ObjectDelivery, parse_pubsub_event
from relay.service import Relay, handle_delivery
from tests.conftest import NOW
from tests.fakes import FakeBackend, MemoryBlobStore
from tests.policies import policy

PUSH_SPEC = Path(__file__).resolve().parents[2] / "pipelines" / "compiled" / "push.yaml"
RESULTS = "gs://results/relay"
ASSAY, IMAGING, NOBODY = (
    "projects/proj-p/topics/assay",
    "projects/proj-p/topics/imaging",
    "projects/proj-p/topics/nobody",
)
TWO_TENANTS = policy(
    """
notifications:
  - {topic: projects/proj-p/topics/assay, buckets: [triggers, assay-data]}
  - {topic: projects/proj-p/topics/imaging, buckets: [triggers, imaging-data]}
tenants:
  - name: assay
    triggers: [gs://triggers/assay/]
    topics: [projects/proj-p/topics/assay]
    sources: [gs://assay-data/]
    destinations:
      - {id: out, kind: gcs, bucket: assay-out}
      - {id: lims, kind: http, url: "https://lims.assay.example/samples/"}
    secrets: [{secret: "secret://assay-token", to: lims, field: headers.Authorization}]
    routes:
      - id: csv
        bucket: assay-data
        prefix: incoming/
        pipeline: push
        parameters: {sources: ["{uri}"], destination: {kind: gcs, bucket: assay-out, prefix: "in/{metadata.batch}"}}
  - name: imaging
    triggers: [gs://triggers/imaging/]
    topics: [projects/proj-p/topics/imaging]
    sources: [gs://imaging-data/]
    destinations:
      - {id: out, kind: gcs, bucket: imaging-out, prefix: scans/}
      - {id: lims, kind: http, url: "https://lims.imaging.example/samples/"}
    secrets: [{secret: "secret://imaging-token", to: lims, field: headers.Authorization}]
    routes:
      - id: scans
        bucket: imaging-data
        prefix: scans/
        pipeline: push
        parameters:
          sources: ["{uri}"]
          destination: {kind: gcs, bucket: imaging-out, prefix: "scans/{metadata.batch}"}
"""
)
IMAGING_TRIGGER = {
    "pipeline": "push",
    "parameters": {
        "sources": ["gs://imaging-data/scans/"],
        "destination": {
            "kind": "http",
            "url": "https://lims.imaging.example/samples/",
            "headers": {"Authorization": "secret://imaging-token"},
        },
    },
}
ASSAY_TRIGGER = {"pipeline": "push", "parameters": {"sources": ["gs://assay-data/a/"],
                                                    "destination": {"kind": "gcs", "bucket": "assay-out"}}}  # fmt: skip
STALE = NOW - timedelta(hours=2)  # past the fixture's max_event_age of an hour


@pytest.fixture
def governed(relay: Relay, store: MemoryBlobStore) -> Relay:
    store.write("gs://catalog/push.yaml", PUSH_SPEC.read_bytes())
    return replace(relay, policy=TWO_TENANTS, catalog=Catalog(store, "gs://catalog"))


def published(topic: str, attributes: dict[str, str], body: bytes = b"", message_id: str = "7") -> Delivery:
    """A message on `topic` exactly as its publisher wrote it, through the real parser."""
    message = {
        "messageId": message_id,
        "publishTime": "2026-11-21T11:59:59Z",
        "attributes": attributes,
        "data": base64.b64encode(body).decode(),
    }
    event = {
        "id": message_id,
        "type": "google.cloud.pubsub.topic.v1.messagePublished",
        "source": f"//pubsub.googleapis.com/{topic}",
        "time": NOW,
    }
    return parse_pubsub_event(event, {"message": message})


def notification(topic: str, bucket: str, name: str, generation: int, body: dict[str, Any] | None = None) -> Delivery:
    """A hand-written Cloud Storage notification (JSON_API_V1, OBJECT_FINALIZE): anyone on the topic can send one."""
    attributes = {
        "payloadFormat": "JSON_API_V1",
        "eventType": "OBJECT_FINALIZE",
        "bucketId": bucket,
        "objectId": name,
        "objectGeneration": str(generation),
    }
    return published(topic, attributes, json.dumps(body or {"bucket": bucket, "name": name}).encode())


def imaging_trigger(store: MemoryBlobStore) -> tuple[str, int]:
    """Imaging's own trigger file, in imaging's trigger prefix."""
    uri = "gs://triggers/imaging/nightly.json"
    return uri, store.write(uri, json.dumps(IMAGING_TRIGGER).encode())


def imaging_scan(store: MemoryBlobStore) -> tuple[str, int]:
    """A data object imaging's route takes, as imaging uploaded it."""
    uri = "gs://imaging-data/scans/s-1.tif"
    return uri, store.put(uri, b"scan" * 100, content_type="image/tiff", metadata={"batch": "b7"})


def refused_for_assay(store: MemoryBlobStore, delivery: Delivery, outcome: Any) -> dict[str, Any]:
    """The rejection record of a delivery refused for where it came from: keyed by assay's message, never by the
    object it names, and naming the topic it came on."""
    assert isinstance(delivery, ObjectDelivery) and delivery.origin is not None
    assert (outcome.outcome, outcome.code, outcome.pipeline) == ("rejected", "policy_denied", None)
    assert outcome.run_key == naming.derive_run_key(naming.UNKNOWN_PIPELINE, delivery.origin.identity)
    record = records.decode(store.read(naming.rejection_record(RESULTS, outcome.run_key)).data)
    assert (record["trigger"]["topic"], record["trigger"]["message_id"]) == (delivery.origin.topic, "7")
    return record


def test_a_trigger_uri_on_my_topic_never_launches_another_tenants_trigger(
    governed: Relay, store: MemoryBlobStore, backend: FakeBackend
):
    uri, generation = imaging_trigger(store)
    delivery = published(ASSAY, {"trigger_uri": f"{uri}#{generation}"})
    outcome = handle_delivery(governed, delivery)
    assert backend.launches == []
    record = refused_for_assay(store, delivery, outcome)
    assert record["error"]["problems"] == [
        {
            "field": "(origin)",
            "expected": "an object under tenants.assay.triggers (gs://triggers/assay/)",
            "found": "gs://triggers/imaging/nightly.json",
        }
    ]
    # Never read, never stat'ed: not even its size reaches a record; and no record under imaging's own keys.
    assert uri not in store.looked_at
    assert store.uris(f"{RESULTS}/") == [naming.rejection_record(RESULTS, str(outcome.run_key))]
    # Assay's own trigger, named the same way (then notified again), is assay's, and one run.
    mine = "gs://triggers/assay/t.json"
    generation = store.write(mine, json.dumps(ASSAY_TRIGGER).encode())
    first = handle_delivery(governed, published(ASSAY, {"trigger_uri": f"{mine}#{generation}"}, message_id="8"))
    again = handle_delivery(governed, notification(ASSAY, "triggers", "assay/t.json", generation))
    assert (first.outcome, again.outcome, again.run_key) == ("launched", "duplicate", first.run_key)
    [launch] = backend.launches
    assert launch.parameters["tenant"] == "assay"


def test_a_trigger_uri_on_a_topic_no_tenant_owns_is_refused_unread(
    governed: Relay, store: MemoryBlobStore, backend: FakeBackend
):
    uri, _ = imaging_trigger(store)
    delivery = published(NOBODY, {"trigger_uri": uri})
    outcome = handle_delivery(governed, delivery)
    assert backend.launches == [] and uri not in store.looked_at
    [problem] = refused_for_assay(store, delivery, outcome)["error"]["problems"]
    assert problem == {
        "field": "(origin)",
        "expected": "a topic of a tenant (projects/proj-p/topics/assay, projects/proj-p/topics/imaging)",
        "found": NOBODY,
    }


def test_a_forged_notification_of_another_tenants_data_is_refused_unread(
    governed: Relay, store: MemoryBlobStore, backend: FakeBackend
):
    uri, generation = imaging_scan(store)
    _, name = naming.split_gs_uri(uri)
    body = {"bucket": "imaging-data", "name": name, "size": "400", "metadata": {"batch": "assay-was-here"}}
    delivery = notification(ASSAY, "imaging-data", name, generation, body)
    outcome = handle_delivery(governed, delivery)
    assert backend.launches == [] and uri not in store.looked_at
    [problem] = refused_for_assay(store, delivery, outcome)["error"]["problems"]
    assert problem == {
        "field": "(origin)",
        "expected": "a notification of a bucket that notifications wires to this topic (triggers, assay-data)",
        "found": f"a notification of imaging-data on {ASSAY}",
    }


def test_a_notification_on_a_wired_topic_leads_only_to_its_own_tenants_triggers(
    governed: Relay, store: MemoryBlobStore, backend: FakeBackend
):
    # The trigger bucket notifies both topics; assay's still cannot name imaging's trigger file through it.
    uri, generation = imaging_trigger(store)
    delivery = notification(ASSAY, "triggers", "imaging/nightly.json", generation)
    outcome = handle_delivery(governed, delivery)
    assert backend.launches == [] and uri not in store.looked_at
    [problem] = refused_for_assay(store, delivery, outcome)["error"]["problems"]
    assert problem["expected"] == "an object under tenants.assay.triggers (gs://triggers/assay/)"


def test_a_routes_facts_are_the_stored_objects_never_the_notifications(
    governed: Relay, store: MemoryBlobStore, backend: FakeBackend
):
    # On imaging's own topic, wired to its bucket: whoever publishes there still chooses no parameter.
    uri, generation = imaging_scan(store)
    _, name = naming.split_gs_uri(uri)
    body = {"size": "1", "contentType": "text/plain", "metadata": {"batch": "chosen-by-assay"}}
    outcome = handle_delivery(governed, notification(IMAGING, "imaging-data", name, generation, body))
    assert outcome.outcome == "launched"
    [launch] = backend.launches
    assert launch.parameters["destination"] == {"kind": "gcs", "bucket": "imaging-out", "prefix": "scans/b7"}
    assert launch.parameters["tenant"] == "imaging"


def test_a_notification_of_a_generation_that_does_not_exist_is_rejected(
    governed: Relay, store: MemoryBlobStore, backend: FakeBackend
):
    uri, generation = imaging_scan(store)
    _, name = naming.split_gs_uri(uri)
    body = {"size": "400", "metadata": {"batch": "b9"}}
    outcome = handle_delivery(governed, notification(IMAGING, "imaging-data", name, generation + 5, body))
    assert (outcome.outcome, outcome.code) == ("rejected", "trigger_not_found") and backend.launches == []
    record = records.decode(store.read(naming.rejection_record(RESULTS, str(outcome.run_key))).data)
    assert record["error"]["problems"] == [
        {
            "field": "(object)",
            "expected": "the notified object, at the generation the notification names",
            "found": f"no object at generation {generation + 5}",
        }
    ]
    assert record["trigger"]["route"] == "imaging/scans"


def test_a_trigger_dropped_as_stale_stays_dropped_when_a_message_announces_it_again(
    governed: Relay, store: MemoryBlobStore, backend: FakeBackend
):
    uri, generation = imaging_trigger(store)
    _, name = naming.split_gs_uri(uri)
    # Imaging's own storage event, delivered too late (the functions were down): dropped.
    late = EventInfo("e-1", "google.cloud.storage.object.v1.finalized", "//storage.googleapis.com/b/triggers", STALE)
    dropped = handle_delivery(governed, ObjectDelivery(late, "triggers", name, generation, 99, "storage-event"))
    assert (dropped.outcome, dropped.code) == ("dropped", "stale_event")
    # Fresh messages of imaging's own, naming the same version: the same run key, so the same verdict.
    for again in (
        published(IMAGING, {"trigger_uri": f"{uri}#{generation}"}, message_id="8"),
        notification(IMAGING, "triggers", name, generation),
    ):
        outcome = handle_delivery(governed, again)
        assert (outcome.outcome, outcome.code, outcome.run_key) == ("dropped", "stale_event", dropped.run_key)
    assert backend.launches == []
    assert store.uris(f"{RESULTS}/") == [naming.rejection_record(RESULTS, str(dropped.run_key))]


def test_a_route_dropped_as_stale_stays_dropped_when_notified_again(
    governed: Relay, store: MemoryBlobStore, backend: FakeBackend
):
    uri, generation = imaging_scan(store)
    _, name = naming.split_gs_uri(uri)
    stale = notification(IMAGING, "imaging-data", name, generation)
    dropped = handle_delivery(governed, replace(stale, event=replace(stale.event, time=STALE)))
    assert (dropped.outcome, dropped.code) == ("dropped", "stale_event")
    body = {"metadata": {"batch": "b7"}}  # all the route needs, were it made from the message
    again = handle_delivery(governed, notification(IMAGING, "imaging-data", name, generation, body))
    assert (again.outcome, again.run_key) == ("dropped", dropped.run_key) and backend.launches == []
