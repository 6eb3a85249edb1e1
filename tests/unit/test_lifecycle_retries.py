"""A failed run started again by itself, through reconcile ticks on the fake store, backend and clock: as often as
the policy says, after its backoff, only for the failures it counts, exactly once per attempt, through the queue
under a cap."""

from __future__ import annotations

import json
import threading
from dataclasses import replace

from relay import drain, lifecycle, naming, records
from relay.events import ObjectDelivery
from relay.outcome import Outcome
from relay.ports import RUN_FAILED, RUN_SUCCEEDED, RunState
from relay.results import record_result
from relay.service import Relay, SubmitGate
from tests.fakes import FakeBackend, MemoryBlobStore
from tests.policies import policy
from tests.unit.test_queue import RESULTS, Clock, clock, launch, upload
from tests.unit.test_service import EVENT

__all__ = ["clock"]  # the fixture, shared with the queue's tests


def retrying(relay: Relay, clock: Clock, retries: str, caps: str = "") -> Relay:
    text = f"tenants:\n  - name: lab\n    triggers: [gs://triggers/lab/]\n    retries: {{echo: {retries}}}\n"
    text += f"    caps: {caps}\n" if caps else ""
    return replace(relay, policy=policy(text), clock=clock, gate=SubmitGate(clock=lambda: clock.monotonic))


def fails(relay: Relay, backend: FakeBackend, key: str, failure: str = "infrastructure") -> None:
    backend.states[str(launch(relay, key)["run_id"])] = RunState(RUN_FAILED, "node lost", failure=failure)


def attempts(backend: FakeBackend) -> list[str]:
    return [request.run_key for request in backend.launches]


