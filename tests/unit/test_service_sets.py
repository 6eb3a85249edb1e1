"""Sets of files as one run through the launch use-case: a set route's objects join their folder's set; the set
launches once, when complete (size, marker, quiet period on the tick), or is recorded incomplete past its deadline;
an object after its set launched starts the next set. Redelivered, reordered and concurrent deliveries included."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from relay import drain, lifecycle, naming, records, set_store
from relay.errors import TransientError
from relay.events import EventInfo, Message, ObjectDelivery
from relay.outcome import Outcome
from relay.service import Relay, handle_delivery
from relay.status import read_run
from tests.conftest import NOW
from tests.fakes import FakeBackend, MemoryBlobStore, RecordingNotifier
from tests.policies import policy

TOPIC = "projects/proj-p/topics/assay"
EVENT = EventInfo(id="msg-1", type="google.cloud.pubsub.topic.v1.messagePublished", source="s", time=NOW)
POLICY_TEXT = """
notifications:
  - {topic: projects/proj-p/topics/assay, buckets: [lab-data]}
tenants:
  - name: assay
    topics: [projects/proj-p/topics/assay]
    pipelines: [echo]
    routes:
      - id: plates
        bucket: lab-data
        prefix: plates/
        glob: "*.csv"
        pipeline: echo
        set: {size: 3, deadline: 1h}
        parameters: {message: "{set}", items: "{objects}", count: "{count}"}
      - id: runs
        bucket: lab-data
        prefix: runs/
        pipeline: echo
        set: {marker: _SUCCESS}
        parameters: {message: "{folder}", items: "{objects}"}
      - id: scans
        bucket: lab-data
        prefix: scans/
        pipeline: echo
        set: {quiet: 1m, deadline: 10m}
        parameters: {message: "{bucket}", items: "{objects}"}
