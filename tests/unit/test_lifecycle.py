"""Reconcile, cancel and rerun on in-memory ports: what gets recorded, and what never gets overwritten."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from typing import Any

import pytest

from relay import lifecycle, naming, records
from relay import policy as rules
from relay.errors import ClaimHeldError, InvalidTriggerError, PolicyDeniedError
from relay.events import EventInfo, ObjectDelivery
from relay.ports import RUN_FAILED, RUN_RUNNING, RUN_SUCCEEDED, RunState
from relay.service import Relay, handle_delivery
from tests.conftest import NOW
from tests.fakes import FakeBackend, MemoryBlobStore
from tests.policies import policy
from tests.servers.vertex import JOB_ID as VERTEX_JOB_ID

RESULTS = "gs://results/relay"
EVENT = EventInfo(id="evt-1", type="google.cloud.storage.object.v1.finalized", source="s", time=NOW)
POLICY = policy(
    """
tenants:
  - name: assay
    triggers: [gs://triggers/assay/]
    topics: [projects/proj-p/topics/assay]
  - name: imaging
    triggers: [gs://triggers/imaging/]
    topics: [projects/proj-p/topics/imaging]
"""
)


def launch(relay: Relay, name: str = "t.json", run_key: str | None = "nightly", **parameters: Any) -> str:
    document: dict[str, Any] = {"pipeline": "echo", "parameters": {"message": "hi", **parameters}}
    if run_key:
        document["run_key"] = run_key
    data = json.dumps(document).encode()
    generation = relay.store.write(f"gs://triggers/{name}", data)
    outcome = handle_delivery(relay, ObjectDelivery(EVENT, "triggers", name, generation, len(data), "storage-event"))
    assert outcome.outcome == "launched", outcome.message
    assert outcome.run_key is not None
    return outcome.run_key


def record(store: MemoryBlobStore, kind: str, run_key: str) -> dict[str, Any]:
    uri = naming.launch_record(RESULTS, run_key) if kind == "launch" else naming.result_record(RESULTS, run_key)
    return records.decode(store.read(uri).data)


def has_result(store: MemoryBlobStore, run_key: str) -> bool:
    return naming.result_record(RESULTS, run_key) in store.uris()


# --- reconcile -------------------------------------------------------------------------------------------------


def test_a_run_cancelled_on_the_backend_ends_cancelled_after_one_tick(relay: Relay, store, backend: FakeBackend):
    key = launch(relay)
    backend.states["run-1"] = RunState("cancelled", "cancelled in the KFP UI", NOW, NOW)
    [seen] = lifecycle.reconcile(relay)
    assert (seen.run_key, seen.backend, seen.action) == (key, "cancelled", "result")
    result = record(store, "result", key)
    assert result["state"] == "cancelled" and result["status"] == 499
    assert result["message"].startswith("cancelled in the KFP UI") and result["recorded_by"] == "reconcile"
    assert result["run_id"] == "run-1" and result["finished_at"] == records.timestamp(NOW)
    assert lifecycle.reconcile(relay) == []  # idempotent: a run with a result is never asked about again


def test_running_is_recorded_in_the_launch_record_once(relay: Relay, store, backend: FakeBackend, notifier):
    key = launch(relay)
    backend.states["run-1"] = RunState(RUN_RUNNING, started_at=NOW)
    assert [s.action for s in lifecycle.reconcile(relay)] == ["running"]
    saved = record(store, "launch", key)
    assert saved["state"] == "running" and saved["run_id"] == "run-1" and saved["trigger"]["uri"]
    assert [s.action for s in lifecycle.reconcile(relay)] == ["none"]  # running already: nothing written
    assert notifier.states == ["launched", "running"]
    # A later duplicate delivery of the trigger is still a duplicate, not a new claim.
    data = relay.store.read("gs://triggers/t.json")
    again = handle_delivery(relay, ObjectDelivery(EVENT, "triggers", "t.json", data.generation, 1, "storage-event"))
    assert again.outcome == "duplicate"


def test_failed_and_succeeded_runs_get_results_with_the_backends_error_line(relay: Relay, store, backend):
    failed, succeeded = launch(relay, "a.json", "a"), launch(relay, "b.json", "b")
    backend.states["run-1"] = RunState(RUN_FAILED, "ImagePullBackOff: relay/steps:latest", NOW, NOW)
    backend.states["run-2"] = RunState(RUN_SUCCEEDED, "", NOW, NOW)
    lifecycle.reconcile(relay)
    assert record(store, "result", failed)["state"] == "failed"
    assert record(store, "result", failed)["status"] == 500
    assert "ImagePullBackOff" in record(store, "result", failed)["message"]
    assert record(store, "result", succeeded)["state"] == "succeeded"


def test_the_runs_own_result_written_during_the_tick_wins(relay: Relay, store: MemoryBlobStore, backend):
    key = launch(relay)
    backend.states["run-1"] = RunState(RUN_FAILED, "exit handler ran", NOW, NOW)
    own = {"state": "failed", "status": 424, "message": "secret kaggle-key is missing", "run_key": key}

    class RunWritesFirst(FakeBackend):
        def run_state(self, run_key: str, run_id: str) -> RunState:
            # The run's exit handler lands its result between the tick's listing and its write.
            store.write(naming.result_record(RESULTS, run_key), records.encode(own), if_generation_match=0)
            return super().run_state(run_key, run_id)

    racing = RunWritesFirst(launches=backend.launches, states=backend.states)
    [seen] = lifecycle.reconcile(replace(relay, backend=racing))
    assert seen.action == "kept"
    assert record(store, "result", key) == own


def test_a_tick_is_bounded_and_takes_the_oldest_first(relay: Relay, store, backend: FakeBackend):
    keys = [launch(replace(relay, clock=lambda n=n: NOW.replace(minute=n)), f"{n}.json", f"k{n}") for n in (5, 1, 3)]
    seen = lifecycle.reconcile(relay, limit=2)
    assert [s.run_key for s in seen] == [keys[1], keys[2]]  # minute 1, then minute 3; minute 5 waits


def test_runs_of_another_backend_and_live_claims_are_left_alone(relay: Relay, store, backend: FakeBackend):
    key = launch(relay)
    other = replace(relay, backend=FakeBackend(name="vertex"))
    assert lifecycle.reconcile(other) == []
    claim = record(store, "launch", key) | {"state": "launching", "run_id": None}
    store.write(naming.launch_record(RESULTS, "claimed"), records.encode(claim | {"run_key": "claimed"}))
    assert [s.run_key for s in lifecycle.reconcile(relay)] == [key]


# --- cancel ----------------------------------------------------------------------------------------------------


def test_cancel_terminates_and_records_cancelled(relay: Relay, store, backend: FakeBackend):
    key = launch(relay)
    answer = lifecycle.cancel(relay, key)
    assert answer.changed and answer.state == "cancelled" and backend.terminated == ["run-1"]
    result = record(store, "result", key)
    assert result["state"] == "cancelled" and result["message"] == "cancelled by relay cancel"
    again = lifecycle.cancel(relay, key)
    assert not again.changed and again.message == f"{key} already cancelled; nothing changed"
    assert backend.terminated == ["run-1"]


def test_cancelling_a_finished_run_changes_nothing(relay: Relay, store, backend: FakeBackend):
    key = launch(relay)
    backend.states["run-1"] = RunState(RUN_SUCCEEDED, "", NOW, NOW)
    answer = lifecycle.cancel(relay, key)
    assert not answer.changed and "already succeeded" in answer.message
    assert backend.terminated == [] and not has_result(store, key)


def test_cancel_of_a_run_being_launched_waits(relay: Relay, store):
    key = launch(relay)
    claim = record(store, "launch", key) | {"state": "launching", "run_id": None}
    store.write(naming.launch_record(RESULTS, key), records.encode(claim))
    with pytest.raises(ClaimHeldError):
        lifecycle.cancel(relay, key)


def test_a_topic_may_cancel_only_its_own_tenants_runs(relay: Relay, store, backend: FakeBackend):
    governed = replace(relay, policy=POLICY)
    key = launch(governed, "assay/t.json", "nightly")
    assert key == "assay--nightly"
    imaging = lifecycle.scope_for_topic(POLICY, "projects/proj-p/topics/imaging")
    for given in ("nightly", "assay--nightly"):
        with pytest.raises(lifecycle.LifecycleError, match="no run"):
            lifecycle.cancel(governed, given, scope=imaging)
    with pytest.raises(PolicyDeniedError):
        lifecycle.scope_for_topic(POLICY, "projects/proj-p/topics/elsewhere")
    assert backend.terminated == []
    assay = lifecycle.scope_for_topic(POLICY, "projects/proj-p/topics/assay")
    assert lifecycle.cancel(governed, "nightly", scope=assay).changed  # scoped like the trigger's own key


def test_a_derived_key_is_accepted_whole_from_its_own_tenant(relay: Relay, backend: FakeBackend):
    governed = replace(relay, policy=POLICY)
    key = launch(governed, "assay/t.json", run_key=None)
    assert key.startswith("echo-")
    assay = lifecycle.scope_for_topic(POLICY, "projects/proj-p/topics/assay")
    assert lifecycle.cancel(governed, key, scope=assay).changed


# --- rerun -----------------------------------------------------------------------------------------------------


def fail(store: MemoryBlobStore, key: str, state: str = "failed") -> None:
    ended = {"state": state, "status": 500, "message": "boom", "run_key": key}
    store.write(naming.result_record(RESULTS, key), records.encode(ended))


def test_rerun_starts_a_linked_attempt_with_the_same_parameters(relay: Relay, store, backend: FakeBackend):
    key = launch(relay, count=3)
    fail(store, key)
    answer = lifecycle.rerun(relay, key)
    assert answer.changed and answer.run_key == f"{key}-attempt-2"
    first, second = backend.launches
    assert second.run_key == f"{key}-attempt-2"
    assert second.parameters == {**first.parameters, "run_key": f"{key}-attempt-2"}
    saved = record(store, "launch", answer.run_key)
    assert saved["state"] == "launched" and saved["pipeline"] == "echo"
    assert saved["trigger"]["attempt"] == 2 and saved["trigger"]["attempt_of"] == key
    assert saved["trigger"]["previous_attempt"] == key and saved["trigger"]["via"] == "rerun"
    assert saved["trigger"]["uri"] == "gs://triggers/t.json"
    # The next rerun follows the chain: attempt 3 after attempt 2 failed, whichever attempt is named.
    with pytest.raises(lifecycle.LifecycleError, match="attempt-2 is launched"):
        lifecycle.rerun(relay, key)
    fail(store, answer.run_key, "cancelled")
    third = lifecycle.rerun(relay, key)
    assert third.run_key == f"{key}-attempt-3"
    assert record(store, "launch", third.run_key)["trigger"]["previous_attempt"] == f"{key}-attempt-2"


def test_rerun_of_a_succeeded_run_needs_force(relay: Relay, store, backend: FakeBackend):
    key = launch(relay)
    fail(store, key, "succeeded")
    with pytest.raises(lifecycle.LifecycleError, match="succeeded; ask again with the attribute force=true"):
        lifecycle.rerun(relay, key)
    assert lifecycle.rerun(relay, key, force=True).run_key == f"{key}-attempt-2"


def test_two_reruns_at_once_start_one_attempt(relay: Relay, store, backend: FakeBackend):
    key = launch(relay)
    fail(store, key)
    answers: list[lifecycle.Answer] = []
    refusals: list[str] = []
    start = threading.Barrier(8)

    def rerun() -> None:
        start.wait()
        try:
            answers.append(lifecycle.rerun(relay, key))
        except lifecycle.LifecycleError as refused:  # came after attempt 2 launched: it is still going
            refusals.append(str(refused))

    threads = [threading.Thread(target=rerun) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(backend.launches) == 2  # the first run and one attempt
    assert sum(answer.changed for answer in answers) == 1
    assert {answer.run_key for answer in answers} == {f"{key}-attempt-2"}
    assert all(refusal.startswith(f"{key}-attempt-2 is launched") for refusal in refusals)


def test_a_redelivered_rerun_message_starts_nothing_more(relay: Relay, store, backend: FakeBackend):
    key = launch(relay)
    fail(store, key)
    assert lifecycle.rerun(relay, key, request_id="msg-7").changed
    again = lifecycle.rerun(relay, key, request_id="msg-7")
    assert not again.changed and "by this request already" in again.message
    assert len(backend.launches) == 2


def test_rerun_applies_the_policy_again(relay: Relay, store, backend: FakeBackend):
    governed = replace(relay, policy=POLICY)
    key = launch(governed, "assay/t.json", "nightly")
    fail(store, key)
    narrowed = replace(governed, policy=policy("tenants:\n  - name: assay\n    pipelines: [push]\n"))
    with pytest.raises(InvalidTriggerError) as refused:
        lifecycle.rerun(narrowed, key)
    assert refused.value.problems[0].field == "pipeline"
    assert len(backend.launches) == 1


def test_a_rerun_is_labelled_as_one_and_keeps_the_triggers_own_labels(relay: Relay, store, backend: FakeBackend):
    governed = replace(relay, policy=POLICY)
    key = launch(governed, "assay/t.json", "nightly")
    launch_uri = naming.launch_record(RESULTS, key)
    store.write(launch_uri, records.encode({**record(store, "launch", key), "labels": {"team": "assay"}}))
    fail(store, key)
    lifecycle.rerun(governed, key)
    first, second = backend.launches
    assert first.labels == {"relay-tenant": "assay", "relay-pipeline": "echo", "relay-trigger": "object"}
    assert second.labels == {
        "team": "assay",
        "relay-tenant": "assay",
        "relay-pipeline": "echo",
        "relay-trigger": "rerun",
    }
    assert record(store, "launch", f"{key}-attempt-2")["labels"] == {"team": "assay"}  # the trigger's own, as asked


def test_a_rerun_checks_recorded_labels_as_a_trigger_s(relay: Relay, store, backend: FakeBackend):
    # A launch record from before the reserved keys and Relay's three: its labels would now break the run's 64.
    key = launch(relay)
    crowded = {f"l{n}": "" for n in range(62)} | {"vertex-ai-pipelines-run-billing-id": "mine"}
    store.write(naming.launch_record(RESULTS, key), records.encode({**record(store, "launch", key), "labels": crowded}))
    fail(store, key)
    with pytest.raises(InvalidTriggerError) as refused:
        lifecycle.rerun(relay, key)
    assert [p.field for p in refused.value.problems] == ["labels", "labels.vertex-ai-pipelines-run-billing-id"]
    assert len(backend.launches) == 1


CLOUD = rules.Context(local=False, protected=("gs://catalog",))


def test_the_longest_key_a_tenant_may_choose_and_its_attempts_are_ids_vertex_takes():
    # The longest tenant name the policy takes, and the longest key the trigger rules then let it choose.
    tenant = rules.Tenant("t" + "0" * 19)
    assert rules.TENANT_NAME.fullmatch(tenant.name) and not rules.TENANT_NAME.fullmatch(tenant.name + "0")
    longest = max(n for n in range(1, 200) if not rules.check_trigger(POLICY, tenant, "echo", {}, "k" * n, CLOUD))
    first = rules.scoped_run_key(tenant, "k" * longest)
    derived = naming.derive_run_key("p" * 63, "gs://triggers/t.json#1")  # the longest pipeline name's
    for key in (first, derived):
        assert VERTEX_JOB_ID.match(key), f"{len(key)} characters"
        for number in (2, 9, 10, 99, 100, 10_000):
            attempt = lifecycle.attempt_key(key, number)
            assert VERTEX_JOB_ID.match(attempt) and naming.RUN_KEY.match(attempt), f"{len(attempt)} characters"


def test_attempt_keys_stay_within_the_rule():
    long = "a" * 127
    key = lifecycle.attempt_key(long, 12)
    assert len(key) == 127 and naming.RUN_KEY.match(key) and key.endswith("-attempt-12")
    assert lifecycle.attempt_key("a" * 126 + "b", 12) != key


# --- actions on the topic --------------------------------------------------------------------------------------


def test_action_messages_are_recognised_and_checked():
    message = {"messageId": "9", "attributes": {"action": "rerun", "run_key": "nightly", "force": "true"}}
    request = lifecycle.action_request(EVENT, "projects/proj-p/topics/assay", message)
    assert isinstance(request, lifecycle.ActionRequest) and request.force and request.message_id == "9"
    assert lifecycle.action_request(EVENT, "t", {"attributes": {"format": "yaml"}}) is None
    assert "one of cancel, rerun" in str(lifecycle.action_request(EVENT, "t", {"attributes": {"action": "stop"}}))
    assert "run_key" in str(lifecycle.action_request(EVENT, "t", {"attributes": {"action": "cancel"}}))
