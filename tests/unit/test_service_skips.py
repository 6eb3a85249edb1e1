"""Skipped deliveries through the launch use-case: an object that is no trigger (a stray name, zero bytes) and that a
tenant meant for Relay is recorded once per object version at `runs/<key>/skipped.json`, so `relay runs` can show
it; anything else skipped (Relay's own objects, a data bucket's objects no route takes, envelopes no one can read)
is logged only."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from relay import naming, records
from relay.events import EventInfo, Message, ObjectDelivery, Skip
from relay.policy import NO_POLICY
from relay.service import Relay, handle_delivery, records_skip, skip_run_key
from tests.conftest import NOW
from tests.fakes import FakeBackend, MemoryBlobStore, RecordingNotifier
from tests.policies import policy

STORAGE = EventInfo(id="evt-1", type="google.cloud.storage.object.v1.finalized", source="s", time=NOW)
PUBSUB = EventInfo(id="msg-1", type="google.cloud.pubsub.topic.v1.messagePublished", source="s", time=NOW)
TOPIC = "projects/proj-p/topics/assay"
POLICY = policy(
    """
notifications:
  - {topic: projects/proj-p/topics/assay, buckets: [lab-data]}
tenants:
  - name: assay
    triggers: [gs://triggers/assay/]
    topics: [projects/proj-p/topics/assay]
    pipelines: [echo]
    routes:
      - {id: csv, bucket: lab-data, prefix: incoming/, glob: "*.csv", pipeline: echo, parameters: {message: "{uri}"}}
"""
)
[ASSAY] = POLICY.tenants


class CountingStore(MemoryBlobStore):
    """Counts what a skip costs: each call that goes to storage."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, uri: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        self.writes.append(uri)
        return super().write(uri, data, if_generation_match=if_generation_match)


@pytest.fixture
def counted(relay: Relay) -> Relay:
    return replace(relay, store=CountingStore())


def stored(store: MemoryBlobStore, name: str, data: bytes, bucket: str = "triggers") -> ObjectDelivery:
    generation = store.write(f"gs://{bucket}/{name}", data)
    return ObjectDelivery(STORAGE, bucket, name, generation, len(data), "storage-event")


def named(name: str, *, bucket: str = "triggers", generation: int | None = None, via: str = "trigger-uri"):
    return ObjectDelivery(PUBSUB, bucket, name, generation, None, via, Message(TOPIC, "m-7", "nonce-1"))


def skips(store: MemoryBlobStore) -> dict[str, dict[str, object]]:
    return {
        uri: records.decode(store.read(uri).data)
        for uri in store.uris("gs://results/")
        if uri.endswith("/skipped.json")
    }


# The decision


def test_without_a_policy_every_skipped_object_is_recorded():
    assert records_skip(NO_POLICY, named("notes.txt"), None, routed=False)


def test_under_a_policy_only_a_tenants_own_trigger_locations_or_routes_are_recorded():
    mine, elsewhere = named("assay/notes.txt"), named("other/notes.txt")
    data = named("incoming/x.txt", bucket="lab-data", via="storage-notification")
    assert records_skip(POLICY, mine, ASSAY, routed=False)
    assert not records_skip(POLICY, elsewhere, ASSAY, routed=False)  # no tenant meant it: nothing to explain
    assert not records_skip(POLICY, data, ASSAY, routed=False)  # a data bucket's thousands of objects
    assert records_skip(POLICY, data, ASSAY, routed=True)  # the tenant's route took it
    assert not records_skip(POLICY, mine, None, routed=False)  # an origin no tenant owns


def test_a_skip_is_keyed_by_the_object_version_or_else_by_the_message():
    version = named("notes.txt", generation=7)
    assert skip_run_key(version, 7) == naming.derive_run_key("trigger", "gs://triggers/notes.txt#7")
    unversioned = named("notes.txt")
    message = naming.message_identity(TOPIC, "m-7", "nonce-1")
    assert skip_run_key(unversioned, None) == naming.derive_run_key("trigger", message)


# Through handle_delivery, on the fake store


@pytest.mark.parametrize(
    ("name", "data", "code", "reason"),
    [
        ("t.json", b"", "empty_object", "zero-byte object: an upload in progress or a placeholder"),
        ("notes.txt", b"hello", "not_a_trigger", "not a trigger file: the name does not end in .json, .yaml or .yml"),
    ],
)
def test_a_skipped_trigger_file_is_recorded_once_in_one_write(
    counted: Relay, backend: FakeBackend, notifier: RecordingNotifier, name: str, data: bytes, code: str, reason: str
):
    store = counted.store
    assert isinstance(store, CountingStore)
    delivery = stored(store, name, data)
    store.writes.clear()
    store.looked_at.clear()
    outcome = handle_delivery(counted, delivery)
    key = naming.derive_run_key("trigger", f"gs://triggers/{name}#{delivery.generation}")
    uri = naming.skip_record("gs://results/relay", key)
    assert (outcome.outcome, outcome.message, outcome.run_key, outcome.severity) == ("skipped", reason, key, "INFO")
    assert store.writes == [uri] and store.looked_at == []  # one round trip: no read first, none of the object
    assert skips(store) == {
        uri: {
            "state": "skipped",
            "status": None,
            "message": f"gs://triggers/{name}: skipped: {reason}",
            "code": code,
            "run_key": key,
            "tenant": "",
            "pipeline": None,
            "trigger": {
                "uri": f"gs://triggers/{name}",
                "generation": delivery.generation,
                "via": "storage-event",
                "event_id": "evt-1",
                "event_type": "google.cloud.storage.object.v1.finalized",
                "event_time": "2026-11-21T12:00:00.000Z",
            },
            "outputs": {},
            "metrics": {},
            "skipped_at": "2026-11-21T12:00:00.000Z",
        }
    }
    generation = store.stat(uri).generation
    again = handle_delivery(counted, replace(delivery, event=replace(STORAGE, id="evt-2")))
    assert again.run_key == key and store.stat(uri).generation == generation  # a redelivery writes nothing new
    assert store.writes == [uri, uri] and backend.launches == [] and notifier.messages == []  # never published


def test_relays_own_objects_are_never_recorded_even_in_the_trigger_bucket(relay: Relay, store: MemoryBlobStore):
    relay = replace(relay, settings=replace(relay.settings, results_uri="gs://triggers/relay"))
    for name, data in (("relay/runs/k/report.html", b"<html>"), ("relay/runs/k/empty.json", b"")):
        outcome = handle_delivery(relay, stored(store, name, data))
        assert outcome.outcome == "skipped" and outcome.run_key is None
        assert outcome.message == "a Relay record under gs://triggers/relay, not a trigger"
    assert store.uris("gs://triggers/relay/") == [
        "gs://triggers/relay/runs/k/empty.json",
        "gs://triggers/relay/runs/k/report.html",
    ]


def test_an_empty_object_a_message_names_is_recorded_at_the_generation_the_store_has(relay: Relay, store):
    generation = store.write("gs://triggers/t.json", b"")
    outcome = handle_delivery(relay, named("t.json"))
    assert outcome.run_key == naming.derive_run_key("trigger", f"gs://triggers/t.json#{generation}")
    [record] = skips(store).values()
    assert record["code"] == "empty_object" and record["trigger"]["generation"] == generation  # type: ignore[index]
    assert record["trigger"]["topic"] == TOPIC  # type: ignore[index]


def test_under_a_policy_a_skip_is_recorded_for_the_tenant_its_origin_decides(relay: Relay, store: MemoryBlobStore):
    relay = replace(relay, policy=POLICY)
    handle_delivery(relay, stored(store, "assay/notes.txt", b"x"))  # the tenant's trigger location
    handle_delivery(relay, stored(store, "other/notes.txt", b"x"))  # no tenant's: logged only
    handle_delivery(relay, named("incoming/x.txt", bucket="lab-data", generation=5, via="storage-notification"))
    assert [(r["tenant"], r["trigger"]["uri"]) for r in skips(store).values()] == [  # type: ignore[index]
        ("assay", "gs://triggers/assay/notes.txt")
    ]


def test_an_empty_routed_object_is_recorded_under_the_run_key_the_route_gives_it(relay: Relay, store):
    relay = replace(relay, policy=POLICY)
    store.put("gs://lab-data/incoming/run-7.csv", b"", generation=42)
    outcome = handle_delivery(
        relay, named("incoming/run-7.csv", bucket="lab-data", generation=42, via="storage-notification")
    )
    key = naming.derive_run_key("echo", "gs://lab-data/incoming/run-7.csv#42")
    assert (outcome.outcome, outcome.run_key, outcome.pipeline) == ("skipped", key, "echo")
    assert [(r["run_key"], r["pipeline"], r["tenant"]) for r in skips(store).values()] == [(key, "echo", "assay")]


def test_an_envelope_relay_cannot_read_is_logged_never_recorded(relay: Relay, store: MemoryBlobStore):
    # Its text is whoever published it: a trigger_uri may even carry credentials, which a record must never hold.
    skip = Skip(PUBSUB, "https://user:secret@example.com/x", "expected a gs:// URI", authored=True)
    assert handle_delivery(relay, skip).outcome == "skipped" and store.uris("gs://results/") == []


def test_a_late_delivery_of_an_empty_object_is_a_skip_not_a_stale_drop(relay: Relay, store: MemoryBlobStore):
    # Age decides only whether a launch may still start; an object that is no trigger never launches, so however
    # late, it is the same one skip record (the stale rules and their records: tests/unit/test_service_origin.py).
    late = replace(stored(store, "t.json", b""), event=replace(STORAGE, time=NOW - timedelta(hours=5)))
    outcome = handle_delivery(relay, late)
    assert (outcome.outcome, outcome.code) == ("skipped", None)
    assert [record["code"] for record in skips(store).values()] == ["empty_object"]
    assert store.uris("gs://results/relay/rejected/") == []
