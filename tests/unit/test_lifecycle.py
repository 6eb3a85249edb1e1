"""Reconcile, cancel and rerun on in-memory ports: what gets recorded, and what never gets overwritten."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from relay import actions, lifecycle, naming, records
from relay import policy as rules
from relay.errors import (
    BackendBusyError,
    BackendUnavailableError,
    ClaimHeldError,
    InvalidTriggerError,
    LaunchRejectedError,
    PolicyDeniedError,
    StorageUnavailableError,
    TokenUnavailableError,
)
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
    [seen] = lifecycle.reconcile(relay).seen
    assert (seen.run_key, seen.backend, seen.action) == (key, "cancelled", "result")
    result = record(store, "result", key)
    assert result["state"] == "cancelled" and result["status"] == 499
    assert result["message"].startswith("cancelled in the KFP UI") and result["recorded_by"] == "reconcile"
    assert result["run_id"] == "run-1" and result["finished_at"] == records.timestamp(NOW)
    assert lifecycle.reconcile(relay).seen == ()  # idempotent: a run with a result is never asked about again


def test_running_is_recorded_in_the_launch_record_once(relay: Relay, store, backend: FakeBackend, notifier):
    key = launch(relay)
    backend.states["run-1"] = RunState(RUN_RUNNING, started_at=NOW)
    assert [s.action for s in lifecycle.reconcile(relay).seen] == ["running"]
    saved = record(store, "launch", key)
    assert saved["state"] == "running" and saved["run_id"] == "run-1" and saved["trigger"]["uri"]
    assert [s.action for s in lifecycle.reconcile(relay).seen] == ["none"]  # running already: nothing written
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
    [seen] = lifecycle.reconcile(replace(relay, backend=racing)).seen
    assert seen.action == "kept"
    assert record(store, "result", key) == own


def launch_many(relay: Relay, count: int) -> list[str]:
    """`count` runs, keys k00, k01, ... in order (run ids run-1, run-2, ...)."""
    return [launch(relay, f"{n}.json", f"k{n:02}") for n in range(count)]


def cursor(store: MemoryBlobStore, backend: str = "fake") -> dict[str, Any]:
    return records.decode(store.read(naming.reconcile_cursor(RESULTS, backend)).data)


def test_each_tick_resumes_past_where_the_last_stopped_and_wraps_around(relay: Relay, store, backend: FakeBackend):
    keys = launch_many(relay, 5)
    ticks = [[s.run_key for s in lifecycle.reconcile(relay, limit=2).seen] for _ in range(3)]
    assert ticks == [keys[0:2], keys[2:4], [keys[4], keys[0]]]
    assert cursor(store)["after"] == keys[0] and cursor(store)["not_before"] is None


def test_a_newer_run_that_ended_is_recorded_while_older_ones_keep_running(relay: Relay, store, backend):
    # The oldest-first tick of before asked about the same oldest `limit` runs on every tick, for ever.
    keys = launch_many(relay, 7)
    for number in range(1, 8):
        backend.states[f"run-{number}"] = RunState(RUN_RUNNING, started_at=NOW)
    backend.states["run-7"] = RunState(RUN_SUCCEEDED, "", NOW, NOW)
    bound = -(-len(keys) // 3)  # ceil(in flight / per tick)
    for _ in range(bound):
        lifecycle.reconcile(relay, limit=3)
    assert record(store, "result", keys[6])["state"] == "succeeded"
    assert [key for key in keys if has_result(store, key)] == [keys[6]]


def test_the_per_tick_setting_bounds_a_tick(relay: Relay, store, backend: FakeBackend):
    launch_many(relay, 4)
    tick = lifecycle.reconcile(replace(relay, settings=replace(relay.settings, reconcile_per_tick=3)))
    assert len(tick.seen) == 3 and tick.unfinished == 4 and backend.state_lookups == ["run-1", "run-2", "run-3"]


@pytest.mark.parametrize(
    "error",
    [
        BackendUnavailableError("503 Service Unavailable", status=503),
        BackendUnavailableError("500 internal", status=500),
        BackendBusyError("429 rate limit exceeded"),
        BackendBusyError("503 Quota exceeded"),
        BackendUnavailableError("the KFP API did not answer: timed out"),
        TokenUnavailableError("no token"),
    ],
    ids=["503", "500", "429", "quota", "no-answer", "no-token"],
)
def test_trouble_at_the_backend_ends_the_tick_and_the_next_starts_there(relay, store, backend, error):
    keys = launch_many(relay, 4)
    backend.state_errors["run-2"] = error
    tick = lifecycle.reconcile(relay)
    assert [s.run_key for s in tick.seen] == [keys[0]] and backend.state_lookups == ["run-1", "run-2"]
    assert tick.stopped.startswith(f"stopped at {keys[1]}: ") and tick.after == keys[0]
    assert cursor(store)["after"] == keys[0]
    del backend.state_errors["run-2"]
    assert [s.run_key for s in lifecycle.reconcile(relay).seen] == [keys[1], keys[2], keys[3], keys[0]]


def test_an_answer_about_one_run_is_that_runs_and_the_tick_goes_on(relay: Relay, store, backend: FakeBackend):
    keys = launch_many(relay, 3)
    backend.state_errors["run-1"] = BackendUnavailableError("403 Forbidden: not your run", status=403)
    backend.state_errors["run-2"] = LaunchRejectedError("400 INVALID_ARGUMENT: bad job name")
    tick = lifecycle.reconcile(relay)
    assert [(s.run_key, s.backend) for s in tick.seen] == [(keys[0], "error"), (keys[1], "error"), (keys[2], "pending")]
    assert tick.stopped == "" and "403 Forbidden" in tick.seen[0].message


def test_retry_after_holds_the_ticks_off_until_then_at_most_max_wait(relay: Relay, store, backend: FakeBackend):
    keys = launch_many(relay, 2)
    backend.state_errors["run-1"] = BackendUnavailableError("503", status=503, retry_after=120)
    tick = lifecycle.reconcile(relay)
    assert tick.seen == () and "no call before 2026" in tick.stopped
    assert cursor(store)["not_before"] == records.timestamp(NOW + timedelta(seconds=120))
    del backend.state_errors["run-1"]
    held = lifecycle.reconcile(replace(relay, clock=lambda: NOW + timedelta(seconds=119)))
    assert held.seen == () and "asked for a wait until" in held.stopped and backend.state_lookups == ["run-1"]
    later = replace(relay, clock=lambda: NOW + timedelta(seconds=120))
    assert [s.run_key for s in lifecycle.reconcile(later).seen] == keys
    assert cursor(store)["not_before"] is None
    backend.state_errors["run-1"] = BackendBusyError("429", retry_after=86400.0)
    lifecycle.reconcile(later)
    wait_until = NOW + timedelta(seconds=120 + lifecycle.MAX_WAIT)
    assert cursor(store)["not_before"] == records.timestamp(wait_until)


def test_two_ticks_at_once_record_each_end_once_and_keep_one_place(relay, store, backend, notifier):
    keys = launch_many(relay, 6)
    for number in range(1, 7):
        backend.states[f"run-{number}"] = RunState(RUN_FAILED, "exit 1", NOW, NOW)
    both_asking = threading.Barrier(2)

    class Overlapping(FakeBackend):
        def run_state(self, run_key: str, run_id: str) -> RunState:
            if run_id == "run-1":
                both_asking.wait(timeout=10)  # both ticks have read the same cursor before either saves
            return super().run_state(run_key, run_id)

    overlapping = replace(relay, backend=Overlapping(name="fake", states=backend.states))
    ticks: list[lifecycle.Tick] = []
    threads = [threading.Thread(target=lambda: ticks.append(lifecycle.reconcile(overlapping, limit=4))) for _ in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(tick.saved for tick in ticks) == [False, True]
    assert cursor(store)["after"] == keys[3]  # the winner's place, whole: never a mix of the two
    ended = [attributes["run_key"] for _, attributes in notifier.messages if attributes["state"] == "failed"]
    assert sorted(ended) == keys[:4]  # each end recorded (and published) once
    lifecycle.reconcile(overlapping, limit=4)
    assert all(has_result(store, key) for key in keys)


def test_a_tick_that_crashed_before_saving_its_place_still_converges(relay, store: MemoryBlobStore, backend):
    keys = launch_many(relay, 5)
    for number in range(1, 6):
        backend.states[f"run-{number}"] = RunState(RUN_SUCCEEDED, "", NOW, NOW)

    class DiesAtTheThirdResult:
        """The same store; the instance goes away as it writes the tick's third result."""

        results = 0

        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)  # read, stat, delete, list: as they are

        def write(self, uri: str, data: bytes, *, if_generation_match: int | None = None) -> int:
            if uri.endswith("/result.json"):
                self.results += 1
                if self.results == 3:
                    raise StorageUnavailableError(f"{uri}: the instance went away")
            return store.write(uri, data, if_generation_match=if_generation_match)

    with pytest.raises(StorageUnavailableError):
        lifecycle.reconcile(replace(relay, store=DiesAtTheThirdResult()), limit=4)
    assert [key for key in keys if has_result(store, key)] == keys[:2]
    assert naming.reconcile_cursor(RESULTS, "fake") not in store.uris()  # no place saved
    tick = lifecycle.reconcile(relay, limit=4)
    assert [s.run_key for s in tick.seen] == keys[2:]  # those recorded before the crash have ended
    assert all(has_result(store, key) for key in keys)


def test_runs_of_another_backend_and_live_claims_are_left_alone(relay: Relay, store, backend: FakeBackend):
    key = launch(relay)
    other = replace(relay, backend=FakeBackend(name="vertex"))
    assert lifecycle.reconcile(other).seen == ()
    claim = record(store, "launch", key) | {"state": "launching", "run_id": None}
    store.write(naming.launch_record(RESULTS, "claimed"), records.encode(claim | {"run_key": "claimed"}))
    assert [s.run_key for s in lifecycle.reconcile(relay).seen] == [key]


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
    request = actions.action_request(EVENT, "projects/proj-p/topics/assay", message)
    assert isinstance(request, actions.ActionRequest) and request.force and request.message_id == "9"
    assert actions.action_request(EVENT, "t", {"attributes": {"format": "yaml"}}) is None
    assert "one of cancel, rerun" in str(actions.action_request(EVENT, "t", {"attributes": {"action": "stop"}}))
    assert "run_key" in str(actions.action_request(EVENT, "t", {"attributes": {"action": "cancel"}}))