"""
POLICY = policy(POLICY_TEXT)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def routed(relay: Relay, clock: Clock) -> Relay:
    return replace(relay, policy=POLICY, clock=clock)


def put(store: MemoryBlobStore, name: str, data: bytes = b"a,b\n", *, sent: datetime | None = None) -> ObjectDelivery:
    """Upload gs://lab-data/`name` and return its storage notification (sent at `sent`; None: no time, never
    stale, for the tests that move the clock past a deadline)."""
    generation = store.put(f"gs://lab-data/{name}", data)
    event = replace(EVENT, time=sent)
    return ObjectDelivery(event, "lab-data", name, generation, None, "storage-notification", Message(TOPIC, name))


def items(backend: FakeBackend) -> list[list[str]]:
    return [list(launch.parameters["items"]) for launch in backend.launches]  # type: ignore[call-overload]


def test_a_set_of_three_objects_is_one_run_given_their_list_in_arrival_order(
    routed: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    deliveries = [put(store, f"plates/p17/{well}.csv") for well in ("a01", "a02", "a03")]
    first = handle_delivery(routed, deliveries[0])
    clock.advance(1)
    second = handle_delivery(routed, deliveries[1])
    assert (first.outcome, second.outcome, backend.launches) == ("collected", "collected", [])
    clock.advance(1)
    third = handle_delivery(routed, deliveries[2])
    assert third.outcome == "launched"
    [launch] = backend.launches
    assert launch.parameters["items"] == [f"gs://lab-data/plates/p17/{w}.csv" for w in ("a01", "a02", "a03")]
    assert launch.parameters["count"] == 3
    assert launch.parameters["message"] == "assay/plates/gs://lab-data/plates/p17#1"
    record = records.decode(store.read(naming.launch_record("gs://results/relay", str(third.run_key))).data)
    assert (record["tenant"], record["trigger"]["set_reason"], record["trigger"]["set_objects"]) == ("assay", "size", 3)


def test_redeliveries_launch_nothing_more(routed: Relay, store: MemoryBlobStore, backend: FakeBackend):
    deliveries = [put(store, f"plates/p1/{n}.csv") for n in range(3)]
    outcomes = [handle_delivery(routed, d) for d in [*deliveries, *deliveries]]
    assert [o.outcome for o in outcomes] == [
        "collected",
        "collected",
        "launched",
        "duplicate",
        "duplicate",
        "duplicate",
    ]
    assert len(backend.launches) == 1


def test_an_object_after_its_set_launched_starts_the_next_set(
    routed: Relay, store: MemoryBlobStore, backend: FakeBackend
):
    for n in range(3):
        handle_delivery(routed, put(store, f"plates/p2/{n}.csv"))
    outcomes = [handle_delivery(routed, put(store, f"plates/p2/{n}.csv")) for n in range(3, 6)]
    assert [o.outcome for o in outcomes] == ["collected", "collected", "launched"]
    assert [sorted(i) for i in items(backend)] == [
        [f"gs://lab-data/plates/p2/{n}.csv" for n in range(3)],
        [f"gs://lab-data/plates/p2/{n}.csv" for n in range(3, 6)],
    ]
    assert backend.launches[0].run_key != backend.launches[1].run_key


def test_folders_are_sets_of_their_own(routed: Relay, store: MemoryBlobStore, backend: FakeBackend):
    for n in range(3):
        for plate in ("x", "y"):
            handle_delivery(routed, put(store, f"plates/{plate}/{n}.csv"))
    assert sorted(len(i) for i in items(backend)) == [3, 3]
    assert {i[0].split("/")[-2] for i in items(backend)} == {"x", "y"}


def test_a_marker_closes_its_set_and_is_kept_out_of_the_objects(
    routed: Relay, store: MemoryBlobStore, backend: FakeBackend
):
    handle_delivery(routed, put(store, "runs/r9/lane1.fastq"))
    handle_delivery(routed, put(store, "runs/r9/lane2.fastq"))
    outcome = handle_delivery(routed, put(store, "runs/r9/_SUCCESS", b""))  # an empty marker, as Spark writes
    assert outcome.outcome == "launched"
    assert [sorted(i) for i in items(backend)] == [
        ["gs://lab-data/runs/r9/lane1.fastq", "gs://lab-data/runs/r9/lane2.fastq"]
    ]
    assert backend.launches[0].parameters["message"] == "runs/r9"


def test_a_quiet_period_is_decided_on_the_reconcile_tick(
    routed: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    handle_delivery(routed, put(store, "scans/s1/a.tif"))
    clock.advance(30)
    handle_delivery(routed, put(store, "scans/s1/b.tif"))
    clock.advance(59)
    assert lifecycle.reconcile(routed).sets == ()
    clock.advance(1)
    tick = lifecycle.reconcile(routed)
    assert [o.outcome for o in tick.sets] == ["launched"]
    assert items(backend) == [["gs://lab-data/scans/s1/a.tif", "gs://lab-data/scans/s1/b.tif"]]
    assert "sets closed" in lifecycle.tick_summary(tick)
    assert lifecycle.reconcile(routed).sets == ()  # done: the tick looks at it no more


def test_past_its_deadline_a_set_is_recorded_incomplete_and_shown_so(
    routed: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock, notifier: RecordingNotifier
):
    handle_delivery(routed, put(store, "plates/p5/a.csv"))
    handle_delivery(routed, put(store, "plates/p5/b.csv"))
    clock.advance(3601)
    [outcome] = lifecycle.reconcile(routed).sets
    assert outcome.outcome == "incomplete" and backend.launches == []
    run = read_run(store, "gs://results/relay", str(outcome.run_key))
    assert run is not None and run.state == "incomplete"
    assert run.incomplete is not None and run.incomplete["set"]["objects"] == [
        "gs://lab-data/plates/p5/a.csv",
        "gs://lab-data/plates/p5/b.csv",
    ]
    assert run.incomplete["set"]["reason"] == "deadline" and "deadline passed with 2 object(s)" in run.message
    assert notifier.states == ["incomplete"]
    # A late object starts the next set; the incomplete one stays as it was recorded.
    assert handle_delivery(routed, put(store, "plates/p5/c.csv")).outcome == "collected"
    assert backend.launches == []


def test_an_object_that_comes_past_the_deadline_closes_the_old_set_and_starts_a_new_one(
    routed: Relay, store: MemoryBlobStore, clock: Clock
):
    handle_delivery(routed, put(store, "plates/p6/a.csv"))
    clock.advance(3601)
    outcome = handle_delivery(routed, put(store, "plates/p6/b.csv"))
    assert outcome.outcome == "collected"
    [open_set] = set_store.open_sets(store, "gs://results/relay")
    assert open_set.number == 2  # the first was recorded incomplete by this delivery


def test_objects_past_the_size_go_to_the_next_set_even_from_one_listing(
    routed: Relay, store: MemoryBlobStore, backend: FakeBackend
):
    """Seven objects of one folder, all joined before any close: sets of 3, 3 and one left open."""
    group = set_store.Group("assay", "plates", "lab-data", "plates/p7")
    rule = POLICY.tenants[0].routes[0].set_rule
    assert rule is not None
    for n in range(7):
        member = set_store.Member("lab-data", f"plates/p7/{n}.csv", 100 + n)
        folder = group.number("gs://results/relay", 1)
        arrival = f"{folder}/objects/20261121T120000.{n:06d}Z-{member.digest}-d.json"
        store.write(arrival, b"{}\n")
        body = {"set": 1, "stamp": f"20261121T120000.{n:06d}Z", "uri": member.uri, "generation": 100 + n}
        store.write(f"{group.base('gs://results/relay')}/members/{member.digest}.json", records.encode(body))
    set_store.seal(store, group.number("gs://results/relay", 1), "size", NOW)
    found = set_store.close_due(store, "gs://results/relay", set_store.OpenSet(group, 1), rule, NOW)
    assert [(c.number, len(c.objects)) for c in found] == [(1, 3), (2, 3)]
    assert {o for c in found for o in c.objects} == {f"gs://lab-data/plates/p7/{n}.csv" for n in range(6)}


def deliver_until_done(relay: Relay, delivery: ObjectDelivery) -> Outcome:
    """As Pub/Sub does: a delivery that raised is delivered again."""
    while True:
        try:
            return handle_delivery(relay, delivery)
        except TransientError:
            continue


def run_threads(count: int, work: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def each(number: int) -> None:
        try:
            work(number)
        except BaseException as error:  # reported by the assert below
            errors.append(error)

    threads = [threading.Thread(target=each, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_sets_delivered_twice_out_of_order_from_16_threads_launch_once_each_with_all_their_objects(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend
):
    routed = replace(relay, policy=POLICY)  # one clock for every delivery: arrivals tie, digests order them
    deliveries = [put(store, f"plates/s{s}/{n}.csv") for s in range(40) for n in range(3)] * 2
    random.Random(7).shuffle(deliveries)
    run_threads(16, lambda t: [deliver_until_done(routed, d) for d in deliveries[t::16]])
    assert len(backend.launches) == 40
    assert len({launch.run_key for launch in backend.launches}) == 40
    for objects in items(backend):
        folder = objects[0].rsplit("/", 1)[0]
        assert sorted(objects) == [f"{folder}/{n}.csv" for n in range(3)]


def test_many_objects_of_one_folder_at_once_make_full_sets_with_every_object_in_exactly_one(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    routed = replace(relay, policy=POLICY, clock=clock)
    deliveries = [put(store, f"plates/one/{n:02d}.csv") for n in range(30)]
    random.Random(3).shuffle(deliveries)
    run_threads(16, lambda t: [deliver_until_done(routed, d) for d in deliveries[t::16] * 2])
    lifecycle.reconcile(routed)  # what a delivery left to finish (a stray moved on) the tick finishes
    launched = items(backend)
    every = sorted(o for objects in launched for o in objects)
    assert every == sorted(set(every))  # no object in two runs
    assert all(len(objects) == 3 for objects in launched)
    assert len(launched) == 10 and len(every) == 30


def test_a_stale_notification_joins_no_set_unless_its_object_joined_one_while_fresh(
    routed: Relay, store: MemoryBlobStore, backend: FakeBackend, clock: Clock
):
    first, second = put(store, "plates/p8/a.csv", sent=NOW), put(store, "plates/p8/b.csv", sent=NOW)
    handle_delivery(routed, first)
    clock.advance(3601)  # max_event_age is an hour: both events are stale now
    stale = handle_delivery(routed, second)
    assert (stale.outcome, stale.code) == ("dropped", "stale_event")
    # The object that joined while fresh is seen through: its set, past its deadline now, is recorded.
    assert handle_delivery(routed, first).outcome == "incomplete"
    assert backend.launches == []


def test_a_set_under_a_cap_queues_and_launches_from_the_queue_like_any_run(
    relay: Relay, store: MemoryBlobStore, backend: FakeBackend
):
    capped = policy(
        POLICY_TEXT.replace("    pipelines: [echo]\n", "    pipelines: [echo]\n    caps: {max_in_flight: 1}\n")
    )
    routed = replace(relay, policy=capped)
    outcomes = [handle_delivery(routed, put(store, f"plates/{plate}/{n}.csv")) for plate in "xy" for n in range(3)]
    assert [o.outcome for o in outcomes].count("queued") == 2 and backend.launches == []
    assert [o.outcome for o in drain.drain(routed).outcomes] == ["launched"]  # one slot: the second set waits
    assert len(backend.launches) == 1 and len(items(backend)[0]) == 3
