"""Caps and the queue, through the launch use-case on the fake store and backend: never more in flight than a cap,
each run launched exactly once and in arrival order as runs end, a refusal for load queued and drained when the
backend's wait is over, cancel and pause of queued runs, drains at once, and crashes between dequeue and launch."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from relay import drain, lifecycle, naming, queue, records
from relay.catalog import Catalog
from relay.errors import BackendBusyError, BackendUnavailableError
from relay.events import ObjectDelivery
from relay.ports import RUN_FAILED, RUN_SUCCEEDED, Blob, RunState
from relay.results import record_result
from relay.service import CAREFUL_FOR, Relay, SubmitGate, handle_delivery
from tests.conftest import NOW
from tests.fakes import FakeBackend, MemoryBlobStore
from tests.policies import policy
from tests.unit.test_service import EVENT

RESULTS = "gs://results/relay"


def capped(text: str) -> str:
    return f"tenants:\n  - name: lab\n    triggers: [gs://triggers/lab/]\n    caps: {text}\n"


class Clock:
    """The time the Relay and its gate see: moved by the test, or by the Relay's sleeps (each kept), never by
    waiting."""

    def __init__(self) -> None:
        self.now = NOW
        self.monotonic = 0.0
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.monotonic += seconds

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def timed(relay: Relay, clock: Clock) -> Relay:
    """`relay` on the test's clock: its records' times, its gate's and its waits."""
    return replace(relay, clock=clock, gate=SubmitGate(clock=lambda: clock.monotonic), sleep=clock.sleep)


def relay_with(relay: Relay, caps: str, clock: Clock, store: MemoryBlobStore | None = None) -> Relay:
    relay = replace(timed(relay, clock), policy=policy(capped(caps)))
    if store is not None:
        relay = replace(relay, store=store, catalog=Catalog(store, relay.settings.catalog_uri))
    return relay


def upload(store: MemoryBlobStore, n: int) -> ObjectDelivery:
    data = json.dumps({"pipeline": "echo", "parameters": {"message": f"plate {n}"}}).encode()
    generation = store.write(f"gs://triggers/lab/t{n}.json", data)
    return ObjectDelivery(EVENT, "triggers", f"lab/t{n}.json", generation, len(data), "storage-event")


def launch(relay: Relay, key: str) -> dict[str, object]:
    return records.decode(relay.store.read(naming.launch_record(RESULTS, key)).data)


def in_flight(relay: Relay) -> list[str]:
    """Runs launched on the backend that have no result yet."""
    listed = set(relay.store.list(RESULTS + "/runs/"))
    keys = {uri.split("/")[-2] for uri in listed if uri.endswith("/launch.json")}
    return sorted(
        key for key in keys if launch(relay, key).get("run_id") and naming.result_record(RESULTS, key) not in listed
    )


def end(relay: Relay, backend: FakeBackend, key: str) -> None:
    """The run ends on the backend; the next tick records it."""
    backend.states[str(launch(relay, key)["run_id"])] = RunState(RUN_SUCCEEDED, "done")


def slots(store: MemoryBlobStore) -> list[str]:
    return store.uris(RESULTS + "/queue/slots/")


