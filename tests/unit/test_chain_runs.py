"""Chains carried out on the fake store, backend and clock: checked when the trigger arrives, the next run started
once when the first's end is seen (by ticks, by several threads at once, by the run and by reconcile), refused
with a record naming why, bounded by the policy's ceiling, and through the caps' queue."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from typing import Any

from relay import chain_runs, drain, lifecycle, naming, records
from relay.events import Message, ObjectDelivery
from relay.ports import RUN_SUCCEEDED, RunState
from relay.results import record_result
from relay.service import Relay, SubmitGate
from relay.status import read_run
from tests.fakes import FakeBackend, MemoryBlobStore
from tests.policies import policy
from tests.unit.test_queue import RESULTS, Clock, clock, launch
from tests.unit.test_service import EVENT

__all__ = ["clock"]  # the fixture, shared with the queue's tests

NEXT = {"pipeline": "report", "parameters": {"message": "{outputs.Output}", "count": "{metrics.seconds}"}}


def chaining(relay: Relay, clock: Clock, extra: str = "") -> Relay:
    """A tenant that may run echo and report (a copy of echo in the catalog), with `extra` policy lines."""
    relay.store.write("gs://catalog/report.yaml", relay.store.read("gs://catalog/echo.yaml").data)
    text = "tenants:\n  - name: lab\n    triggers: [gs://triggers/lab/]\n    pipelines: [echo, report]\n" + extra
    return replace(relay, policy=policy(text), clock=clock, gate=SubmitGate(clock=lambda: clock.monotonic))


def upload(store: MemoryBlobStore, n: int, chain: list[dict[str, Any]]) -> ObjectDelivery:
    document = {"pipeline": "echo", "parameters": {"message": f"plate {n}"}, **({"chain": chain} if chain else {})}
    data = json.dumps(document).encode()
    generation = store.write(f"gs://triggers/lab/t{n}.json", data)
    return ObjectDelivery(EVENT, "triggers", f"lab/t{n}.json", generation, len(data), "storage-event")


def succeeds(relay: Relay, key: str, outputs: dict[str, Any] | None = None) -> None:
    """The run writes its own result, as a pipeline's exit step does."""
    ended = records.result_record(
        run_key=key,
        pipeline=str(launch(relay, key)["pipeline"]),
        backend="fake",
        run_id=str(launch(relay, key)["run_id"]),
        succeeded=True,
        message="done",
        outputs={"Output": f"{key} done"} if outputs is None else outputs,
        metrics={"seconds": 2},
        started=relay.clock(),
        finished=relay.clock(),
    )
    record_result(relay.store, None, RESULTS, ended)


def keys(backend: FakeBackend) -> list[str]:
    return [request.run_key for request in backend.launches]


def rejection(relay: Relay, key: str) -> dict[str, Any]:
    return records.decode(relay.store.read(naming.rejection_record(RESULTS, key)).data)


