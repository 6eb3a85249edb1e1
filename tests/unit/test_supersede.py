"""at_cap: supersede on the fake store, backend and clock: an object's newer generation stops the older one's
queued or running run and takes its place, once however many deliveries race; an older generation arriving after
the newer never supersedes it."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace

from relay import drain, lifecycle, naming, queue, records, supersede
from relay import policy_caps as caps
from relay.errors import ClaimHeldError
from relay.events import ObjectDelivery
from relay.outcome import Outcome
from relay.ports import RUN_SUCCEEDED, RunState
from relay.service import Relay, SubmitGate
from relay.status import read_run
from tests.fakes import FakeBackend, MemoryBlobStore
from tests.policies import policy
from tests.unit.test_chain_runs import routed_object
from tests.unit.test_queue import RESULTS, Clock, clock, launch, upload
from tests.unit.test_service import EVENT

__all__ = ["clock"]  # the fixture, shared with the queue's tests

PLATE = "lab/plate.json"


def superseding(relay: Relay, clock: Clock, cap: str = "{max_in_flight: 1, at_cap: supersede}") -> Relay:
    text = f"tenants:\n  - name: lab\n    triggers: [gs://triggers/lab/]\n    caps: {cap}\n"
    return replace(relay, policy=policy(text), clock=clock, gate=SubmitGate(clock=lambda: clock.monotonic))


def put(store: MemoryBlobStore, version: str) -> ObjectDelivery:
    """A new generation of the one plate object."""
    data = json.dumps({"pipeline": "echo", "parameters": {"message": version}}).encode()
    generation = store.write(f"gs://triggers/{PLATE}", data)
    return ObjectDelivery(EVENT, "triggers", PLATE, generation, len(data), "storage-event")


def keys(backend: FakeBackend) -> list[str]:
    return [request.run_key for request in backend.launches]


def result(relay: Relay, key: str) -> dict[str, object]:
    return records.decode(relay.store.read(naming.result_record(RESULTS, key)).data)


def test_a_newer_generation_drops_the_older_from_the_queue_and_takes_its_place(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = superseding(relay, clock)
    blocker = str(drain.deliver(relay, upload(store, 0)).run_key)
    older = drain.deliver(relay, put(store, "v1"))
    clock.advance(1)
    other = str(drain.deliver(relay, upload(store, 1)).run_key)  # queued after the older
    assert (older.outcome, launch(relay, other)["state"]) == ("queued", records.QUEUED)
    place = str(launch(relay, str(older.run_key))["place"])
    clock.advance(1)
    newer = drain.deliver(relay, put(store, "v2"))
    assert newer.outcome == "queued"
    old_key, new_key = str(older.run_key), str(newer.run_key)
    assert launch(relay, old_key)["state"] == records.CANCELLED
    assert (result(relay, old_key)["state"], result(relay, old_key)["superseded_by"]) == ("cancelled", new_key)
    # The newer waits where the older did: ahead of the trigger that came between them.
    assert launch(relay, new_key)["place"] == queue.taken_place(place, new_key)
    backend.states[str(launch(relay, blocker)["run_id"])] = RunState(RUN_SUCCEEDED)
    lifecycle.reconcile(relay)
    assert keys(backend) == [blocker, new_key]
    run = read_run(store, RESULTS, old_key)
    assert run is not None and run.state == "cancelled" and "superseded by" in run.message


def test_a_newer_generation_cancels_the_older_running_run_on_its_backend_and_launches_in_its_slot(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = superseding(relay, clock)
    first = put(store, "v1")
    older = str(drain.deliver(relay, first).run_key)
    newer = drain.deliver(relay, put(store, "v2"))
    assert newer.outcome == "launched"
    assert backend.terminated == [launch(relay, older)["run_id"]]
    assert launch(relay, older)["superseded_by"] == newer.run_key
    assert (result(relay, older)["state"], result(relay, older)["superseded_by"]) == ("cancelled", newer.run_key)
    assert keys(backend) == [older, newer.run_key]
    # The older's event delivered again: dropped before its (overwritten) object is read.
    again = drain.deliver(relay, first)
    assert (again.outcome, again.code) == ("dropped", "superseded")
    assert keys(backend) == [older, newer.run_key] and len(backend.terminated) == 1


def test_an_older_generation_after_the_newer_is_dropped_and_never_supersedes_it(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = superseding(relay, clock, "{max_in_flight: 5, at_cap: supersede}")
    first, second = put(store, "v1"), put(store, "v2")
    newer = drain.deliver(relay, second)
    late = drain.deliver(relay, first)
    assert (newer.outcome, late.outcome, late.code) == ("launched", "dropped", "superseded")
    assert keys(backend) == [newer.run_key] and backend.terminated == []
    assert f"run {newer.run_key} of a newer generation stands" in late.message
    assert drain.deliver(relay, first).outcome == "dropped"  # again: the same record, nothing new
    assert drain.deliver(relay, second).outcome == "duplicate"
    assert keys(backend) == [newer.run_key]


def test_many_deliveries_of_the_newer_at_once_supersede_the_older_once(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = superseding(relay, clock)
    older = str(drain.deliver(relay, put(store, "v1")).run_key)
    newer = put(store, "v2")
    barrier = threading.Barrier(8)
    outcomes: list[Outcome] = []

    def deliver() -> None:
        barrier.wait()
        while True:  # ClaimHeldError is a redelivery's cue: Pub/Sub would send it again
            try:
                outcomes.append(drain.deliver(relay, newer))
                return
            except ClaimHeldError:
                time.sleep(0.001)  # the holder finishes: no wait is counted on

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    new_key = next(str(o.run_key) for o in outcomes)
    assert len(outcomes) == 8 and {o.run_key for o in outcomes} == {new_key}
    assert keys(backend) == [older, new_key]
    assert result(relay, older)["superseded_by"] == new_key
    assert backend.terminated == [launch(relay, older)["run_id"]]
    assert naming.result_record(RESULTS, new_key) not in store.uris()


def test_the_policy_says_supersede_per_cap_and_the_taken_place_sorts_where_the_old_one_did():
    parsed = policy("caps: {max_in_flight: 3, at_cap: supersede}\n")
    assert parsed.caps.cap.at_cap == "supersede" and caps.supersedes_anywhere(parsed)
    assert not caps.supersedes_anywhere(policy("caps: {max_in_flight: 3}\n"))
    scopes = caps.cap_scopes(parsed, "", "echo")
    assert caps.superseding(scopes) and not caps.rejecting(scopes)
    place = queue.place_for(Clock().now, "echo-aaa", 2)
    assert queue.taken_place(place, "echo-bbb").rsplit("-", 1)[0] == place.rsplit("-", 1)[0]
    assert queue.run_key_of(queue.taken_place(place, "echo-bbb")) == "echo-bbb"
    assert supersede.pointer_uri(RESULTS, "b", "x") != supersede.pointer_uri(RESULTS, "b", "y")


def test_a_routed_objects_newer_generation_supersedes_its_running_run(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    text = """
notifications:
  - {topic: projects/proj-p/topics/assay, buckets: [lab-data]}
tenants:
  - name: assay
    topics: [projects/proj-p/topics/assay]
    caps: {pipelines: {echo: {max_in_flight: 5, at_cap: supersede}}}
    routes: [{id: csv, bucket: lab-data, pipeline: echo, parameters: {message: "{name}"}}]
"""
    relay = replace(relay, policy=policy(text), clock=clock, gate=SubmitGate(clock=lambda: clock.monotonic))
    older = str(drain.deliver(relay, routed_object(store, 42)).run_key)
    newer = drain.deliver(relay, routed_object(store, 43))
    assert newer.outcome == "launched" and backend.terminated == [launch(relay, older)["run_id"]]
    assert result(relay, older)["superseded_by"] == newer.run_key
