"""The launch use-case under a deployment policy: tenants, their run-key namespaces, and policy_denied records."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from relay import naming, records
from relay.errors import PolicyDeniedError
from relay.events import EventInfo, InlineDelivery, ObjectDelivery
from relay.service import Relay, handle_delivery
from tests.conftest import NOW
from tests.fakes import FakeBackend, MemoryBlobStore
from tests.policies import policy

EVENT = EventInfo(id="evt-1", type="google.cloud.storage.object.v1.finalized", source="s", time=NOW)
POLICY = policy(
    """
tenants:
  - name: assay
    triggers: [gs://triggers/assay/]
    topics: [projects/proj-p/topics/assay]
  - name: imaging
    triggers: [gs://triggers/imaging/]
    pipelines: [push]
"""
)


@pytest.fixture
def governed(relay: Relay) -> Relay:
    return replace(relay, policy=POLICY)


def upload(store: MemoryBlobStore, name: str, document: object) -> ObjectDelivery:
    data = json.dumps(document).encode()
    generation = store.write(f"gs://triggers/{name}", data)
    return ObjectDelivery(EVENT, "triggers", name, generation, len(data), "storage-event")


def rejection(store: MemoryBlobStore, run_key: str) -> dict[str, object]:
    return records.decode(store.read(naming.rejection_record("gs://results/relay", run_key)).data)


def test_a_squatter_cannot_take_another_tenants_run_key(governed: Relay, store: MemoryBlobStore, backend: FakeBackend):
    trigger = {"pipeline": "echo", "parameters": {"message": "hi"}, "run_key": "nightly-2026-11-21"}
    squatter = handle_delivery(governed, upload(store, "imaging/squat.json", trigger))
    victim = handle_delivery(governed, upload(store, "assay/nightly.json", trigger))
    assert squatter.outcome == "rejected"  # imaging may run push only, and its key is its own anyway
    assert squatter.message.startswith("gs://triggers/imaging/squat.json: ")
    assert squatter.run_key == "imaging--nightly-2026-11-21"
    assert victim.outcome == "launched" and victim.run_key == "assay--nightly-2026-11-21"
    assert [launch.run_key for launch in backend.launches] == ["assay--nightly-2026-11-21"]
    saved = records.decode(store.read(naming.launch_record("gs://results/relay", victim.run_key)).data)
    assert saved["tenant"] == "assay"


def test_a_repeated_key_in_the_same_tenant_is_still_one_run(governed: Relay, store: MemoryBlobStore, backend):
    trigger = {"pipeline": "echo", "parameters": {"message": "hi"}, "run_key": "nightly"}
    handle_delivery(governed, upload(store, "assay/a.json", trigger))
    again = handle_delivery(governed, upload(store, "assay/b.json", trigger))
    assert again.outcome == "duplicate" and len(backend.launches) == 1


def test_a_trigger_from_no_tenant_is_refused_and_its_key_never_used(governed: Relay, store: MemoryBlobStore, backend):
    trigger = {"pipeline": "echo", "parameters": {"message": "hi"}, "run_key": "assay--nightly"}
    delivery = upload(store, "elsewhere/t.json", trigger)
    outcome = handle_delivery(governed, delivery)
    assert outcome.outcome == "rejected" and backend.launches == []
    identity = f"gs://triggers/elsewhere/t.json#{delivery.generation}"
    assert outcome.run_key == naming.derive_run_key(naming.UNKNOWN_PIPELINE, identity)  # never read, never its key
    saved = records.decode(store.read(naming.rejection_record("gs://results/relay", str(outcome.run_key))).data)
    assert (saved["trigger"]["uri"], saved["trigger"]["generation"]) == (delivery.uri, delivery.generation)
    error = saved["error"]
    assert error["code"] == PolicyDeniedError.code == "policy_denied"
    assert error["problems"] == [
        {
            "field": "(origin)",
            "expected": "a trigger location or topic of a tenant (gs://triggers/assay/, projects/proj-p/topics/assay, "
            "gs://triggers/imaging/)",
            "found": "gs://triggers/elsewhere/t.json",
        }
    ]


def test_inline_messages_speak_for_the_tenant_of_their_topic(governed: Relay, store: MemoryBlobStore, backend):
    trigger = json.dumps({"pipeline": "echo", "parameters": {"message": "hi"}, "run_key": "k"}).encode()
    mine = handle_delivery(governed, InlineDelivery(EVENT, "projects/proj-p/topics/assay", "1", trigger, "json"))
    published = "2026-11-29T21:58:21.511Z"
    elsewhere = InlineDelivery(
        EVENT, "projects/proj-p/topics/other", "1", trigger, "json", nonce_or_publish_time=published
    )
    other = handle_delivery(governed, elsewhere)
    assert mine.outcome == "launched" and mine.run_key == "assay--k"
    assert other.outcome == "rejected" and "(origin)" in other.message
    # Keyed by the message, never by the key it names; a redelivery finds the same record.
    identity = f"pubsub:projects/proj-p/topics/other#1@{published}"
    assert other.run_key == naming.derive_run_key(naming.UNKNOWN_PIPELINE, identity)
    saved = records.decode(store.read(naming.rejection_record("gs://results/relay", str(other.run_key))).data)
    trigger_reference = (saved["trigger"]["message_id"], saved["trigger"]["nonce_or_publish_time"])
    assert trigger_reference == ("1", published) and saved["trigger"]["via"] == "pubsub-inline"


def test_every_refused_item_is_one_problem_on_the_record(governed: Relay, store: MemoryBlobStore, backend):
    trigger = {"pipeline": "echo", "parameters": {"message": "secret://hf-token", "options": {"k": "secret://x"}}}
    outcome = handle_delivery(governed, upload(store, "assay/t.json", trigger))
    assert outcome.outcome == "rejected" and backend.launches == []
    problems = rejection(store, outcome.run_key)["error"]["problems"]
    assert [p["field"] for p in problems] == ["parameters.message", "parameters.options.k"]
    assert all(p["expected"] == "a secret only where tenants.assay.secrets binds it" for p in problems)


def test_a_tenant_key_that_no_longer_fits_is_refused(governed: Relay, store: MemoryBlobStore, backend):
    trigger = {"pipeline": "echo", "parameters": {"message": "hi"}, "run_key": "k" * 127}
    outcome = handle_delivery(governed, upload(store, "assay/t.json", trigger))
    assert outcome.outcome == "rejected" and backend.launches == []
    [problem] = rejection(store, outcome.run_key)["error"]["problems"]
    assert problem == {"field": "run_key", "expected": "at most 120 characters in this tenant", "found": "127"}


def test_without_a_policy_a_trigger_naming_nothing_outside_still_runs(relay: Relay, store: MemoryBlobStore, backend):
    outcome = handle_delivery(relay, upload(store, "any/t.json", {"pipeline": "echo", "parameters": {"message": "x"},
                                                                  "run_key": "k"}))  # fmt: skip
    assert outcome.outcome == "launched" and outcome.run_key == "k"


@pytest.mark.parametrize("key", ["nightly\n", "nightly\r\n", "Nightly", "night ly"])
def test_run_keys_match_whole(relay: Relay, store: MemoryBlobStore, backend, key: str):
    outcome = handle_delivery(relay, upload(store, "t.json", {"pipeline": "echo", "parameters": {"message": "x"},
                                                              "run_key": key}))  # fmt: skip
    assert outcome.outcome == "rejected" and backend.launches == []


def test_integers_past_int64_are_refused(relay: Relay, store: MemoryBlobStore, backend):
    trigger = {"pipeline": "echo", "parameters": {"message": "x", "count": 2**63}}
    outcome = handle_delivery(relay, upload(store, "t.json", trigger))
    assert outcome.outcome == "rejected" and "KFP integers are int64" in outcome.message
    assert (
        handle_delivery(
            relay, upload(store, "u.json", {**trigger, "parameters": {"message": "x", "count": 2**63 - 1}})
        ).outcome
        == "launched"
    )


def test_an_object_outside_every_tenant_is_refused_without_being_read(governed: Relay, store: MemoryBlobStore):
    # A topic message may name any object; one no tenant owns is never read, so its bytes reach no record.
    store.write("gs://lab-data/private/notes.yaml", b"pipeline: Hunter2-password\n")  # a read would quote it
    named = ObjectDelivery(EVENT, "lab-data", "private/notes.yaml", None, None, "trigger-uri")
    outcome = handle_delivery(governed, named)
    assert outcome.outcome == "rejected" and outcome.pipeline is None
    # Without a generation it is keyed as generation 0, as a trigger_uri delivery of it would be.
    assert outcome.run_key == naming.derive_run_key(naming.UNKNOWN_PIPELINE, "gs://lab-data/private/notes.yaml#0")
    record = rejection(store, outcome.run_key)
    assert record["error"]["code"] == "policy_denied" and "Hunter2" not in json.dumps(record)
    assert store.uris("gs://results/") == [naming.rejection_record("gs://results/relay", outcome.run_key)]