def test_a_failed_run_is_retried_after_each_backoff_up_to_the_policys_count_and_then_left_failed(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = retrying(relay, clock, "{retries: 2, backoff: 30s, max_backoff: 1h}")
    first = str(drain.deliver(relay, upload(store, 1)).run_key)
    second, third = lifecycle.attempt_key(first, 2), lifecycle.attempt_key(first, 3)
    fails(relay, backend, first)
    [decided] = lifecycle.reconcile(relay).retried
    assert (decided.action, decided.next_key) == ("waiting", second)
    assert decided.retry_at == records.timestamp(clock.now.replace(second=30))
    marker = records.decode(store.read(naming.retry_record(RESULTS, first)).data)
    assert marker["retry_at"] == decided.retry_at and marker["next_attempt"] == second
    clock.advance(29)
    assert [r.action for r in lifecycle.reconcile(relay).retried] == ["waiting"]
    clock.advance(1)
    [started] = lifecycle.reconcile(relay).retried
    assert (started.action, started.next_key) == ("started", second)
    assert attempts(backend) == [first, second]
    saved = launch(relay, second)
    assert saved["trigger"]["attempt"] == 2 and saved["trigger"]["attempt_of"] == first
    assert saved["trigger"]["via"] == "retry" and saved["trigger"]["requested_by"] == "relay retries"
    assert naming.retry_record(RESULTS, first) not in store.uris()
    # The second wait is twice the first.
    fails(relay, backend, second)
    lifecycle.reconcile(relay)
    clock.advance(59)
    assert lifecycle.reconcile(relay).retried[0].action == "waiting"
    clock.advance(1)
    assert lifecycle.reconcile(relay).retried[0].next_key == third
    # Attempt 3 of a policy that allows 2 retries is the last: it stays failed.
    fails(relay, backend, third)
    [last] = lifecycle.reconcile(relay).retried
    assert (last.action, last.message) == ("none", "attempt 3 was the last (tenants.lab.retries.echo.retries: 2)")
    clock.advance(86400)
    assert lifecycle.reconcile(relay).retried == ()
    assert attempts(backend) == [first, second, third]
    assert records.decode(store.read(naming.result_record(RESULTS, third)).data)["failure"] == "infrastructure"


def test_a_refused_parameter_or_the_runs_own_failure_is_not_retried_unless_the_policy_counts_it(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = retrying(relay, clock, "{retries: 3, backoff: 1s}")
    refused = str(drain.deliver(relay, upload(store, 1)).run_key)
    fails(relay, backend, refused, "parameter")
    own = str(drain.deliver(relay, upload(store, 2)).run_key)
    # The run's exit step records its own failure: the pipeline's code said so.
    ended = {"state": "failed", "status": 500, "message": "count must be positive", "run_key": own}
    record_result(store, None, RESULTS, ended)
    tick = lifecycle.reconcile(relay)
    assert {(r.run_key, r.action) for r in tick.retried} == {(refused, "none"), (own, "none")}
    assert {r.message for r in tick.retried} == {
        f"a {kind} failure is not retried (tenants.lab.retries.echo.failures: infrastructure, preempted)"
        for kind in ("parameter", "user")
    }
    clock.advance(3600)
    lifecycle.reconcile(relay)
    assert attempts(backend) == [refused, own]
    assert not [uri for uri in store.uris(RESULTS + "/runs/") if uri.endswith("/retry.json")]
    # A policy that counts the pipeline's own failures retries the next one.
    relay = retrying(relay, clock, "{retries: 1, backoff: 1s, failures: [user]}")
    third = str(drain.deliver(relay, upload(store, 3)).run_key)
    record_result(store, None, RESULTS, {**ended, "run_key": third})
    lifecycle.reconcile(relay)
    clock.advance(1)
    assert lifecycle.reconcile(relay).retried[0].next_key == lifecycle.attempt_key(third, 2)


def test_a_succeeded_or_unretried_run_leaves_nothing_behind(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = replace(relay, clock=clock)  # no retries in the policy at all
    key = str(drain.deliver(relay, upload(store, 1)).run_key)
    fails(relay, backend, key)
    [retried] = lifecycle.reconcile(relay).retried
    assert (retried.action, retried.message) == ("none", "the policy sets no retries for this pipeline")
    assert naming.retry_record(RESULTS, key) not in store.uris()
    ok = str(drain.deliver(relay, upload(store, 2)).run_key)
    backend.states[str(launch(relay, ok)["run_id"])] = RunState(RUN_SUCCEEDED)
    assert lifecycle.reconcile(relay).retried == ()


def test_the_end_seen_twice_and_many_ticks_at_once_start_each_retry_once(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = retrying(relay, clock, "{retries: 1, backoff: 10s}")
    key = str(drain.deliver(relay, upload(store, 1)).run_key)
    fails(relay, backend, key)
    lifecycle.reconcile(relay)
    # The same end recorded again (a second reconciler, the run's exit step late): the first record and marker stand.
    again = {"state": "failed", "status": 500, "message": "late", "run_key": key}
    assert not record_result(store, None, RESULTS, again)
    clock.advance(10)
    start = threading.Barrier(8)
    ticks: list[lifecycle.Tick] = []

    def tick() -> None:
        start.wait()
        ticks.append(lifecycle.reconcile(relay))

    threads = [threading.Thread(target=tick) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert attempts(backend) == [key, lifecycle.attempt_key(key, 2)]
    started = [r for t in ticks for r in t.retried if r.action == "started"]
    assert len(started) >= 1 and {r.next_key for r in started} == {lifecycle.attempt_key(key, 2)}
    assert lifecycle.reconcile(relay).retried == ()
    # A rerun by hand after the retry started the next attempt, not the same one again.
    fails(relay, backend, lifecycle.attempt_key(key, 2))
    lifecycle.reconcile(relay)
    assert lifecycle.rerun(relay, key).run_key == lifecycle.attempt_key(key, 3)


def test_a_retry_under_a_cap_waits_in_the_queue_and_launches_when_a_slot_frees(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = retrying(relay, clock, "{retries: 1, backoff: 5s}", caps="{max_in_flight: 1}")
    first = str(drain.deliver(relay, upload(store, 1)).run_key)
    fails(relay, backend, first)
    lifecycle.reconcile(relay)
    other = str(drain.deliver(relay, upload(store, 2)).run_key)  # takes the one slot meanwhile
    clock.advance(5)
    [queued] = lifecycle.reconcile(relay).retried
    assert (queued.action, queued.next_key) == ("queued", lifecycle.attempt_key(first, 2))
    assert launch(relay, queued.next_key)["state"] == "queued"
    assert naming.retry_record(RESULTS, first) not in store.uris()  # the queue holds it now
    backend.states[str(launch(relay, other)["run_id"])] = RunState(RUN_SUCCEEDED)
    tick = lifecycle.reconcile(relay)
    assert tick.drained is not None and tick.drained.launched == (queued.next_key,)
    assert attempts(backend) == [first, other, queued.next_key]


def test_a_trigger_asks_for_its_own_retries_within_the_policys_ceiling_and_its_attempts_keep_them(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = retrying(relay, clock, "{retries: 0, max_retries: 2, backoff: 1s}")

    def deliver(n: int, retries: int) -> Outcome:
        document = {"pipeline": "echo", "parameters": {"message": f"plate {n}"}, "retries": retries}
        data = json.dumps(document).encode()
        generation = store.write(f"gs://triggers/lab/t{n}.json", data)
        return drain.deliver(
            relay, ObjectDelivery(EVENT, "triggers", f"lab/t{n}.json", generation, len(data), "storage-event")
        )

    refused = deliver(1, 3)
    assert refused.outcome == "rejected"
    rejection = records.decode(store.read(naming.rejection_record(RESULTS, str(refused.run_key))).data)
    assert rejection["error"]["problems"] == [
        {"field": "retries", "expected": "at most 2 (tenants.lab.retries.echo.max_retries)", "found": "3"}
    ]
    key = str(deliver(2, 1).run_key)
    assert launch(relay, key)["retries"] == 1
    fails(relay, backend, key)
    lifecycle.reconcile(relay)
    clock.advance(1)
    [started] = lifecycle.reconcile(relay).retried
    assert started.action == "started" and launch(relay, started.next_key)["retries"] == 1
    fails(relay, backend, started.next_key)
    [last] = lifecycle.reconcile(relay).retried
    assert (last.action, last.message) == ("none", "attempt 2 was the last (the trigger's retries: 1)")
    # Without its own count, a trigger gets the policy's: none.
    plain = str(drain.deliver(relay, upload(store, 3)).run_key)
    fails(relay, backend, plain)
    assert lifecycle.reconcile(relay).retried[0].message == "the policy sets no retries for this pipeline"
