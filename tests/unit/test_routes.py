"""Routes: a data object's storage notification on the trigger topic becomes one run, built from the object's facts
as the store has them at the notified generation (never from the notification's body)."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from relay import naming, records
from relay.catalog import Catalog
from relay.errors import Problem
from relay.events import Delivery, parse_pubsub_event
from relay.policy import PolicyError, parse_policy
from relay.routes import ObjectEvent, Route, render, template_problems
from relay.service import Relay, handle_delivery
from tests.conftest import NOW
from tests.fakes import FakeBackend, MemoryBlobStore
from tests.policies import policy

PUSH_SPEC = Path(__file__).resolve().parents[2] / "pipelines" / "compiled" / "push.yaml"
RESULTS = "gs://results/relay"
TOPIC = "projects/proj-p/topics/tee"
ROUTED = """
notifications: [{topic: projects/proj-p/topics/tee, buckets: [lab-data, elsewhere]}]
tenants:
  - name: lab
    triggers: [gs://triggers/lab/]
    topics: [projects/proj-p/topics/tee]
    sources: [gs://lab-data/assay/]
    destinations: [{id: ml, kind: gcs, bucket: ml-data, prefix: incoming/}]
    routes:
      - id: assay-csv
        bucket: lab-data
        prefix: assay/
        glob: "*.csv"
        pipeline: push
        parameters:
          sources: ["{uri}"]
          destination: {kind: gcs, bucket: ml-data, prefix: "incoming/{metadata.batch}"}
"""
EVENT = ObjectEvent("lab-data", "assay/x.csv", 7, 1234, "text/csv", {"batch": "b1"})


@pytest.fixture
def routed(relay: Relay, store: MemoryBlobStore) -> Relay:
    store.write("gs://catalog/push.yaml", PUSH_SPEC.read_bytes())
    return replace(relay, policy=policy(ROUTED), catalog=Catalog(store, "gs://catalog"))


def upload(
    store: MemoryBlobStore,
    name: str,
    generation: int = 7,
    *,
    bucket: str = "lab-data",
    data: bytes = b"x" * 1234,
    metadata: dict[str, str] | None = None,
) -> None:
    """The data object as Cloud Storage keeps it: what a route's templates are filled from."""
    batch = {"batch": "b1"} if metadata is None else metadata
    store.put(f"gs://{bucket}/{name}", data, content_type="text/csv", metadata=batch, generation=generation)


def notification(
    name: str, generation: str | None = "7", message_id: str = "m1", bucket: str = "lab-data", **resource: Any
) -> Delivery:
    """A Cloud Storage notification (JSON_API_V1, OBJECT_FINALIZE) pushed from the trigger topic."""
    attributes = {"payloadFormat": "JSON_API_V1", "eventType": "OBJECT_FINALIZE", "bucketId": bucket, "objectId": name}
    if generation is not None:
        attributes["objectGeneration"] = generation
    body = {"bucket": bucket, "name": name, "size": "1234", "contentType": "text/csv", "metadata": {"batch": "b1"}}
    body.update(resource)
    message = {
        "messageId": message_id,
        "attributes": attributes,
        "data": base64.b64encode(json.dumps(body).encode()).decode(),
    }
    event = {"id": message_id, "type": "google.cloud.pubsub.topic.v1.messagePublished", "time": NOW}
    return parse_pubsub_event({**event, "source": f"//pubsub.googleapis.com/{TOPIC}"}, {"message": message})


def test_a_route_starts_exactly_one_push_for_an_object_delivered_three_times(
    routed: Relay, backend: FakeBackend, store: MemoryBlobStore
):
    upload(store, "assay/x.csv")
    outcomes = [handle_delivery(routed, notification("assay/x.csv", message_id=f"m{i}")) for i in range(3)]
    assert [o.outcome for o in outcomes] == ["launched", "duplicate", "duplicate"]
    key = naming.derive_run_key("push", naming.object_identity("lab-data", "assay/x.csv", 7))
    assert {o.run_key for o in outcomes} == {key}
    [launch] = backend.launches
    assert launch.pipeline == "push"
    assert launch.parameters["sources"] == ["gs://lab-data/assay/x.csv"]
    assert launch.parameters["destination"] == {"kind": "gcs", "bucket": "ml-data", "prefix": "incoming/b1"}
    assert launch.parameters["tenant"] == "lab"
    saved = records.decode(store.read(naming.launch_record(RESULTS, key)).data)
    assert saved["trigger"]["route"] == "lab/assay-csv" and saved["trigger"]["generation"] == 7


def test_an_object_outside_the_route_starts_nothing(routed: Relay, backend: FakeBackend):
    # Another prefix, another suffix, another bucket: no route takes them. In a routed bucket outside every trigger
    # location, a .json too is a data file, skipped, never rejected as a trigger (issue 23); in a bucket with no
    # route a data file is skipped as no trigger name.
    outcomes = [
        handle_delivery(routed, notification("other/x.csv")).outcome,
        handle_delivery(routed, notification("assay/x.json")).outcome,
        handle_delivery(routed, notification("assay/x.csv", bucket="elsewhere")).outcome,
    ]
    assert outcomes == ["skipped", "skipped", "skipped"]
    assert backend.launches == []


def test_a_new_generation_is_a_new_run(routed: Relay, backend: FakeBackend, store: MemoryBlobStore):
    upload(store, "assay/x.csv", 7)
    first = handle_delivery(routed, notification("assay/x.csv", generation="7"))
    upload(store, "assay/x.csv", 8)
    second = handle_delivery(routed, notification("assay/x.csv", generation="8", message_id="m2"))
    assert (first.outcome, second.outcome) == ("launched", "launched") and first.run_key != second.run_key
    assert len(backend.launches) == 2


def test_a_template_the_event_cannot_fill_is_rejected_with_its_problem(
    routed: Relay, backend: FakeBackend, store: MemoryBlobStore
):
    upload(store, "assay/x.csv", metadata={"other": "x"})
    outcome = handle_delivery(routed, notification("assay/x.csv"))
    assert outcome.outcome == "rejected" and backend.launches == []
    error = records.decode(store.read(naming.rejection_record(RESULTS, outcome.run_key or "")).data)["error"]
    assert error["code"] == "invalid_parameters"
    assert error["problems"] == [
        {
            "field": "parameters.destination.prefix",
            "expected": "the object's metadata.batch (route template {metadata.batch})",
            "found": "none in the event",
        }
    ]


def test_a_template_that_does_not_fit_the_pipelines_inputs_is_rejected(routed: Relay, backend, store):
    tenant = routed.policy.tenants[0]
    route = replace(tenant.routes[0], parameters={"sources": "{uri}", "destination": {}})  # a string for a list
    governed = replace(routed, policy=replace(routed.policy, tenants=(replace(tenant, routes=(route,)),)))
    upload(store, "assay/x.csv")
    outcome = handle_delivery(governed, notification("assay/x.csv"))
    assert outcome.outcome == "rejected" and backend.launches == []
    error = records.decode(store.read(naming.rejection_record(RESULTS, outcome.run_key or "")).data)["error"]
    assert error["code"] == "invalid_parameters"
    assert error["problems"][0]["field"] == "parameters.sources"


def test_a_route_obeys_its_tenants_policy(routed: Relay, backend: FakeBackend, store: MemoryBlobStore):
    tenant = routed.policy.tenants[0]
    params = {"sources": ["{uri}"], "destination": {"kind": "gcs", "bucket": "elsewhere", "prefix": "x/"}}
    route = replace(tenant.routes[0], parameters=params)
    governed = replace(routed, policy=replace(routed.policy, tenants=(replace(tenant, routes=(route,)),)))
    upload(store, "assay/x.csv")
    outcome = handle_delivery(governed, notification("assay/x.csv"))
    assert outcome.outcome == "rejected" and backend.launches == []
    error = records.decode(store.read(naming.rejection_record(RESULTS, outcome.run_key or "")).data)["error"]
    assert error["code"] == "policy_denied"
    assert [p["field"] for p in error["problems"]] == ["parameters.destination"]


def test_a_notification_without_a_generation_is_rejected_not_keyed_on_the_name(routed: Relay, backend):
    outcome = handle_delivery(routed, notification("assay/x.csv", generation=None))
    assert outcome.outcome == "rejected" and backend.launches == []


def test_zero_byte_objects_and_relays_own_records_are_skipped(routed: Relay, backend: FakeBackend, store):
    upload(store, "assay/x.csv", data=b"")
    assert handle_delivery(routed, notification("assay/x.csv")).outcome == "skipped"
    assert backend.launches == []


def test_storage_events_and_trigger_uris_never_take_a_route(routed: Relay, backend: FakeBackend):
    # Only a notification describes a finalized object; a trigger_uri message names one its publisher chose.
    message = {"messageId": "m9", "attributes": {"trigger_uri": "gs://lab-data/assay/x.csv#7"}, "data": ""}
    source = f"//pubsub.googleapis.com/{TOPIC}"
    event = {"id": "m9", "type": "google.cloud.pubsub.topic.v1.messagePublished", "time": NOW, "source": source}
    delivery = parse_pubsub_event(event, {"message": message})
    assert handle_delivery(routed, delivery).outcome == "skipped"  # as any data file: not a trigger name
    assert backend.launches == []


# -- templates ------------------------------------------------------------------------------------------------


def test_templates_substitute_once_and_keep_whole_values_typed():
    params = {
        "a": "{size}",
        "b": "n={size}",
        "c": ["{generation}", "{content_type}"],
        "d": {"k": "{{literal}} {name}"},
        "e": 3,
        "f": "{metadata.batch}",
    }
    filled, problems = render(params, EVENT)
    assert problems == []
    assert filled == {
        "a": 1234,
        "b": "n=1234",
        "c": [7, "text/csv"],
        "d": {"k": "{literal} assay/x.csv"},
        "e": 3,
        "f": "b1",
    }
    # A value that looks like a template is inserted as text, never expanded again.
    sneaky = replace(EVENT, name="{bucket}")
    assert render({"n": "{name}", "u": "{uri}"}, sneaky)[0] == {"n": "{bucket}", "u": "gs://lab-data/{bucket}"}


def test_a_missing_value_names_the_parameter_and_the_field():
    _, problems = render({"x": ["{metadata.nope}"]}, EVENT)
    expected = "the object's metadata.nope (route template {metadata.nope})"
    assert problems == [Problem("parameters.x[0]", expected, "none in the event")]


def test_bad_templates_are_found_when_the_policy_is_read():
    assert template_problems({"a": "{uri}", "b": ["{{ok}}"]}, "p") == []
    problems = template_problems({"a": "{nope}", "b": ["x{"], "c": "{metadata.a b}"}, "p")
    assert [p.split(":")[0] for p in problems] == ["p.a", "p.b[0]", "p.c"]


def test_globs_match_after_the_prefix_case_sensitively():
    route = Route(id="r", bucket="b", pipeline="push", prefix="in/", glob="*.csv")
    assert route.matches("b", "in/x.csv") and route.matches("b", "in/deep/x.csv")
    assert not route.matches("b", "in/x.CSV") and not route.matches("b", "out/x.csv")
    assert not route.matches("c", "in/x.csv")


# -- the policy file --------------------------------------------------------------------------------------------


def test_routes_are_parsed_strictly():
    text = """
tenants:
  - name: lab
    triggers: [gs://triggers/lab/]
    routes:
      - {id: r1, bucket: lab-data, prefix: assay/, pipeline: push, parameters: {sources: ["{nope}"]}, when: now}
      - {id: r1, bucket: "Bad Bucket", prefix: "a/../b/", pipeline: "Push"}
      - {id: r3, bucket: triggers, prefix: lab/x/, pipeline: push}
"""
    with pytest.raises(PolicyError) as raised:
        parse_policy(text, "p.yaml")
    problems = "\n".join(raised.value.problems)
    for expected in (
        "tenants.lab.routes[0].when: unknown key",
        "tenants.lab.routes[0].parameters.sources[0]: expected {field} templates, found an unknown field {nope}",
        "tenants.lab.routes[1].bucket: expected a bucket name",
        "tenants.lab.routes[1].prefix: expected an object name prefix",
        "tenants.lab.routes[1].pipeline: expected a pipeline name",
        "tenants.lab.routes: the id 'r1' is used twice",
        "tenants.lab.routes.r3: gs://triggers/lab/x/ overlaps the trigger location gs://triggers/lab/ of tenant lab",
    ):
        assert expected in problems


def test_a_route_cannot_watch_relays_own_storage():
    text = (
        "protect: [gs://relay-results]\ntenants: [{name: lab, routes: [{id: r, bucket: relay-results, pipeline: p}]}]"
    )
    with pytest.raises(PolicyError) as raised:
        parse_policy(text, "p.yaml")
    assert (
        "tenants.lab.routes.r: gs://relay-results/ lies inside Relay's own gs://relay-results" in raised.value.problems
    )
