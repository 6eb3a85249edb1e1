"""Routed data objects through the launch use-case: a storage notification of an object a route takes is a run,
made from the object's facts as the store has them (its bytes never read); what the route cannot fill, or the
tenant may not run, is a rejection record."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from relay import lifecycle, naming, records, service
from relay.errors import SubmitUncertainError
from relay.events import EventInfo, Message, ObjectDelivery
from relay.service import Relay, handle_delivery
from tests.conftest import NOW
from tests.fakes import FakeBackend, MemoryBlobStore, RecordingNotifier
from tests.policies import policy

EVENT = EventInfo(id="msg-1", type="google.cloud.pubsub.topic.v1.messagePublished", source="s", time=NOW)
ASSAY, IMAGING = "projects/proj-p/topics/assay", "projects/proj-p/topics/imaging"
POLICY = policy(
    """
notifications:
  - {topic: projects/proj-p/topics/assay, buckets: [lab-data, results]}
  - {topic: projects/proj-p/topics/imaging, buckets: [scans]}
tenants:
  - name: assay
    triggers: [gs://triggers/assay/]
    topics: [projects/proj-p/topics/assay]
    pipelines: [echo]
    routes:
      - id: csv
        bucket: lab-data
        prefix: incoming/
        glob: "*.csv"
        pipeline: echo
        parameters:
          message: "{uri}"
          count: "{size}"
          options: {batch: "{metadata.batch}", type: "{content_type}"}
      - id: bad
        bucket: lab-data
        prefix: bad/
        pipeline: echo
        parameters: {message: "{uri}", count: "many"}
      - id: other
        bucket: lab-data
        prefix: other/
        pipeline: missing
      - id: results
        bucket: results
        prefix: relay/
        pipeline: echo
  - name: imaging
    topics: [projects/proj-p/topics/imaging]
    pipelines: [push]
    routes:
      - {id: scans, bucket: scans, pipeline: echo, parameters: {message: "{name}"}}
"""
)


@pytest.fixture
def routed(relay: Relay) -> Relay:
    return replace(relay, policy=POLICY)


def notification(
    name: str = "incoming/run-7.csv",
    *,
    bucket: str = "lab-data",
    generation: int | None = 42,
    event: EventInfo = EVENT,
    topic: str = ASSAY,
) -> ObjectDelivery:
    origin = Message(topic, f"m-{name}-{generation}")
    return ObjectDelivery(event, bucket, name, generation, None, "storage-notification", origin)


def upload(
    store: MemoryBlobStore,
    name: str = "incoming/run-7.csv",
    *,
    bucket: str = "lab-data",
    generation: int = 42,
    data: bytes = b"x" * 1234,
    metadata: dict[str, str] | None = None,
) -> None:
    """The routed object as Cloud Storage keeps it: all its run is made from."""
    batch = {"batch": "b7"} if metadata is None else metadata
    store.put(f"gs://{bucket}/{name}", data, content_type="text/csv", metadata=batch, generation=generation)


def run_key(pipeline: str = "echo", uri: str = "gs://lab-data/incoming/run-7.csv", generation: int = 42) -> str:
    return naming.derive_run_key(pipeline, f"{uri}#{generation}")


def rejection(store: MemoryBlobStore, key: str) -> dict[str, Any]:
    return records.decode(store.read(naming.rejection_record("gs://results/relay", key)).data)


def test_a_routed_object_is_a_run_made_from_the_notification_alone(
    routed: Relay, store: MemoryBlobStore, backend: FakeBackend, notifier: RecordingNotifier
):
    upload(store)
    outcome = handle_delivery(routed, notification())
    key = run_key()
    assert (outcome.outcome, outcome.run_key, outcome.run_id, outcome.pipeline) == ("launched", key, "run-1", "echo")
    assert (outcome.event_id, outcome.trigger_uri) == ("msg-1", "gs://lab-data/incoming/run-7.csv")
    [launched] = backend.launches
    assert launched.parameters == {
        "message": "gs://lab-data/incoming/run-7.csv",
        "count": 1234,
        "options": {"batch": "b7", "type": "text/csv"},
        "run_key": key,
        "results_uri": "gs://results/relay",
    }
    # In the console the run shows whose it is, which pipeline, and that a route started it.
    assert launched.labels == {"relay-tenant": "assay", "relay-pipeline": "echo", "relay-trigger": "route"}
    saved = records.decode(store.read(naming.launch_record("gs://results/relay", key)).data)
    assert saved["tenant"] == "assay" and saved["state"] == "launched"
    assert saved["trigger"] == {
        "uri": "gs://lab-data/incoming/run-7.csv",
        "generation": 42,
        "event_id": "msg-1",
        "event_type": EVENT.type,
        "event_time": records.timestamp(NOW),
        "via": "storage-notification",
        "topic": ASSAY,
        "message_id": "m-incoming/run-7.csv-42",
        "nonce_or_publish_time": None,
        "route": "assay/csv",
    }
    assert notifier.states == ["launched"]
    # Another generation of the same name is another run; the same one again is a duplicate.
    assert handle_delivery(routed, notification()).outcome == "duplicate"
    upload(store, generation=43)
    again = handle_delivery(routed, notification(generation=43))
    assert again.outcome == "launched" and again.run_key == run_key(generation=43)


def test_only_a_storage_notification_is_routed(routed: Relay, backend: FakeBackend):
    # A storage event of the same object is read as a trigger file, which a .csv is not.
    outcome = handle_delivery(routed, replace(notification(), via="storage-event"))
    assert outcome.outcome == "skipped" and "not a trigger file" in outcome.message and backend.launches == []


def test_a_routed_object_under_relays_own_results_or_empty_is_skipped(routed: Relay, store, backend):
    own = handle_delivery(routed, notification("relay/runs/k/launch.json", bucket="results"))
    assert own.outcome == "skipped" and own.message == "a Relay record under gs://results/relay, not a trigger"
    assert (own.event_id, own.trigger_uri) == ("msg-1", "gs://results/relay/runs/k/launch.json")
    upload(store, data=b"")
    empty = handle_delivery(routed, notification())
    assert empty.outcome == "skipped" and empty.message == "zero-byte object: an upload in progress or a placeholder"
    assert backend.launches == []  # the empty one is recorded as skipped: tests/unit/test_service_skips.py
    assert store.uris("gs://results/") == [naming.skip_record("gs://results/relay", run_key())]


def test_a_notification_without_the_objects_generation_is_rejected(routed: Relay, store, backend):
    outcome = handle_delivery(routed, notification(generation=None))
    key = run_key(generation=0)
    assert (outcome.outcome, outcome.code, outcome.run_key) == ("rejected", "invalid_trigger", key)
    assert outcome.message.startswith("gs://lab-data/incoming/run-7.csv: 1 problem(s): (event): ")
    saved = rejection(store, key)
    assert saved["error"]["problems"] == [
        {
            "field": "(event)",
            "expected": "the object's generation (objectGeneration)",
            "found": "none in the notification",
        }
    ]
    assert saved["pipeline"] == "echo" and saved["trigger"]["route"] == "assay/csv" and backend.launches == []


def test_a_value_the_notification_lacks_is_named_in_the_rejection(routed: Relay, store, backend):
    upload(store, metadata={})
    outcome = handle_delivery(routed, notification())
    assert (outcome.outcome, outcome.code) == ("rejected", "invalid_parameters")
    assert outcome.message.startswith("gs://lab-data/incoming/run-7.csv: 1 problem(s): parameters.options.batch: ")
    assert rejection(store, run_key())["error"]["problems"] == [
        {
            "field": "parameters.options.batch",
            "expected": "the object's metadata.batch (route template {metadata.batch})",
            "found": "none in the event",
        }
    ]
    assert backend.launches == []


@pytest.mark.parametrize(
    ("name", "bucket", "pipeline", "code"),
    [
        ("bad/x.csv", "lab-data", "echo", "invalid_parameters"),
        ("other/x.csv", "lab-data", "missing", "unknown_pipeline"),
        ("scan.tif", "scans", "echo", "policy_denied"),
    ],
)
def test_a_route_whose_run_cannot_be_made_gets_a_rejection_record(
    routed: Relay, store, backend, name: str, bucket: str, pipeline: str, code: str
):
    upload(store, name, bucket=bucket)
    outcome = handle_delivery(routed, notification(name, bucket=bucket, topic=IMAGING if bucket == "scans" else ASSAY))
    key = run_key(pipeline, f"gs://{bucket}/{name}")
    assert (outcome.outcome, outcome.code, outcome.run_key, outcome.pipeline) == ("rejected", code, key, pipeline)
    assert outcome.message.startswith(f"gs://{bucket}/{name}: ")
    assert rejection(store, key)["error"]["code"] == code and backend.launches == []


def test_a_stale_notification_is_dropped_unless_its_run_was_claimed_while_fresh(routed: Relay, store, backend):
    stale = replace(EVENT, time=NOW - timedelta(hours=2))
    dropped = handle_delivery(routed, notification(event=stale))
    assert (dropped.outcome, dropped.code, dropped.run_key, dropped.pipeline) == (
        "dropped",
        "stale_event",
        run_key(),
        "echo",
    )
    saved = rejection(store, run_key())
    assert (saved["trigger"]["route"], saved["pipeline"]) == ("assay/csv", "echo") and backend.launches == []
    # Launched while fresh: a stale redelivery is a duplicate.
    upload(store, "incoming/b.csv")
    fresh = notification("incoming/b.csv")
    handle_delivery(routed, fresh)
    duplicate = handle_delivery(routed, replace(fresh, event=stale))
    assert (duplicate.outcome, duplicate.run_key) == ("duplicate", run_key(uri="gs://lab-data/incoming/b.csv"))
    # Claimed while fresh by a holder whose submit was uncertain: a stale redelivery takes over once its lease
    # ran out, and asks the backend first.
    then = replace(EVENT, time=NOW - timedelta(hours=3))
    upload(store, "incoming/c.csv")
    backend.failures.append(SubmitUncertainError("504 from the load balancer"))
    with pytest.raises(SubmitUncertainError):
        handle_delivery(
            replace(routed, clock=lambda: NOW - timedelta(hours=3)), notification("incoming/c.csv", event=then)
        )
    outcome = handle_delivery(routed, notification("incoming/c.csv", event=stale))
    key = run_key(uri="gs://lab-data/incoming/c.csv")
    assert outcome.outcome == "launched" and backend.lookups == [key] and len(backend.launches) == 2


def test_a_rerun_of_a_routed_run_is_labelled_a_rerun(routed: Relay, store: MemoryBlobStore, backend: FakeBackend):
    upload(store)
    key = handle_delivery(routed, notification()).run_key
    assert key is not None
    lifecycle.rerun(routed, key, force=True)  # its launch record still names the route it came by
    assert [launched.labels["relay-trigger"] for launched in backend.launches] == ["route", "rerun"]


@pytest.mark.parametrize("name", ["incoming/summary.json", "notes/plate.yaml", "incoming/run-7.txt"])
def test_a_data_object_no_route_takes_is_skipped_not_rejected(routed: Relay, store: MemoryBlobStore, backend, name):
    # A .json beside the data is a data file, not a trigger that broke the rules: no rejection, no record (a data
    # bucket holds thousands; only what a tenant meant for Relay is recorded).
    upload(store, name)
    outcome = handle_delivery(routed, notification(name))
    assert (outcome.outcome, outcome.message) == ("skipped", service.NO_ROUTE)
    assert backend.launches == [] and store.uris("gs://results/") == []


def test_a_trigger_file_a_message_names_in_a_data_bucket_is_still_judged_as_a_trigger(routed: Relay, store, backend):
    # Named by a trigger_uri, the same object was meant as a trigger: outside the tenant's trigger locations, refused.
    upload(store, "incoming/summary.json")
    outcome = handle_delivery(routed, replace(notification("incoming/summary.json"), via="trigger-uri"))
    assert outcome.outcome == "rejected" and backend.launches == []
