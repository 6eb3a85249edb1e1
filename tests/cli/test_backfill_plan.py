"""What `relay backfill` would deliver, and the run key of each: the objects a tenant's trigger locations or routes
cover, and the message whose delivery the functions key exactly as the object's own lost event."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path

import pytest

from relay import naming, set_store
from relay import policy as rules
from relay.adapters.routing import RoutingBlobStore
from relay.events import PUBSUB_PUBLISHED, EventInfo, ObjectDelivery, parse_pubsub_event
from relay.outcome import Outcome
from relay.service import Relay, handle_delivery
from relaycli.backfill_plan import (
    NOTIFICATION,
    TRIGGER_URI,
    Candidate,
    Cover,
    Listed,
    covers,
    message,
    plan,
    run_key,
    set_member,
    since,
)
from tests.cli.support import ECHO, relay_on
from tests.conftest import NOW
from tests.fakes import MemoryBlobStore

LAB, SCANS = "projects/proj-lab/topics/lab", "projects/proj-lab/topics/scans"
POLICY = """
notifications:
  - {topic: projects/proj-lab/topics/scans, buckets: [lab-data]}
tenants:
  - name: lab
    triggers: [gs://triggers/lab/]
    topics: [projects/proj-lab/topics/lab]
  - name: nested
    triggers: [gs://triggers/lab/nested/]
    topics: [projects/proj-lab/topics/nested]
  - name: mute
    triggers: [gs://triggers/mute/]
  - name: scans
    triggers: [gs://triggers/scans/]
    topics: [projects/proj-lab/topics/scans]
    routes:
      - {id: csv, bucket: lab-data, prefix: assay/, glob: "*.csv", pipeline: echo,
         parameters: {message: "{name}", count: "{size}"}}
      - {id: plates, bucket: lab-data, prefix: plates/, glob: "*.csv", pipeline: echo, set: {marker: _SUCCESS},
         parameters: {message: "{folder}", count: "{count}"}}
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return str(path)


@pytest.fixture
def policy(policy_file: str) -> rules.Policy:
    return rules.parse_policy(POLICY.encode(), policy_file)


def tenants(found: list[Cover]) -> list[tuple[str, str, str | None, str | None]]:
    return [(c.via, c.topic, c.tenant.name if c.tenant else None, c.route.id if c.route else None) for c in found]


def test_a_trigger_file_goes_on_the_topic_of_the_tenant_its_storage_event_speaks_for(policy: rules.Policy):
    assert tenants(covers(policy, "triggers", "lab/a.json")) == [(TRIGGER_URI, LAB, "lab", None)]
    # The longest trigger location wins, as for the storage event: never the outer tenant's topic.
    nested = covers(policy, "triggers", "lab/nested/a.json")
    assert tenants(nested) == [(TRIGGER_URI, "projects/proj-lab/topics/nested", "nested", None)]
    assert covers(policy, "triggers", "lab/nested/a.json", tenant="lab") == []
    assert covers(policy, "triggers", "elsewhere/a.json") == []
    assert covers(policy, "triggers", "mute/a.json") == []  # no topic to deliver it on


def test_a_routed_object_goes_as_a_notification_on_the_topic_wired_to_its_bucket(policy: rules.Policy):
    assert tenants(covers(policy, "lab-data", "assay/x.csv")) == [(NOTIFICATION, SCANS, "scans", "csv")]
    assert covers(policy, "lab-data", "assay/x.txt") == []  # no route takes it: skipped unrecorded by the functions
    assert covers(policy, "lab-data", "assay/x.csv", tenant="lab") == []


def test_relays_own_objects_are_never_covered_and_without_a_policy_every_object_is_a_trigger_file():
    own = ("gs://triggers/relay", "gs://triggers/catalog")
    assert covers(rules.NO_POLICY, "triggers", "relay/runs/k/launch.json", topic=LAB, own=own) == []
    assert covers(rules.NO_POLICY, "triggers", "catalog/echo.yaml", topic=LAB, own=own) == []
    assert tenants(covers(rules.NO_POLICY, "triggers", "a.json", topic=LAB, own=own)) == [
        (TRIGGER_URI, LAB, None, None)
    ]


def test_since_keeps_objects_changed_at_or_after_the_moment_and_none_of_unknown_age():
    listed = Listed("b", "n", 1, 1, updated=NOW)
    assert since(listed, None) and since(listed, NOW) and not since(listed, NOW + timedelta(seconds=1))
    assert not since(Listed("b", "n", 1, 1), NOW)
    assert since(Listed("b", "n", 1, 1), None)


def test_plan_delivers_what_no_record_names_and_a_run_key_once():
    cover = Cover(TRIGGER_URI, LAB, None)
    one, two, three = (Candidate(Listed("b", f"{n}.json", n, 1), cover) for n in (1, 2, 3))
    planned = list(plan([(one, "k-1"), (two, "k-2"), (three, "k-1")], lambda _, key: {"k-2": "launched"}.get(key)))
    assert [(p.candidate, p.run_key, p.recorded) for p in planned] == [
        (one, "k-1", None),
        (two, "k-2", "launched"),
        (three, "k-1", "duplicate"),
    ]


def storage_event(relay: Relay, bucket: str, name: str, generation: int, size: int) -> Outcome:
    """The outcome of the object's own storage event."""
    event = EventInfo(id="evt", type="google.cloud.storage.object.v1.finalized", source="s", time=NOW)
    return handle_delivery(relay, ObjectDelivery(event, bucket, name, generation, size, "storage-event"))


def delivered(relay: Relay, candidate: Candidate) -> Outcome:
    """The outcome of the message backfill publishes, as the emulator's push hands it to on_message_published."""
    data, attributes = message(candidate)
    topic = candidate.cover.topic
    cloud_event = {"id": "m-7", "type": PUBSUB_PUBLISHED, "source": f"//pubsub.googleapis.com/{topic}", "time": NOW}
    body = {"messageId": "m-7", "publishTime": NOW.isoformat(), "attributes": attributes}
    delivery = parse_pubsub_event(cloud_event, {"message": {**body, "data": base64.b64encode(data).decode()}})
    return handle_delivery(relay, delivery)


OBJECTS = {
    "gs://triggers/lab/plain.json": json.dumps(ECHO).encode(),
    "gs://triggers/lab/own-key.json": json.dumps({**ECHO, "run_key": "nightly-1"}).encode(),
    "gs://triggers/lab/invalid.json": b'{"pipeline": "echo", "parameters": {"nope": 1}}',
    "gs://triggers/lab/broken.yaml": b"{",
    "gs://triggers/lab/notes.txt": b"not a trigger",
    "gs://triggers/lab/empty.json": b"",
    "gs://lab-data/assay/x.csv": b"a,b\n1,2\n",
    "gs://lab-data/assay/empty.csv": b"",
}


@pytest.mark.parametrize("uri", sorted(OBJECTS))
def test_the_message_is_keyed_by_the_functions_as_the_objects_own_event(
    uri: str, policy: rules.Policy, policy_file: str, gcs: MemoryBlobStore, blobs: RoutingBlobStore, tmp_path: Path
):
    generation = gcs.put(uri, OBJECTS[uri])
    bucket, name = naming.split_gs_uri(uri)
    [cover] = covers(policy, bucket, name)
    candidate = Candidate(Listed(bucket, name, generation, len(OBJECTS[uri])), cover)
    key = run_key(candidate, lambda at, version: gcs.read(at, generation=version).data)
    (tmp_path / "by-event").mkdir()
    (tmp_path / "by-message").mkdir()
    by_message = delivered(relay_on(blobs, str(tmp_path / "by-message"), at=NOW, policy_uri=policy_file), candidate)
    assert by_message.run_key == key, by_message
    assert by_message.outcome in ("launched", "rejected", "skipped"), by_message
    if cover.route is None:  # a trigger file's own event: the storage event of its bucket
        relay = relay_on(blobs, str(tmp_path / "by-event"), at=NOW, policy_uri=policy_file)
        by_event = storage_event(relay, bucket, name, generation, len(OBJECTS[uri]))
        assert (by_event.outcome, by_event.run_key) == (by_message.outcome, key)
    else:  # a routed object's own event is the notification itself: keyed by the object version
        assert key == naming.derive_run_key("echo", naming.object_identity(bucket, name, generation))


def test_without_a_policy_the_trigger_uri_is_keyed_as_the_storage_event(
    gcs: MemoryBlobStore, blobs: RoutingBlobStore, tmp_path: Path
):
    document = OBJECTS["gs://triggers/lab/plain.json"]
    generation = gcs.put("gs://triggers/plain.json", document)
    [cover] = covers(rules.NO_POLICY, "triggers", "plain.json", topic=LAB)
    candidate = Candidate(Listed("triggers", "plain.json", generation, len(document)), cover)
    key = run_key(candidate, lambda at, version: gcs.read(at, generation=version).data)
    (tmp_path / "by-event").mkdir()
    (tmp_path / "by-message").mkdir()
    by_message = delivered(relay_on(blobs, str(tmp_path / "by-message"), at=NOW), candidate)
    by_event = relay_on(blobs, str(tmp_path / "by-event"), at=NOW)
    event = storage_event(by_event, "triggers", "plain.json", generation, len(document))
    assert (by_message.outcome, by_message.run_key) == ("launched", key) == (event.outcome, event.run_key)


def test_a_set_routes_object_is_looked_for_in_the_sets_the_functions_collect_it_in(
    policy: rules.Policy, policy_file: str, gcs: MemoryBlobStore, blobs: RoutingBlobStore, results: str
):
    relay = relay_on(blobs, results, at=NOW, policy_uri=policy_file)
    found = []
    for name in ("plates/p1/a.csv", "plates/p1/_SUCCESS"):
        generation = gcs.put(f"gs://lab-data/{name}", b"a\n1\n" if name.endswith(".csv") else b"")
        [cover] = covers(policy, "lab-data", name)
        candidate = Candidate(Listed("lab-data", name, generation, 0), cover)
        place = set_member(candidate)
        assert place is not None and not set_store.is_member(blobs, results, *place)
        found.append((delivered(relay, candidate).outcome, set_store.is_member(blobs, results, *place)))
    assert found == [("collected", True), ("launched", True)]  # the marker is a member too
    [assay] = covers(policy, "lab-data", "assay/x.csv")  # a route without a set, and a trigger file: no sets
    [trigger] = covers(policy, "triggers", "lab/a.json")
    assert [set_member(Candidate(Listed("b", "n", 1, 1), c)) for c in (assay, trigger)] == [None, None]
