"""Exactly once under racing deliveries, on fake-gcs-server: its generation preconditions are the real ones.

Each race is played in a fixed order: a store or backend that lets the other delivery run to its end at the
worst moment of the first (between its read of a record and its write, or during its submit), so a write that
drops its generation precondition shows as a second run, a record moved backwards, or a record rewritten.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from devstack import FakeGcsServer, create_bucket, fake_gcs_available
from relay import lifecycle, naming, records
from relay.adapters.gcs import GcsBlobStore
from relay.adapters.tokens import NoTokenSource
from relay.catalog import Catalog
from relay.config import Settings
from relay.errors import (
    BackendUnavailableError,
    ClaimHeldError,
    LaunchRejectedError,
    PreconditionFailedError,
    StorageUnavailableError,
)
from relay.events import EventInfo, InlineDelivery
from relay.outcome import Outcome
from relay.ports import RUN_RUNNING, Blob, BlobInfo, BlobStore, LaunchedRun, LaunchRequest, RunState
from relay.service import Relay, handle_delivery
from tests.conftest import CATALOG, NOW
from tests.fakes import FakeBackend, MemoryBlobStore

BUCKET = "relay-race"
TOPIC = "projects/proj-p/topics/tee"
LEASE = 600.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcsServer]:
    missing = fake_gcs_available()
    if missing:
        pytest.fail(f"the race tests need fake-gcs-server: {missing}")
    with FakeGcsServer(tmp_path_factory.mktemp("race")) as running:
        create_bucket(running.url, BUCKET)
        yield running


@pytest.fixture
def gcs(server: FakeGcsServer) -> GcsBlobStore:
    return GcsBlobStore(endpoint=server.url, tokens=NoTokenSource())


@pytest.fixture
def results(request: pytest.FixtureRequest) -> str:
    return f"gs://{BUCKET}/{request.node.name}"  # a results location of its own per test


class Meanwhile:
    """A BlobStore that, once, lets something else happen right after a call on `uri`: the other delivery of a
    race, run to its end in the gap between this one's read and its next write."""

    def __init__(self, store: BlobStore, uri: str, operation: str, meanwhile: Callable[[], object]) -> None:
        self._store, self._uri, self._operation = store, uri, operation
        self._meanwhile: Callable[[], object] | None = meanwhile

    def _after(self, operation: str, uri: str) -> None:
        if (operation, uri) == (self._operation, self._uri) and self._meanwhile is not None:
            meanwhile, self._meanwhile = self._meanwhile, None
            meanwhile()

    def read(self, uri: str, *, generation: int | None = None) -> Blob:
        try:
            return self._store.read(uri, generation=generation)
        finally:
            self._after("read", uri)

    def stat(self, uri: str, *, generation: int | None = None) -> BlobInfo:
        return self._store.stat(uri, generation=generation)

    def write(self, uri: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        return self._store.write(uri, data, if_generation_match=if_generation_match)

    def delete(self, uri: str, *, if_generation_match: int | None = None) -> None:
        self._store.delete(uri, if_generation_match=if_generation_match)

    def list(self, prefix: str) -> Iterator[str]:
        return self._store.list(prefix)


class SlowSubmit(FakeBackend):
    """A backend whose next submit takes long enough for `meanwhile` to happen before it answers."""

    meanwhile: Callable[[], object] | None = None

    def launch(self, request: LaunchRequest) -> LaunchedRun:
        meanwhile, self.meanwhile = self.meanwhile, None
        try:
            return super().launch(request)
        finally:
            if meanwhile is not None:
                meanwhile()


def relay_on(store: BlobStore, backend: FakeBackend, results: str, *, at: datetime = NOW) -> Relay:
    catalog = MemoryBlobStore()
    catalog.write("gs://catalog/echo.yaml", (CATALOG / "echo.yaml").read_bytes())
    settings = Settings(results_uri=results, catalog_uri="gs://catalog", claim_lease=LEASE)
    return Relay(
        settings=settings, store=store, catalog=Catalog(catalog, "gs://catalog"), backend=backend, clock=lambda: at
    )


def message(message_id: str, **trigger: Any) -> InlineDelivery:
    """A trigger published on the topic, naming its run key, so every message of the race is for one run."""
    document = {"pipeline": "echo", "parameters": {"message": message_id}, "run_key": "nightly", **trigger}
    event = EventInfo(id=message_id, type="google.cloud.pubsub.topic.v1.messagePublished", source="s", time=None)
    return InlineDelivery(event, TOPIC, message_id, json.dumps(document).encode(), "json")


def saved(store: BlobStore, uri: str) -> dict[str, Any]:
    return records.decode(store.read(uri).data)


def crashed_claim(store: BlobStore, results: str) -> None:
    """What a holder that crashed between its claim and its submit leaves: a claim whose lease ran out."""
    claim = records.claim_record(
        run_key="nightly",
        pipeline="echo",
        backend="fake",
        trigger={"event_id": "crashed"},
        parameters={},
        labels={},
        now=NOW - timedelta(hours=1),
        lease_seconds=LEASE,
    )
    store.write(naming.launch_record(results, "nightly"), records.encode(claim), if_generation_match=0)


@pytest.mark.integration
def test_two_takeovers_of_an_expired_claim_give_one_run(gcs: GcsBlobStore, results: str):
    backend = FakeBackend()
    crashed_claim(gcs, results)
    uri = naming.launch_record(results, "nightly")
    outcomes: list[Outcome] = []
    # The first taker reads the expired claim; the second takes it over and launches before the first writes.
    first = relay_on(
        Meanwhile(
            gcs, uri, "read", lambda: outcomes.append(handle_delivery(relay_on(gcs, backend, results), message("b")))
        ),
        backend,
        results,
    )
    with pytest.raises(ClaimHeldError, match="took over run key nightly first"):
        handle_delivery(first, message("a"))
    assert [o.outcome for o in outcomes] == ["launched"] and len(backend.launches) == 1
    record = saved(gcs, uri)
    assert (record["state"], record["run_id"], record["trigger"]["event_id"]) == ("launched", "run-1", "b")
    # The loser's redelivery finds the run.
    assert handle_delivery(relay_on(gcs, backend, results), message("a")).outcome == "duplicate"
    assert len(backend.launches) == 1


@pytest.mark.integration
def test_a_holder_whose_submit_outlived_its_lease_never_moves_the_record_back(gcs: GcsBlobStore, results: str):
    backend = SlowSubmit()
    uri = naming.launch_record(results, "nightly")
    later = relay_on(gcs, backend, results, at=NOW + timedelta(seconds=LEASE + 1))

    def take_over_and_see_it_running() -> None:
        # The lease has run out: a redelivery takes over, finds the run the holder submitted, and the schedule's
        # reconcile then records it running.
        assert handle_delivery(later, message("b")).outcome == "launched"
        backend.states["run-1"] = RunState(RUN_RUNNING)
        assert [seen.action for seen in lifecycle.reconcile(later).seen] == ["running"]

    backend.meanwhile = take_over_and_see_it_running
    outcome = handle_delivery(relay_on(gcs, backend, results), message("a"))
    assert outcome.outcome == "launched" and outcome.run_id == "run-1" and len(backend.launches) == 1
    record = saved(gcs, uri)
    assert (record["state"], record["run_id"]) == ("running", "run-1")


@pytest.mark.integration
def test_a_rejection_is_recorded_once_by_whichever_delivery_writes_it_first(gcs: GcsBlobStore, results: str):
    backend = FakeBackend()
    uri = naming.rejection_record(results, "nightly")
    late = relay_on(gcs, backend, results, at=NOW + timedelta(seconds=5))
    # Both read "no rejection yet"; the second writes its record before the first does.
    first = relay_on(
        Meanwhile(gcs, uri, "read", lambda: handle_delivery(late, message("b", pipeline="nope"))), backend, results
    )
    outcome = handle_delivery(first, message("a", pipeline="nope"))
    assert outcome.outcome == "rejected" and outcome.code == "unknown_pipeline"
    record = saved(gcs, uri)
    assert (record["trigger"]["event_id"], record["rejected_at"]) == ("b", records.timestamp(late.clock()))


def test_a_holder_refused_after_its_lease_ran_out_leaves_the_takers_run_on_record(results: str):
    # fake-gcs-server does not check a delete's generation precondition (Cloud Storage does): the in-memory store
    # does, so this race is played there.
    store = MemoryBlobStore()
    backend = SlowSubmit()
    uri = naming.launch_record(results, "nightly")
    later = relay_on(store, backend, results, at=NOW + timedelta(seconds=LEASE + 1))
    # The holder's submit is refused, but only after its lease ran out and a redelivery took over and launched.
    backend.failures.append(LaunchRejectedError("KFP answered 400 to the holder"))
    backend.meanwhile = lambda: handle_delivery(later, message("b"))
    with pytest.raises(ClaimHeldError, match="nightly was taken over while its submit was refused; retry"):
        handle_delivery(relay_on(store, backend, results), message("a"))
    record = saved(store, uri)
    assert (record["state"], record["run_id"], record["trigger"]["event_id"]) == ("launched", "run-1", "b")
    assert store.uris(naming.rejection_record(results, "nightly")) == []
    assert handle_delivery(relay_on(store, backend, results), message("a")).outcome == "duplicate"
    assert len(backend.launches) == 1


class Unreliable(MemoryBlobStore):
    """Cloud Storage's ways to fail a writer: a create whose reply was lost (the client's retry then finds the
    object it made), and a write that timed out without taking effect."""

    lose_create_reply = False
    fail_next_write = False  # the next write or delete
    release_on_conflict = False  # the holder frees its claim just after our create-only write lost to it

    def delete(self, uri: str, *, if_generation_match: int | None = None) -> None:
        if self.fail_next_write:
            self.fail_next_write = False
            raise StorageUnavailableError(f"{uri}: timed out")
        super().delete(uri, if_generation_match=if_generation_match)

    def write(self, uri: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        if self.fail_next_write:
            self.fail_next_write = False
            raise StorageUnavailableError(f"{uri}: timed out")
        try:
            generation = super().write(uri, data, if_generation_match=if_generation_match)
        except PreconditionFailedError:
            if self.release_on_conflict:
                self.release_on_conflict = False
                self.delete(uri)
            raise
        if self.lose_create_reply and if_generation_match == 0:
            self.lose_create_reply = False
            raise PreconditionFailedError(uri)
        return generation


def test_a_holder_whose_create_reply_was_lost_never_moves_a_takers_record_back(results: str):
    store = Unreliable()
    store.lose_create_reply = True
    backend = SlowSubmit()
    later = relay_on(store, backend, results, at=NOW + timedelta(seconds=LEASE + 1))

    def take_over_and_see_it_running() -> None:
        assert handle_delivery(later, message("b")).outcome == "launched"
        backend.states["run-1"] = RunState(RUN_RUNNING)
        lifecycle.reconcile(later)

    backend.meanwhile = take_over_and_see_it_running
    assert handle_delivery(relay_on(store, backend, results), message("a")).outcome == "launched"
    assert saved(store, naming.launch_record(results, "nightly"))["state"] == "running"


@pytest.mark.parametrize(
    ("taken_over", "failure"),
    [(False, "submit"), (False, "record"), (True, "submit")],
    ids=["claim-then-submit-sent-nothing", "claim-then-record-write-timed-out", "takeover-then-submit-sent-nothing"],
)
def test_a_holder_that_loses_its_claim_then_fails_leaves_the_takers_run_on_record(
    results: str, taken_over: bool, failure: str
):
    # Whatever failed, the holder frees or expires its claim, which by then is the taker's record and must stay
    # as the taker wrote it.
    store = Unreliable()
    if taken_over:
        crashed_claim(store, results)
    backend = SlowSubmit()
    later = relay_on(store, backend, results, at=NOW + timedelta(seconds=LEASE + 1))

    def take_over() -> None:
        handle_delivery(later, message("b"))
        store.fail_next_write = failure == "record"

    if failure == "submit":
        backend.failures.append(BackendUnavailableError("connection refused"))
    backend.meanwhile = take_over
    with pytest.raises(StorageUnavailableError if failure == "record" else BackendUnavailableError):
        handle_delivery(relay_on(store, backend, results), message("a"))
    record = saved(store, naming.launch_record(results, "nightly"))
    assert (record["state"], record["run_id"]) == ("launched", "run-1") and len(backend.launches) == 1


@pytest.mark.integration
def test_a_reconcile_tick_that_read_the_place_before_another_saved_loses_its_save(gcs: GcsBlobStore, results: str):
    backend = FakeBackend()
    relay = relay_on(gcs, backend, results)
    keys = [f"k{n}" for n in range(6)]
    for number, key in enumerate(keys, start=1):
        claim = records.claim_record(
            run_key=key, pipeline="echo", backend="fake", trigger={}, parameters={}, labels={}, now=NOW, lease_seconds=1
        )
        record = records.launched_record(claim, run_id=f"run-{number}", run_url="u", now=NOW)
        gcs.write(naming.launch_record(results, key), records.encode(record), if_generation_match=0)
        backend.states[f"run-{number}"] = RunState("failed", "exit 1", NOW, NOW)
    cursor = naming.reconcile_cursor(results, "fake")
    assert [seen.run_key for seen in lifecycle.reconcile(relay, limit=1).seen] == ["k0"]
    other: list[lifecycle.Tick] = []
    # The other tick runs to its end between this one's read of the place and its save.
    racing = Meanwhile(gcs, cursor, "read", lambda: other.append(lifecycle.reconcile(relay, limit=2)))
    tick = lifecycle.reconcile(relay_on(racing, backend, results), limit=2)
    assert [seen.run_key for seen in other[0].seen] == ["k1", "k2"] and other[0].saved
    assert [seen.run_key for seen in tick.seen] == ["k3", "k4"] and not tick.saved
    assert saved(gcs, cursor)["after"] == "k2"  # the winner's place, whole
    assert [seen.run_key for seen in lifecycle.reconcile(relay, limit=2).seen] == ["k5"]
    assert sorted(backend.state_lookups) == [f"run-{n}" for n in range(1, 7)]  # each run asked, and recorded, once
    assert all(saved(gcs, naming.result_record(results, key))["state"] == "failed" for key in keys)


def test_a_claim_released_between_our_create_and_our_read_is_retried(results: str):
    store = Unreliable()
    relay = relay_on(store, FakeBackend(), results)
    handle_delivery(relay, message("a"))  # leaves a launched record to conflict with
    store.release_on_conflict = True
    with pytest.raises(ClaimHeldError, match="a claim on nightly was just released; retry"):
        handle_delivery(relay, message("b"))


@pytest.mark.parametrize("taken_over", [False, True], ids=["claim", "takeover"])
def test_a_claim_that_cannot_be_freed_runs_out_and_the_backends_failure_is_reported(results: str, taken_over: bool):
    store = Unreliable()
    if taken_over:
        crashed_claim(store, results)
    backend = SlowSubmit()
    backend.failures.append(BackendUnavailableError("connection refused"))
    backend.meanwhile = lambda: setattr(store, "fail_next_write", True)  # freeing the claim times out
    with pytest.raises(BackendUnavailableError, match="connection refused"):
        handle_delivery(relay_on(store, backend, results), message("a"))
    record = saved(store, naming.launch_record(results, "nightly"))
    assert (record["state"], record["trigger"]["event_id"]) == ("launching", "a")
    assert record["lease_expires_at"] == records.timestamp(NOW + timedelta(seconds=LEASE))