def test_a_cap_of_two_keeps_two_in_flight_and_launches_ten_each_once_in_arrival_order_as_runs_end(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = relay_with(relay, "{max_in_flight: 2}", clock)
    outcomes = [drain.deliver(relay, upload(store, n)) for n in range(10)]
    keys = [str(o.run_key) for o in outcomes]
    assert [o.outcome for o in outcomes] == ["launched"] * 2 + ["queued"] * 8
    assert [queue.position(store, RESULTS, "lab", str(launch(relay, k)["place"])) for k in keys[2:]] == list(
        range(1, 9)
    )
    while len(in_flight(relay)) > 0:
        assert len(in_flight(relay)) <= 2 and len(slots(store)) == len(in_flight(relay))
        end(relay, backend, in_flight(relay)[0])
        tick = lifecycle.reconcile(relay)
        assert tick.drained is not None and len(tick.drained.launched) <= 1
    assert [request.run_key for request in backend.launches] == keys  # each once, in arrival order
    assert slots(store) == [] and store.uris(RESULTS + "/queue/entries/") == []
    assert {launch(relay, k)["state"] for k in keys} == {"launched"}


def test_a_refusal_for_load_queues_the_trigger_and_the_drain_waits_out_the_retry_after(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = timed(relay, clock)  # no caps at all
    wait = drain.FOLLOW_THROUGH + drain.LEASED + 10  # longer than any delivery stays: the tick drains it
    backend.failures.append(BackendBusyError("429 Too Many Requests", retry_after=wait))
    outcome = drain.deliver(relay, upload(store, 1))
    assert outcome.outcome == "queued" and backend.launches == []  # acknowledged, not bounced for redelivery
    assert "refused for load: 429 Too Many Requests" in str(launch(relay, str(outcome.run_key))["waiting_for"])
    hold = records.decode(store.read(queue.hold_uri(RESULTS, "fake")).data)
    assert hold["until"] == records.timestamp(NOW + timedelta(seconds=wait))  # for every instance, not only this one
    clock.advance(wait - 1)
    relay = replace(relay, gate=SubmitGate())  # another instance: its own gate is open, the hold is not
    assert lifecycle.reconcile(relay).drained == drain.Drained(
        stopped=f"the fake backend asked for a wait until {hold['until']}"
    )
    clock.advance(1)
    tick = lifecycle.reconcile(relay)
    assert tick.drained is not None and tick.drained.launched == (outcome.run_key,)
    assert [r.run_key for r in backend.launches] == [outcome.run_key]
    assert launch(relay, str(outcome.run_key))["state"] == "launched"
    assert drain.drain(relay).launched == ()  # nothing left: launched once


def test_a_queued_run_cancelled_never_launches(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = relay_with(relay, "{max_in_flight: 1}", clock)
    first, second, third = (str(drain.deliver(relay, upload(store, n)).run_key) for n in range(3))
    answer = lifecycle.cancel(relay, second)
    assert (answer.changed, answer.state, answer.run_id) == (True, "cancelled", None)
    assert lifecycle.cancel(relay, second).changed is False  # already cancelled
    result = records.decode(store.read(naming.result_record(RESULTS, second)).data)
    assert (result["state"], result["status"]) == ("cancelled", 499)
    end(relay, backend, first)
    lifecycle.reconcile(relay)
    assert [r.run_key for r in backend.launches] == [first, third]
    assert launch(relay, second)["state"] == "cancelled"


def test_a_paused_tenant_queues_and_does_not_drain_until_resumed(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = relay_with(relay, "{max_in_flight: 5}", clock)
    assert queue.pause(store, RESULTS, "lab", "", by="test", now=NOW) is True
    assert queue.pause(store, RESULTS, "lab", "", by="test", now=NOW) is False
    outcomes = [drain.deliver(relay, upload(store, n)) for n in range(3)]
    assert {o.outcome for o in outcomes} == {"queued"}
    assert launch(relay, str(outcomes[0].run_key))["waiting_for"] == "tenant lab is paused"
    assert lifecycle.reconcile(relay).drained == drain.Drained() and backend.launches == []
    assert queue.resume(store, RESULTS, "lab", "") is True and queue.resume(store, RESULTS, "lab", "") is False
    assert drain.drain(relay).launched == tuple(o.run_key for o in outcomes)


def test_a_paused_pipeline_waits_while_the_tenants_other_pipelines_go(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = relay_with(relay, "{max_in_flight: 5}", clock)
    queue.pause(store, RESULTS, "lab", "echo", by="test", now=NOW)
    outcome = drain.deliver(relay, upload(store, 1))
    assert (outcome.outcome, launch(relay, str(outcome.run_key))["waiting_for"]) == (
        "queued",
        "pipeline echo of tenant lab is paused",
    )
    queue.resume(store, RESULTS, "lab", "echo")
    assert drain.drain(relay).launched == (outcome.run_key,)


def test_a_cap_that_rejects_records_limit_exceeded(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = relay_with(relay, "{max_in_flight: 1, at_cap: reject}", clock)
    assert drain.deliver(relay, upload(store, 1)).outcome == "launched"
    refused = drain.deliver(relay, upload(store, 2))
    assert (refused.outcome, refused.code) == ("rejected", "limit_exceeded")
    recorded = records.decode(store.read(naming.rejection_record(RESULTS, str(refused.run_key))).data)
    assert recorded["error"]["problems"] == [
        {
            "field": "(limits)",
            "expected": "room under tenants.lab.caps (at_cap: reject)",
            "found": "tenant lab has 1 runs in flight (tenants.lab.caps.max_in_flight)",
        }
    ]
    assert len(backend.launches) == 1


def test_launches_per_minute_wait_for_the_next_minute(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = relay_with(relay, "{max_per_minute: 2}", clock)
    outcomes = [drain.deliver(relay, upload(store, n)) for n in range(3)]
    assert [o.outcome for o in outcomes] == ["launched", "launched", "queued"]
    assert drain.drain(relay).launched == ()
    clock.advance(60)
    tick = lifecycle.reconcile(relay)
    assert tick.drained is not None and tick.drained.launched == (outcomes[2].run_key,)
    assert [p for p in store.uris(RESULTS + "/queue/rate/")] == [
        f"{RESULTS}/queue/rate/tenant-lab/{(NOW + timedelta(seconds=60)):%Y%m%dT%H%MZ}/0000.json"
    ]  # the minute past swept


def test_drains_at_once_on_many_threads_launch_each_queued_run_exactly_once(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = relay_with(relay, "{max_in_flight: 6}", clock)
    queue.pause(store, RESULTS, "lab", "", by="test", now=NOW)
    keys = [str(drain.deliver(relay, upload(store, n)).run_key) for n in range(10)]
    queue.resume(store, RESULTS, "lab", "")
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def drainer() -> None:
        try:
            start.wait()
            drain.drain(relay)
        except BaseException as error:  # a thread's failure must reach the test
            errors.append(error)

    threads = [threading.Thread(target=drainer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    launched = [r.run_key for r in backend.launches]
    assert len(launched) == 6 and len(set(launched)) == 6 and set(launched) <= set(keys)
    assert len(slots(store)) == 6  # a drain that lost a run gave back the slot it took for it
    while in_flight(relay):
        for key in in_flight(relay):
            end(relay, backend, key)
        lifecycle.reconcile(relay)
    assert sorted(r.run_key for r in backend.launches) == sorted(keys)


class Crash(Exception):
    """The drainer's process dies here."""


class CrashingStore(MemoryBlobStore):
    """The store, with the drainer's process dying once around the first launch record write in `state`: after
    the write lands (`after`), or before it is sent."""

    def __init__(self, state: str, *, after: bool) -> None:
        super().__init__()
        self.state, self.after, self.crashed = state, after, False

    def write(self, uri: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        crash = not self.crashed and uri.endswith("/launch.json") and json.loads(data)["state"] == self.state
        if crash and not self.after:
            self.crashed = True
            raise Crash(uri)
        generation = super().write(uri, data, if_generation_match=if_generation_match)
        if crash:
            self.crashed = True
            raise Crash(uri)
        return generation


@pytest.mark.parametrize(
    ("state", "after"),
    [("launching", True), ("launched", False)],
    ids=["dead-after-the-dequeue-claim", "dead-after-the-submit"],
)
def test_a_drainer_killed_between_dequeue_and_launch_still_ends_with_one_run(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock, state: str, after: bool
):
    crashing = CrashingStore(state, after=after)
    crashing.write("gs://catalog/echo.yaml", store.read("gs://catalog/echo.yaml").data)
    relay = relay_with(relay, "{max_in_flight: 1}", clock, crashing)
    queue.pause(crashing, RESULTS, "lab", "", by="test", now=NOW)
    key = str(drain.deliver(relay, upload(crashing, 1)).run_key)
    queue.resume(crashing, RESULTS, "lab", "")
    with pytest.raises(Crash):
        drain.drain(relay)
    assert launch(relay, key)["state"] == "launching" and len(slots(crashing)) == 1
    assert drain.drain(relay).launched == ()  # the claim's lease still runs: no one else launches it
    clock.advance(relay.settings.claim_lease)
    tick = lifecycle.reconcile(relay)  # takes the claim over, asking the backend first
    assert tick.drained is not None and tick.drained.launched == (key,)
    assert [r.run_key for r in backend.launches] == [key]
    assert backend.lookups == [key]
    saved = launch(relay, key)
    assert (saved["state"], saved["run_id"]) == ("launched", "run-1")
    assert len(slots(crashing)) == 1 and queue.held_by(saved)[0].uri == slots(crashing)[0]


def test_a_slot_a_crash_left_behind_is_given_back_by_the_sweep(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = relay_with(relay, "{max_in_flight: 1}", clock)
    orphan = f"{RESULTS}/queue/slots/tenant-lab/0000.json"
    store.write(orphan, records.encode({"run_key": "echo-gone", "taken_at": records.timestamp(NOW)}))
    outcome = drain.deliver(relay, upload(store, 1))
    assert outcome.outcome == "queued"  # the orphan holds the one slot
    assert lifecycle.reconcile(relay).freed == 0  # younger than a claim's lease: a taker may be about to claim
    clock.advance(relay.settings.claim_lease)
    tick = lifecycle.reconcile(relay)
    assert tick.freed == 1 and tick.drained is not None and tick.drained.launched == (outcome.run_key,)


def test_an_uncapped_tenant_writes_nothing_to_the_queue(relay: Relay, store: MemoryBlobStore, clock: Clock):
    relay = replace(relay, policy=policy("tenants: [{name: lab, triggers: [gs://triggers/lab/]}]"), clock=clock)
    assert drain.deliver(relay, upload(store, 1)).outcome == "launched"
    assert store.uris(RESULTS + "/queue/") == []


def test_a_rerun_under_a_cap_launches_when_there_is_room_and_waits_its_turn_when_not(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = relay_with(relay, "{max_in_flight: 1}", clock)
    first = str(drain.deliver(relay, upload(store, 1)).run_key)
    backend.states[str(launch(relay, first)["run_id"])] = RunState(RUN_FAILED, "boom")
    lifecycle.reconcile(relay)
    again = lifecycle.rerun(relay, first)
    assert (again.state, again.run_key) == ("launched", lifecycle.attempt_key(first, 2))
    backend.states[str(again.run_id)] = RunState(RUN_FAILED, "boom")
    lifecycle.reconcile(relay)
    other = str(drain.deliver(relay, upload(store, 2)).run_key)  # takes the one slot
    waiting = lifecycle.rerun(relay, first)
    assert (waiting.state, waiting.run_key) == ("queued", lifecycle.attempt_key(first, 3))
    end(relay, backend, other)
    tick = lifecycle.reconcile(relay)
    assert tick.drained is not None and tick.drained.launched == (waiting.run_key,)


def test_a_queued_run_says_where_it_stands_and_why_it_still_waits(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = relay_with(relay, "{max_in_flight: 1}", clock)
    drain.deliver(relay, upload(store, 0))
    second, third = (str(drain.deliver(relay, upload(store, n)).run_key) for n in (1, 2))

    def waiting(key: str) -> queue.Waiting:
        return queue.explain(store, RESULTS, relay.policy, launch(relay, key), clock())

    full = "tenant lab has 1 runs in flight (tenants.lab.caps.max_in_flight)"
    assert (waiting(second), waiting(third)) == (queue.Waiting(1, full), queue.Waiting(2, full))
    queue.hold(store, queue.hold_uri(RESULTS, "fake"), NOW + timedelta(seconds=5), "429")
    assert waiting(second).reason == "the fake backend asked for a wait until 2026-11-21T12:00:05.000Z"
    queue.pause(store, RESULTS, "lab", "echo", by="test", now=NOW)
    assert waiting(third) == queue.Waiting(2, "pipeline echo of tenant lab is paused")
    queue.resume(store, RESULTS, "lab", "echo")
    clock.advance(5)
    store.delete(f"{RESULTS}/queue/slots/tenant-lab/0000.json")  # as if the run in flight ended
    assert waiting(third) == queue.Waiting(2, "1 run(s) ahead of it; the next drain launches it")


def test_the_deployments_cap_holds_every_tenants_runs_together(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    text = (
        "caps: {max_in_flight: 1}\n"
        "tenants:\n  - {name: lab, triggers: [gs://triggers/lab/]}\n  - {name: bio, triggers: [gs://triggers/bio/]}\n"
    )
    relay = replace(relay, policy=policy(text), clock=clock)
    lab = drain.deliver(relay, upload(store, 1))
    data = json.dumps({"pipeline": "echo", "parameters": {"message": "bio"}}).encode()
    generation = store.write("gs://triggers/bio/t.json", data)
    bio = drain.deliver(relay, ObjectDelivery(EVENT, "triggers", "bio/t.json", generation, len(data), "storage-event"))
    assert (lab.outcome, bio.outcome) == ("launched", "queued")
    assert store.uris(RESULTS + "/queue/entries/") == [
        f"{RESULTS}/queue/entries/bio/{launch(relay, str(bio.run_key))['place']}.json"
    ]
    end(relay, backend, str(lab.run_key))
    tick = lifecycle.reconcile(relay)
    assert tick.drained is not None and tick.drained.launched == (bio.run_key,)


def test_a_launch_after_a_refusal_for_load_drains_what_the_refusal_queued(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = timed(relay, clock)
    wait = drain.FOLLOW_THROUGH + drain.LEASED + 1  # longer than any delivery stays: answered at once, queued
    backend.failures.append(BackendBusyError("429 Too Many Requests", retry_after=wait))
    refused = drain.deliver(relay, upload(store, 1))
    assert refused.outcome == "queued" and clock.slept == []
    clock.advance(wait)
    later = drain.deliver(relay, upload(store, 2))
    assert later.outcome == "launched"
    assert [r.run_key for r in backend.launches] == [later.run_key, refused.run_key]  # no tick needed
    clock.advance(CAREFUL_FOR)
    assert relay.gate.wary() is False  # the backend has been fine a while: launches drain no more


def _busy(retry_after: float) -> BackendBusyError:
    return BackendBusyError("429 Too Many Requests", retry_after=retry_after)


def test_after_a_retry_after_the_delivery_claims_the_head_waits_exactly_that_and_launches_it_once(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = timed(relay, clock)
    states: list[object] = []

    def sleep(seconds: float) -> None:  # what the run's record says while the drain waits
        listed = relay.store.list(RESULTS + "/runs/")
        states.extend(launch(relay, uri.split("/")[-2])["state"] for uri in listed if uri.endswith("/launch.json"))
        clock.sleep(seconds)

    relay = replace(relay, sleep=sleep)
    backend.failures += [_busy(2), _busy(1), _busy(3)]  # refused at once, then twice more after its waits
    outcome = drain.deliver(relay, upload(store, 1))
    assert outcome.outcome == "launched"
    assert clock.slept == [2, 1, 3]  # each Retry-After exactly, one after the other, no more
    # Claimed before each wait, so the submit goes the moment the wait ends, not after Relay's own round trips.
    assert states == ["launching"] * 3
    assert [r.run_key for r in backend.launches] == [outcome.run_key]  # exactly once
    assert launch(relay, str(outcome.run_key))["state"] == "launched"
    assert store.uris(RESULTS + "/queue/entries/") == []


def test_a_delivery_keeps_draining_while_runs_wait_and_only_the_drain_leases_holder_stays_past_its_waits(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = timed(relay, clock)
    backend.failures.append(_busy(4))
    first = drain.deliver(relay, upload(store, 0))  # refused, then launched after 4 s: its own follow-through
    assert first.outcome == "launched" and clock.slept == [4]
    # Two runs queued (the first refused, the second behind it), then a third delivery: its follow-through waits out
    # every refusal in turn, FOLLOW_THROUGH in all, then stays no longer: another delivery holds the drain lease.
    lease = queue.drainer_uri(RESULTS, "fake")
    assert queue.take_lease(store, lease, "another delivery", clock.now, clock.now + timedelta(hours=1))
    backend.failures += [_busy(3)] * 4
    waiting = [str(handle_delivery(relay, upload(store, n)).run_key) for n in (1, 2)]
    assert [launch(relay, k)["state"] for k in waiting] == ["queued", "queued"]
    clock.slept.clear()
    third = drain.deliver(relay, upload(store, 3))
    assert third.outcome == "queued" and clock.slept == [3, 3, 3]  # a fourth wait would pass FOLLOW_THROUGH
    assert [r.run_key for r in backend.launches] == [first.run_key]
    assert launch(relay, waiting[0])["state"] == "queued"  # back at its place: the next drain takes it first
    # With the lease free, the next delivery takes it past its own FOLLOW_THROUGH and stays while runs wait.
    store.delete(lease)
    backend.failures += [_busy(3)] * 4
    clock.slept.clear()
    fourth = drain.deliver(relay, upload(store, 4))
    assert fourth.outcome == "launched" and clock.slept == [3] * 5
    launched = [r.run_key for r in backend.launches]
    assert launched == [first.run_key, *waiting, third.run_key, fourth.run_key]  # each once, in arrival order
    assert store.uris(lease) == []  # given back when it left


def test_the_drain_lease_is_one_holders_until_it_runs_out_or_is_given_back(store: MemoryBlobStore):
    uri = queue.drainer_uri(RESULTS, "fake")
    hour = timedelta(hours=1)
    mine = queue.take_lease(store, uri, "a", NOW, NOW + hour)
    assert mine and queue.take_lease(store, uri, "b", NOW, NOW + hour) is None  # held: one holder at a time
    again = queue.take_lease(store, uri, "a", NOW, NOW + 2 * hour)  # its holder may renew it
    assert again and again != mine
    queue.release_lease(store, uri, mine)  # a stale generation gives back nothing
    assert queue.take_lease(store, uri, "b", NOW + hour, NOW + 3 * hour) is None
    taken = queue.take_lease(store, uri, "b", NOW + 2 * hour, NOW + 3 * hour)  # run out: another takes it over
    assert taken
    queue.release_lease(store, uri, taken)
    assert store.uris(uri) == [] and queue.take_lease(store, uri, "c", NOW, NOW + hour)


def test_a_longer_wait_asked_meanwhile_puts_the_claimed_run_back_unsent_and_it_goes_when_that_ends(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = timed(relay, clock)
    hold = queue.hold_uri(RESULTS, "fake")

    def sleep(seconds: float) -> None:  # the first wait: another instance is refused for 2 s more
        if not clock.slept:
            queue.hold(store, hold, clock.now + timedelta(seconds=seconds + 2), "429 at another instance")
        clock.sleep(seconds)

    relay = replace(relay, sleep=sleep)
    backend.failures.append(_busy(1))
    outcome = drain.deliver(relay, upload(store, 1))
    assert outcome.outcome == "launched" and clock.slept == [1, 2]
    assert [r.run_key for r in backend.launches] == [outcome.run_key]  # no submit while the hold ran


def test_a_tick_stopped_by_trouble_at_the_backend_submits_nothing_and_the_next_drains(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = relay_with(relay, "{max_in_flight: 2}", clock)
    first, second, third = (drain.deliver(relay, upload(store, n)) for n in range(3))
    # The first run's own exit step records its end: its slot is given back at once (relay.results).
    ended = records.result_record(
        run_key=str(first.run_key),
        pipeline="echo",
        backend="fake",
        run_id="run-1",
        succeeded=True,
        message="done",
        outputs={},
        metrics={},
        started=NOW,
        finished=NOW,
    )
    assert record_result(store, None, RESULTS, ended) is True and len(slots(store)) == 1
    backend.state_errors[str(second.run_id)] = BackendUnavailableError("503 Service Unavailable", status=503)
    tick = lifecycle.reconcile(relay)
    assert tick.stopped.startswith(f"stopped at {second.run_key}: 503")
    assert tick.drained == drain.Drained(stopped="not drained: the tick stopped early")
    assert len(backend.launches) == 2
    backend.state_errors.clear()
    tick = lifecycle.reconcile(relay)
    assert tick.drained is not None and tick.drained.launched == (third.run_key,)


def test_a_higher_priority_goes_first_and_equals_keep_their_arrival_order(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = relay_with(relay, "{max_in_flight: 1, max_priority: 5}", clock)

    def deliver(n: int, priority: int) -> str:
        document = {"pipeline": "echo", "parameters": {"message": f"plate {n}"}, "priority": priority}
        data = json.dumps(document).encode()
        generation = store.write(f"gs://triggers/lab/p{n}.json", data)
        delivery = ObjectDelivery(EVENT, "triggers", f"lab/p{n}.json", generation, len(data), "storage-event")
        return str(drain.deliver(relay, delivery).run_key)

    running, low, other_low, high = deliver(0, 0), deliver(1, 0), deliver(2, 0), deliver(3, 5)
    assert queue.explain(store, RESULTS, relay.policy, launch(relay, high), NOW).position == 1
    while in_flight(relay):
        end(relay, backend, in_flight(relay)[0])
        lifecycle.reconcile(relay)
    assert [r.run_key for r in backend.launches] == [running, high, low, other_low]
    too_high = deliver(4, 6)
    rejection = records.decode(store.read(naming.rejection_record(RESULTS, too_high)).data)
    assert rejection["error"]["code"] == "policy_denied"
    assert rejection["error"]["problems"] == [
        {"field": "priority", "expected": "at most 5 (tenants.lab.caps.max_priority)", "found": "6"}
    ]


def test_the_launch_paths_view_of_the_pauses_lists_them_at_most_once_per_period(store: MemoryBlobStore):
    # An uncapped trigger pays no round trip for pauses; a pause still reaches new triggers within the period.
    listings: list[str] = []

    class Counting(MemoryBlobStore):
        def list(self, prefix: str) -> Iterator[str]:
            listings.append(prefix)
            return super().list(prefix)

    counting, now = Counting(), [100.0]
    view = queue.PauseView(5.0, clock=lambda: now[0])
    assert view.get(counting, RESULTS) == frozenset() and len(listings) == 1
    queue.pause(counting, RESULTS, "lab", "", by="test", now=NOW)
    now[0] += 4.9
    assert view.get(counting, RESULTS) == frozenset() and len(listings) == 1
    now[0] += 0.1
    assert view.get(counting, RESULTS) == {("lab", "")} and len(listings) == 2
    assert view.get(counting, "gs://other/relay") == frozenset() and len(listings) == 3  # another results location


class CountingStore(MemoryBlobStore):
    """The store, noting every read and listing: what a tick or a delivery costs, counted."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []
        self.listings: list[str] = []

    def read(self, uri: str, *, generation: int | None = None) -> Blob:
        self.reads.append(uri)
        return super().read(uri, generation=generation)

    def list(self, prefix: str) -> Iterator[str]:
        self.listings.append(prefix)
        return super().list(prefix)


def counting(relay: Relay, store: MemoryBlobStore, caps: str, clock: Clock) -> tuple[Relay, CountingStore]:
    counted = CountingStore()
    counted.write("gs://catalog/echo.yaml", store.read("gs://catalog/echo.yaml").data)
    return relay_with(relay, caps, clock, counted), counted


def test_a_tick_reads_no_waiting_runs_record_but_asks_about_a_run_whose_place_a_dead_drainer_left(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay, counted = counting(relay, store, "{max_in_flight: 1}", clock)
    first, *waiting = [str(drain.deliver(relay, upload(counted, n)).run_key) for n in range(6)]
    # The first run's place, as a drain that died between its launch record and the place's delete leaves it.
    queue.add_entry(counted, RESULTS, "lab", queue.place_for(NOW, first))
    end(relay, backend, first)
    counted.reads.clear()
    tick = lifecycle.reconcile(relay)
    assert [(seen.run_key, seen.action) for seen in tick.seen] == [(first, "result")]  # its slot holds it in view
    assert tick.drained is not None and tick.drained.launched == (waiting[0],)
    # Of the waiting runs, only the drain read a record: the one it launched, and the next, which found the cap full.
    read = {key for key in waiting if naming.launch_record(RESULTS, key) in counted.reads}
    assert read == set(waiting[:2])


def test_a_delivery_queued_behind_its_tenants_full_cap_does_not_list_the_queue(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay, counted = counting(relay, store, "{max_in_flight: 1}", clock)
    outcomes = [drain.deliver(relay, upload(counted, n)) for n in range(3)]
    counted.listings.clear()
    outcome = drain.deliver(relay, upload(counted, 3))
    assert [o.outcome for o in outcomes] + [outcome.outcome] == ["launched", "queued", "queued", "queued"]
    assert not [prefix for prefix in counted.listings if "/queue/entries/" in prefix]
    end(relay, backend, str(outcomes[0].run_key))
    tick = lifecycle.reconcile(relay)  # the tick's drain still takes the queue in order
    assert tick.drained is not None and tick.drained.launched == (outcomes[1].run_key,)


# --- a run's end as the notify topic tells of it ---------------------------------------------------------------


def test_an_end_message_frees_the_slot_and_launches_the_next_queued_run_once_and_a_repeat_launches_nothing(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = relay_with(relay, "{max_in_flight: 1}", clock)
    first, second, third = (str(drain.deliver(relay, upload(store, n)).run_key) for n in range(3))
    end(relay, backend, first)
    seen = lifecycle.end_seen(relay, first)
    assert (seen.action, seen.drained and seen.drained.launched) == ("result", (second,))
    assert records.decode(store.read(naming.result_record(RESULTS, first)).data)["state"] == "succeeded"
    again = lifecycle.end_seen(relay, first)  # Pub/Sub delivers at least once
    assert (again.action, again.drained and again.drained.launched) == ("recorded", ())
    assert [r.run_key for r in backend.launches] == [first, second] and in_flight(relay) == [second]
    assert len(slots(store)) == 1 and launch(relay, third)["state"] == "queued"


def test_end_messages_at_once_launch_the_next_run_once(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = relay_with(relay, "{max_in_flight: 1}", clock)
    first, *waiting = (str(drain.deliver(relay, upload(store, n)).run_key) for n in range(4))
    end(relay, backend, first)
    start = threading.Barrier(4)

    def seen() -> None:
        start.wait()
        lifecycle.end_seen(relay, first)

    threads = [threading.Thread(target=seen) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.run_key for r in backend.launches] == [first, waiting[0]] and len(slots(store)) == 1


def test_a_forged_or_early_end_message_frees_nothing(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = relay_with(relay, "{max_in_flight: 1}", clock)
    first, second = (str(drain.deliver(relay, upload(store, n)).run_key) for n in range(2))
    # The backend says the run goes on: whoever published the end, nothing is recorded, freed or launched.
    assert lifecycle.end_seen(relay, first).action == "running"
    assert lifecycle.end_seen(relay, second).action == "none"  # a queued run has nothing to free
    assert lifecycle.end_seen(relay, "echo-no-such-run").action == "none"
    assert lifecycle.end_seen(relay, "../queue/slots").action == "none"  # not a run key: no record is looked for
    assert [r.run_key for r in backend.launches] == [first] and len(slots(store)) == 1
    assert not store.uris(naming.result_record(RESULTS, first)) and launch(relay, second)["state"] == "queued"


def test_an_end_the_runs_exit_step_recorded_drains_from_its_message_without_asking_the_backend(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = relay_with(relay, "{max_in_flight: 1}", clock)
    first, second = (str(drain.deliver(relay, upload(store, n)).run_key) for n in range(2))
    ended = records.ended_record(
        launch=launch(relay, first), state="succeeded", message="done", started=None, finished=NOW, recorded_by="step"
    )
    assert record_result(store, None, RESULTS, ended)  # the exit step: the result, its slot given back
    assert slots(store) == [] and [r.run_key for r in backend.launches] == [first]
    seen = lifecycle.end_seen(relay, first)
    assert (seen.action, seen.drained and seen.drained.launched) == ("recorded", (second,))
    assert backend.state_lookups == []


def test_an_uncapped_runs_end_is_recorded_without_a_drain(relay: Relay, store: MemoryBlobStore, backend: FakeBackend):
    key = str(drain.deliver(relay, upload(store, 1)).run_key)
    end(relay, backend, key)
    seen = lifecycle.end_seen(relay, key)
    assert (seen.action, seen.drained) == ("result", None)


def test_only_an_ended_states_message_names_a_run_to_look_at():
    assert lifecycle.ended_run({"attributes": {"state": "failed", "run_key": "echo-a"}}) == "echo-a"
    for attributes in ({"state": "launched", "run_key": "echo-a"}, {"state": "succeeded"}, {}, "x"):
        assert lifecycle.ended_run({"attributes": attributes}) is None


def test_a_drain_launching_several_runs_lists_the_slots_once(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay, counted = counting(relay, store, "{max_in_flight: 3}", clock)
    queue.pause(counted, RESULTS, "lab", "", by="test", now=NOW)
    keys = [str(drain.deliver(relay, upload(counted, n)).run_key) for n in range(4)]
    queue.resume(counted, RESULTS, "lab", "")
    counted.listings.clear()
    assert drain.drain(relay).launched == tuple(keys[:3])
    listed = [prefix for prefix in counted.listings if "/queue/slots/" in prefix]
    assert listed == [RESULTS + "/queue/slots/tenant-lab/"]


def test_an_end_while_this_instances_drain_of_its_tenant_runs_has_that_drain_go_round_again(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    relay = relay_with(relay, "{max_in_flight: 1}", clock)
    first, second, _ = (str(drain.deliver(relay, upload(store, n)).run_key) for n in range(3))
    end(relay, backend, first)
    assert relay.ending.enter("lab")  # a drain of lab's queue, for another end, is under way in this instance
    seen = lifecycle.end_seen(relay, first)
    assert (seen.action, seen.drained) == ("result", None) and [r.run_key for r in backend.launches] == [first]
    assert relay.ending.again("lab")  # that drain goes round once more: the slot this end freed is not lost
    assert drain.drain(relay, tenant="lab").launched == (second,)
    assert not relay.ending.again("lab")  # nobody asked since: it leaves
    assert relay.ending.enter("lab")  # and the next end drains itself