def test_a_succeeded_run_starts_the_next_once_with_parameters_from_its_outputs_and_both_records_link(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = chaining(relay, clock)
    first = str(drain.deliver(relay, upload(store, 1, [NEXT])).run_key)
    assert launch(relay, first)["chain"] == [{"pipeline": "report", "on": "succeeded", "after": "", **NEXT}]
    succeeds(relay, first)
    assert naming.chain_record(RESULTS, first) in store.uris()
    [followed] = lifecycle.reconcile(relay).followed
    second = f"{first}-then-1"
    assert (followed.action, [(link.run_key, link.outcome) for link in followed.links]) == (
        "chained",
        [(second, "launched")],
    )
    [request] = [r for r in backend.launches if r.run_key == second]
    assert (request.pipeline, request.parameters["message"], request.parameters["count"]) == (
        "report",
        f"{first} done",
        2,
    )
    # Seen again and again: by the run's result written twice, by later ticks, by a direct look.
    succeeds(relay, first)
    lifecycle.reconcile(relay)
    assert chain_runs.follow(relay, first) is None
    assert keys(backend) == [first, second]
    # The first says what it chained to, the next what it came from; `relay status` shows both.
    before, after = read_run(store, RESULTS, first), read_run(store, RESULTS, second)
    assert before is not None and after is not None
    assert before.chained_to == [f"{second} (launched)"] and before.chain is None
    assert after.chained_from == first
    assert after.launch is not None and after.launch["trigger"]["chain_of"] == first
    assert after.launch["tenant"] == "lab" and after.launch["trigger"]["via"] == "chain"
    # A step without `after` follows the first run only: the second's end starts nothing.
    succeeds(relay, second)
    assert naming.chain_record(RESULTS, second) not in store.uris()
    assert lifecycle.reconcile(relay).followed == () and keys(backend) == [first, second]


def test_a_chain_the_catalog_or_policy_cannot_hold_is_rejected_when_the_trigger_arrives(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = chaining_only_echo(chaining(relay, clock), clock)
    chain = [
        {"pipeline": "report", "parameters": {"message": "{outputs.Nope}", "colour": "red"}},
        {"pipeline": "gone", "after": "elsewhere", "parameters": {"message": "{parameters.size}"}},
    ]
    outcome = drain.deliver(relay, upload(store, 1, chain))
    assert (outcome.outcome, outcome.code) == ("rejected", "invalid_chain")
    problems = [
        f"{p['field']}: expected {p['expected']}, found {p['found']}" for p in _problems(relay, outcome.run_key)
    ]
    assert problems == [
        "chain[0].pipeline: expected a pipeline tenants.lab.pipelines lists (echo), found 'report'",
        "chain[0].parameters.message: expected an output echo declares (Output), found {outputs.Nope}",
        "chain[0].parameters.colour: expected a parameter of report (count, enabled, fail, items, message, options, "
        "ratio), found an unknown name",
        "chain[1].after: expected the trigger's pipeline or one the chain starts, found 'elsewhere'",
        "chain[1].pipeline: expected a pipeline tenants.lab.pipelines lists (echo), found 'gone'",
        "chain[1].after: expected a pipeline in the catalog, found 'elsewhere'",
        "chain[1].pipeline: expected a pipeline in the catalog, found 'gone'",
    ]
    assert keys(backend) == []


def chaining_only_echo(relay: Relay, clock: Clock) -> Relay:
    text = "tenants:\n  - name: lab\n    triggers: [gs://triggers/lab/]\n    pipelines: [echo]\n"
    return replace(relay, policy=policy(text))


def _problems(relay: Relay, key: str | None) -> list[dict[str, str]]:
    return rejection(relay, str(key))["error"]["problems"]


def test_an_output_missing_at_the_end_is_a_recorded_chain_failed_naming_it_never_a_silent_drop(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = chaining(relay, clock)
    first = str(drain.deliver(relay, upload(store, 1, [NEXT])).run_key)
    succeeds(relay, first, outputs={})  # no `Output`
    [followed] = lifecycle.reconcile(relay).followed
    second = f"{first}-then-1"
    assert [(link.run_key, link.outcome) for link in followed.links] == [(second, "rejected")]
    refused = rejection(relay, second)
    assert refused["error"]["code"] == "chain_failed" and refused["pipeline"] == "report"
    assert [p["field"] for p in refused["error"]["problems"]] == ["chain[0].parameters.message"]
    assert refused["error"]["problems"][0]["found"] == f"none in {first}'s result"
    assert keys(backend) == [first]
    run = read_run(store, RESULTS, first)
    assert run is not None and run.chained_to == [f"{second} (rejected)"]
    # A run that ended without a result of its own (recorded by reconcile) has no outputs: the same record.
    other = str(drain.deliver(relay, upload(store, 2, [NEXT])).run_key)
    backend.states[str(launch(relay, other)["run_id"])] = RunState(RUN_SUCCEEDED)
    lifecycle.reconcile(relay)
    assert rejection(relay, f"{other}-then-1")["error"]["code"] == "chain_failed"


def test_the_policy_is_checked_again_when_the_next_run_launches(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = chaining(relay, clock)
    first = str(drain.deliver(relay, upload(store, 1, [NEXT])).run_key)
    succeeds(relay, first)
    relay = chaining_only_echo(relay, clock)  # report is no longer the tenant's
    lifecycle.reconcile(relay)
    refused = rejection(relay, f"{first}-then-1")
    assert refused["error"]["code"] == "chain_failed"
    assert [p["field"] for p in refused["error"]["problems"]] == ["pipeline"]
    assert keys(backend) == [first]


def test_a_cycle_stops_at_the_policys_ceiling_with_a_record_naming_it(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = chaining(relay, clock, "    max_chain: 3\n")
    again = {"pipeline": "echo", "after": "echo", "parameters": {"message": "again after {run_key}"}}
    key = str(drain.deliver(relay, upload(store, 1, [again])).run_key)
    for _ in range(10):
        if naming.launch_record(RESULTS, key) not in store.uris():
            break
        succeeds(relay, key)
        lifecycle.reconcile(relay)
        key = f"{key}-then-1"
    assert len(keys(backend)) == 4  # the first and three after it
    refused = rejection(relay, key)
    assert refused["error"]["code"] == "chain_failed"
    assert refused["error"]["problems"][0]["expected"] == (
        "at most 3 runs after the chain's first (tenants.lab.max_chain)"
    )
    last = read_run(store, RESULTS, keys(backend)[-1])
    assert last is not None and last.launch is not None and last.launch["trigger"]["chain_depth"] == 3


def test_a_failed_step_follows_a_failed_end_only_and_waits_for_the_retry_decision(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = chaining(relay, clock)
    on_failure = {"pipeline": "report", "on": "failed", "parameters": {"message": "{run_key} failed"}}
    ok = str(drain.deliver(relay, upload(store, 1, [on_failure])).run_key)
    succeeds(relay, ok)
    assert naming.chain_record(RESULTS, ok) not in store.uris()  # no step follows a success
    bad = str(drain.deliver(relay, upload(store, 2, [on_failure])).run_key)
    backend.states[str(launch(relay, bad)["run_id"])] = RunState("failed", "boom", failure="user")
    tick = lifecycle.reconcile(relay)
    # The retry is decided in the same tick (none: the policy sets none), then the chain goes on.
    assert [r.action for r in tick.retried] == ["none"]
    assert [(f.run_key, f.action) for f in tick.followed] == [(bad, "chained")]
    [request] = [r for r in backend.launches if r.run_key == f"{bad}-then-1"]
    assert request.parameters["message"] == f"{bad} failed"


def test_several_threads_seeing_the_same_end_start_one_next_run(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = chaining(relay, clock)
    first = str(drain.deliver(relay, upload(store, 1, [NEXT, {**NEXT, "parameters": {"message": "b"}}])).run_key)
    succeeds(relay, first)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def look(n: int) -> None:
        barrier.wait()
        try:
            for _ in range(3):
                if n % 2:
                    lifecycle.reconcile(relay)
                else:
                    chain_runs.follow(relay, first)
                succeeds(relay, first)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=look, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lifecycle.reconcile(relay)  # a look held by another's claim settles on the next tick
    assert errors == []
    assert sorted(keys(backend)) == sorted([first, f"{first}-then-1", f"{first}-then-2"])
    run = read_run(store, RESULTS, first)
    assert run is not None and run.chain is None and len(run.chained_to) == 2


def test_a_chained_run_goes_through_the_caps_queue(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = chaining(relay, clock, "    caps: {max_in_flight: 1}\n")
    first = str(drain.deliver(relay, upload(store, 1, [NEXT])).run_key)
    waiting = str(drain.deliver(relay, upload(store, 2, [])).run_key)
    assert launch(relay, waiting)["state"] == records.QUEUED
    succeeds(relay, first)  # its slot is free: the waiting trigger is first in line, the chained run next
    [followed] = lifecycle.reconcile(relay).followed
    assert [link.outcome for link in followed.links] == ["queued"]
    assert keys(backend) == [first, waiting]
    succeeds(relay, waiting)
    lifecycle.reconcile(relay)
    assert keys(backend) == [first, waiting, f"{first}-then-1"]


def test_a_routes_chain_follows_the_routed_run_and_an_ended_run_is_never_superseded(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    text = """
notifications:
  - {topic: projects/proj-p/topics/assay, buckets: [lab-data]}
tenants:
  - name: assay
    topics: [projects/proj-p/topics/assay]
    caps: {max_in_flight: 5, at_cap: supersede}
    routes:
      - id: csv
        bucket: lab-data
        pipeline: echo
        parameters: {message: "{name}"}
        chain: [{pipeline: echo, parameters: {message: "after {parameters.message}"}}]
"""
    relay = replace(relay, policy=policy(text), clock=clock, gate=SubmitGate(clock=lambda: clock.monotonic))
    first = routed_object(store, 42)
    key = str(drain.deliver(relay, first).run_key)
    succeeds(relay, key)
    lifecycle.reconcile(relay)
    [request] = [r for r in backend.launches if r.run_key == f"{key}-then-1"]
    assert request.parameters["message"] == "after plate.csv"
    # A newer generation of the object under at_cap: supersede: the ended run (and its chain) stay as they are.
    newer = str(drain.deliver(relay, routed_object(store, 43)).run_key)
    assert keys(backend) == [key, f"{key}-then-1", newer] and backend.terminated == []


def routed_object(store: MemoryBlobStore, generation: int) -> ObjectDelivery:
    store.put("gs://lab-data/plate.csv", b"a,b\n", content_type="text/csv", metadata={}, generation=generation)
    origin = Message("projects/proj-p/topics/assay", f"m-{generation}")
    return ObjectDelivery(EVENT, "lab-data", "plate.csv", generation, None, "storage-notification", origin)
