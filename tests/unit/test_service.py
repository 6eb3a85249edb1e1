from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from relay import naming, records
from relay.catalog import Catalog
from relay.config import Settings
from relay.errors import (
    BackendBusyError,
    BackendPausedError,
    BackendUnavailableError,
    BlobRequestError,
    ClaimHeldError,
    LaunchRejectedError,
    LeaseExpiredError,
    PreconditionFailedError,
    StorageUnavailableError,
    SubmitUncertainError,
    TransientError,
)
from relay.events import EventInfo, InlineDelivery, ObjectDelivery, Skip
from relay.ports import Blob, LaunchedRun, LaunchRequest
from relay.service import CAREFUL_FOR, DEFAULT_PAUSE, MAX_PAUSE, Relay, SubmitGate, handle_delivery
from relay.triggers import MAX_TRIGGER_BYTES
from tests.conftest import NOW
from tests.fakes import FakeBackend, MemoryBlobStore

EVENT = EventInfo(id="evt-1", type="google.cloud.storage.object.v1.finalized", source="s", time=NOW)
TRIGGER = {"pipeline": "echo", "parameters": {"message": "hello", "options": {"colour": "blue"}}}


def upload(store: MemoryBlobStore, document: object = TRIGGER, name: str = "t.json") -> ObjectDelivery:
    data = document if isinstance(document, bytes) else json.dumps(document).encode()
    generation = store.write(f"gs://triggers/{name}", data)
    return ObjectDelivery(EVENT, "triggers", name, generation, len(data), "storage-event")


def key_of(delivery: ObjectDelivery) -> str:
    """The run key Relay derives for an uploaded echo trigger (t.json): its pipeline and object version."""
    return naming.derive_run_key("echo", f"gs://triggers/t.json#{delivery.generation}")


def record(store: MemoryBlobStore, uri: str) -> dict[str, object]:
    return records.decode(store.read(uri).data)


def launch_uri(run_key: str) -> str:
    return naming.launch_record("gs://results/relay", run_key)


def rejection_code(store: MemoryBlobStore, run_key: str | None) -> object:
    return record(store, naming.rejection_record("gs://results/relay", str(run_key)))["error"]["code"]  # type: ignore[index]


def claim_of(key: str, *, event_id: str, claimed_at: datetime) -> bytes:
    """The claim another delivery makes: live if claimed_at is recent, a crashed holder's if older than the lease."""
    claim = records.claim_record(
        run_key=key,
        pipeline="echo",
        backend="fake",
        trigger={"event_id": event_id},
        parameters={},
        labels={},
        now=claimed_at,
        lease_seconds=600,
    )
    return records.encode(claim)


def leave_claim(store: MemoryBlobStore, key: str, *, event_id: str, claimed_at: datetime) -> None:
    store.write(launch_uri(key), claim_of(key, event_id=event_id, claimed_at=claimed_at), if_generation_match=0)


class RacedStore:
    """The store, with another delivery's step landing right after this one reads `uri` (found or not), before
    whatever this one writes next: the window a conditional write closes."""

    def __init__(self, inner: MemoryBlobStore, uri: str, meanwhile: Callable[[], object]) -> None:
        self._inner, self._uri, self._meanwhile = inner, uri, meanwhile

    def read(self, uri: str, *, generation: int | None = None) -> Blob:
        try:
            return self._inner.read(uri, generation=generation)
        finally:
            if uri == self._uri:
                self._meanwhile()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def as_if_crashed_after_submit(store: MemoryBlobStore, key: str) -> None:
    """Put a launched record back to what a holder that crashed right after its submit leaves behind."""
    saved = record(store, launch_uri(key))
    saved.update(state="launching", run_id=None, lease_expires_at=records.timestamp(NOW - timedelta(seconds=1)))
    store.write(launch_uri(key), records.encode(saved))


def test_a_trigger_file_becomes_one_run_with_a_launch_record(relay: Relay, store, backend, notifier):
    delivery = upload(store)
    outcome = handle_delivery(relay, delivery)
    assert outcome.outcome == "launched" and outcome.run_id == "run-1"
    key = key_of(delivery)
    assert outcome.run_key == key
    [launched] = backend.launches
    assert launched.parameters == {**TRIGGER["parameters"], "run_key": key, "results_uri": "gs://results/relay"}
    saved = record(store, launch_uri(key))
    assert saved["state"] == "launched" and saved["status"] == 202
    assert saved["run_id"] == "run-1" and saved["run_url"] == "https://pipelines.example/runs/1"
    assert saved["trigger"] == {
        "uri": "gs://triggers/t.json",
        "generation": delivery.generation,
        "event_id": "evt-1",
        "event_type": EVENT.type,
        "event_time": "2026-11-21T12:00:00.000Z",
        "via": "storage-event",
    }
    assert saved["parameters"]["options"] == {"colour": "blue"}
    assert notifier.states == ["launched"]


def test_the_same_object_through_another_path_is_a_duplicate(relay: Relay, store, backend, notifier):
    delivery = upload(store)
    handle_delivery(relay, delivery)
    again = replace(delivery, via="storage-notification", event=replace(EVENT, id="msg-7"))
    outcome = handle_delivery(relay, again)
    assert outcome.outcome == "duplicate" and outcome.run_id == "run-1"
    assert len(backend.launches) == 1 and notifier.states == ["launched"]


def test_concurrent_deliveries_give_one_run(relay: Relay, store, backend):
    delivery = upload(store)
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def deliver() -> None:
        barrier.wait()
        try:
            outcomes.append(handle_delivery(relay, delivery).outcome)
        except ClaimHeldError:
            outcomes.append("retry")

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("launched") == 1 and len(backend.launches) == 1
    # The ones that were told to retry find the run on redelivery.
    assert handle_delivery(relay, delivery).outcome == "duplicate"


def test_a_live_claim_makes_a_redelivery_wait(relay: Relay, store, backend):
    delivery = upload(store)
    key = key_of(delivery)
    leave_claim(store, key, event_id="other", claimed_at=NOW)
    with pytest.raises(
        ClaimHeldError, match=r"being launched by event other until 2026-11-21T12:10:00\.000Z; retry later"
    ):
        handle_delivery(relay, delivery)
    assert backend.launches == []


def test_a_crash_between_claim_and_submit_is_taken_over_after_the_lease(relay: Relay, store, backend):
    delivery = upload(store)
    key = key_of(delivery)
    leave_claim(store, key, event_id="crashed", claimed_at=NOW - timedelta(hours=1))
    outcome = handle_delivery(relay, delivery)
    assert outcome.outcome == "launched" and "after takeover" in outcome.message
    assert backend.lookups == [key] and len(backend.launches) == 1
    takeover = record(store, launch_uri(key))["takeover"]  # what `relay why` tells of it
    assert takeover == {"from_event": "crashed", "claimed_at": "2026-11-21T11:00:00.000Z", "found": False}


def test_a_takeover_loses_to_another_delivery_that_took_the_expired_claim_first(relay: Relay, store, backend):
    delivery = upload(store)
    key = key_of(delivery)
    uri = launch_uri(key)
    leave_claim(store, key, event_id="crashed", claimed_at=NOW - timedelta(hours=1))
    theirs = claim_of(key, event_id="other", claimed_at=NOW)

    def other_takes_over() -> None:  # between this delivery's read of the expired claim and its takeover write
        store.write(uri, theirs, if_generation_match=store.read(uri).generation)

    with pytest.raises(ClaimHeldError, match=rf"^{re.escape(uri)}: another delivery took over run key {key} first$"):
        handle_delivery(replace(relay, store=RacedStore(store, uri, other_takes_over)), delivery)
    assert backend.launches == [] and backend.lookups == []
    assert store.read(uri).data == theirs  # the winner's claim stands


def test_a_rejection_a_concurrent_duplicate_recorded_meanwhile_is_kept(relay: Relay, store):
    delivery = upload(store, {"pipeline": "echo", "parameters": {"message": "hi", "unknown": 1}})
    key = key_of(delivery)
    uri = naming.rejection_record("gs://results/relay", key)
    theirs = b'{"state": "rejected", "trigger": {"event_id": "the duplicate"}}\n'
    raced = RacedStore(store, uri, lambda: store.write(uri, theirs, if_generation_match=0))
    outcome = handle_delivery(replace(relay, store=raced), delivery)
    assert (outcome.outcome, outcome.run_key, outcome.code) == ("rejected", key, "invalid_parameters")
    assert store.read(uri).data == theirs  # recorded once: the first record is never overwritten


def test_a_crash_between_submit_and_record_never_gives_a_second_run(relay: Relay, store, backend):
    delivery = upload(store)
    first = handle_delivery(relay, delivery)
    as_if_crashed_after_submit(store, first.run_key)
    outcome = handle_delivery(relay, delivery)
    assert outcome.outcome == "launched" and outcome.run_id == first.run_id
    assert len(backend.launches) == 1
    assert record(store, launch_uri(first.run_key))["state"] == "launched"


def test_a_submit_that_surely_sent_nothing_frees_the_key_for_the_redelivery(relay: Relay, store, backend):
    delivery = upload(store)
    backend.failures.append(BackendUnavailableError("connection refused"))
    with pytest.raises(BackendUnavailableError):
        handle_delivery(relay, delivery)
    assert store.uris("gs://results/relay/runs/") == []  # the claim is gone, not merely expired
    # So the redelivery claims afresh and submits, without asking the backend first.
    outcome = handle_delivery(relay, delivery)
    assert outcome.outcome == "launched" and backend.lookups == [] and len(backend.launches) == 1


def test_a_taker_whose_submit_sent_nothing_leaves_the_next_one_to_ask_again(relay: Relay, store, backend):
    delivery = upload(store)
    key = key_of(delivery)
    leave_claim(store, key, event_id="crashed", claimed_at=NOW - timedelta(hours=1))
    backend.failures.append(BackendUnavailableError("connection refused"))
    with pytest.raises(BackendUnavailableError):
        handle_delivery(relay, delivery)
    # The crashed holder's submit may still show up: the claim is only expired, and the next taker asks again.
    assert record(store, launch_uri(key))["state"] == "launching"
    assert handle_delivery(relay, delivery).outcome == "launched" and backend.lookups == [key, key]


class CountingBackend(FakeBackend):
    """Counts every call, failed ones included."""

    calls: int = 0

    def launch(self, request: LaunchRequest) -> LaunchedRun:
        self.calls += 1
        return super().launch(request)

    def find_run(self, run_key: str) -> LaunchedRun | None:
        self.calls += 1
        return super().find_run(run_key)


def test_a_refusal_for_load_queues_the_trigger_and_deliveries_meanwhile_queue_without_reaching_the_backend(
    relay: Relay, store
):
    backend = CountingBackend()
    relay = replace(relay, backend=backend, gate=SubmitGate())
    launched = upload(store, name="launched.json")
    handle_delivery(relay, launched)
    backend.failures.append(BackendBusyError("429 slow down", retry_after=30))
    refused = upload(store, name="refused.json")
    outcome = handle_delivery(relay, refused)  # acknowledged: the queue, not a redelivery, tries again
    assert outcome.outcome == "queued" and "refused for load: 429 slow down" in outcome.message
    queued = record(store, launch_uri(str(outcome.run_key)))
    assert (queued["state"], queued["lease_expires_at"], queued["slots"]) == ("queued", None, [])
    hold = record(store, "gs://results/relay/queue/hold-fake.json")
    assert hold["until"] == records.timestamp(NOW + timedelta(seconds=30))
    calls = backend.calls
    assert handle_delivery(relay, refused).outcome == "duplicate"  # already queued
    assert handle_delivery(relay, upload(store, name="new.json")).outcome == "queued"
    # A delivery of a launched trigger is still answered: it needs no backend.
    assert handle_delivery(relay, launched).outcome == "duplicate"
    assert backend.calls == calls
    assert len(store.uris("gs://results/relay/queue/entries/_/")) == 2


def test_the_gate_pauses_for_the_time_asked_then_lets_one_call_through_at_a_time():
    now = [0.0]
    gate = SubmitGate(clock=lambda: now[0])
    with pytest.raises(BackendBusyError), gate.calling():
        raise BackendBusyError("429", retry_after=5)
    now[0] = 4.9
    assert gate.closed() is not None
    now[0] = 5.0
    with gate.calling():
        assert gate.closed() == "the backend refused for load lately: one call at a time, and one is under way"
        with pytest.raises(BackendPausedError), gate.calling():
            pass
    assert gate.closed() is None
    with pytest.raises(BackendBusyError), gate.calling():  # a refusal naming no time pauses for the default
        raise BackendBusyError("503 Quota exceeded")
    now[0] += DEFAULT_PAUSE
    assert gate.closed() is None
    now[0] += CAREFUL_FOR
    with gate.calling(), gate.calling():  # the backend has been fine for a while: calls overlap again
        pass


def test_a_drain_holding_a_claimed_run_queues_up_behind_the_call_under_way_and_a_refusal_meanwhile_stops_it():
    now = [0.0]
    gate = SubmitGate(clock=lambda: now[0])
    with pytest.raises(BackendBusyError), gate.calling():
        raise BackendBusyError("429", retry_after=1)
    now[0] = 1.0
    order: list[str] = []
    under_way, done = threading.Event(), threading.Event()

    def queued_up() -> None:
        under_way.wait()
        with gate.calling(queue_up=True):
            order.append("queued up")
        done.set()

    waiter = threading.Thread(target=queued_up)
    waiter.start()
    with gate.calling():  # one call at a time: the drain's submit waits for this one, refused by nothing
        under_way.set()
        assert not done.wait(0.05)  # still waiting (no timing is measured: only that it has not gone first)
        order.append("first")
    waiter.join()
    assert order == ["first", "queued up"]
    # A refusal while it waits pauses the gate: the waiting submit is refused unsent, and the drain puts it back.
    refused: list[BaseException] = []

    def refused_meanwhile() -> None:
        under_way.wait()
        try:
            with gate.calling(queue_up=True):
                order.append("sent")
        except BackendPausedError as error:
            refused.append(error)

    under_way.clear()
    waiter = threading.Thread(target=refused_meanwhile)
    waiter.start()
    with pytest.raises(BackendBusyError), gate.calling():
        under_way.set()
        raise BackendBusyError("429", retry_after=1)
    waiter.join()
    assert len(refused) == 1 and order == ["first", "queued up"]


def test_a_pause_is_never_longer_than_the_cap(relay: Relay):
    now = [0.0]
    gate = SubmitGate(clock=lambda: now[0])
    with pytest.raises(BackendBusyError), gate.calling():
        raise BackendBusyError("429", retry_after=86400)
    now[0] = MAX_PAUSE
    assert gate.closed() is None


def test_a_trigger_storage_refuses_to_address_is_rejected_not_retried(relay: Relay, store, backend):
    class Refusing(MemoryBlobStore):
        def read(self, uri: str, *, generation: int | None = None) -> Blob:
            if uri.startswith("gs://triggers/"):
                raise BlobRequestError(f"{uri}: Cloud Storage answered 400: invalid generation ID")
            return super().read(uri, generation=generation)

    refusing = Refusing()
    refusing.write("gs://catalog/echo.yaml", store.read("gs://catalog/echo.yaml").data)
    delivery = replace(upload(refusing), generation=10**29)
    outcome = handle_delivery(replace(relay, store=refusing, catalog=Catalog(refusing, "gs://catalog")), delivery)
    assert outcome.outcome == "rejected" and "invalid generation ID" in outcome.message and backend.launches == []
    assert rejection_code(refusing, outcome.run_key) == "trigger_not_found"
    assert outcome.message.startswith(
        "gs://triggers/t.json: 1 problem(s): (object): expected an object Cloud Storage can"
    )


def test_a_refused_submit_becomes_a_rejection_and_frees_the_key(relay: Relay, store, backend, notifier):
    delivery = upload(store)
    backend.failures.append(LaunchRejectedError("KFP answered 400: bad spec"))
    outcome = handle_delivery(relay, delivery)
    key = key_of(delivery)
    assert (outcome.outcome, outcome.run_key, outcome.pipeline) == ("rejected", key, "echo")
    rejection = record(store, naming.rejection_record("gs://results/relay", key))
    assert rejection["error"]["code"] == "launch_rejected" and "bad spec" in rejection["message"]
    assert rejection["pipeline"] == "echo"
    assert store.uris("gs://results/relay/runs/") == []
    assert notifier.states == ["rejected"]


@pytest.mark.parametrize(
    ("document", "code", "fragment"),
    [
        (b"{not json", "invalid_trigger", "expected valid JSON"),
        ({"pipeline": "nope"}, "unknown_pipeline", "expected a pipeline in the catalog, found 'nope', which it"),
        (
            {"pipeline": "echo", "parameters": {"count": "3"}},
            "invalid_parameters",
            "parameters.count: expected an integer",
        ),
        ({"pipeline": "echo", "parameters": {"message": "m", "run_key": "x"}}, "invalid_trigger", "Relay fills it"),
    ],
)
def test_bad_triggers_get_one_rejection_record_and_no_run(
    relay: Relay, store, backend, notifier, document, code, fragment
):
    delivery = upload(store, document)
    outcome = handle_delivery(relay, delivery)
    assert outcome.outcome == "rejected" and fragment in outcome.message
    [uri] = store.uris("gs://results/relay/")
    assert uri == naming.rejection_record("gs://results/relay", outcome.run_key)
    rejection = record(store, uri)
    assert rejection["state"] == "rejected" and rejection["status"] == 400 and rejection["error"]["code"] == code
    assert rejection["error"]["problems"] and rejection["trigger"]["uri"] == "gs://triggers/t.json"
    assert handle_delivery(relay, delivery).outcome == "rejected"  # a redelivery: still one record, one message
    assert store.uris("gs://results/relay/") == [uri] and notifier.states == ["rejected"]
    assert backend.launches == []


@pytest.mark.parametrize(("name", "document"), [("t.json", b""), ("notes.txt", TRIGGER), ("t.json.part", TRIGGER)])
def test_partial_uploads_and_stray_files_are_skipped_with_a_skip_record_only(
    relay: Relay, store, backend, name, document
):
    outcome = handle_delivery(relay, upload(store, document, name))
    assert outcome.outcome == "skipped" and backend.launches == []
    assert store.uris("gs://results/") == [naming.skip_record("gs://results/relay", str(outcome.run_key))]


def test_an_oversized_trigger_is_rejected_without_reading_it(relay: Relay, store):
    delivery = replace(upload(store), size=MAX_TRIGGER_BYTES + 1)
    store.delete(delivery.uri)  # a read would now fail: the size alone decides
    outcome = handle_delivery(relay, delivery)
    assert outcome.outcome == "rejected" and "at most 1048576 bytes" in outcome.message
    assert rejection_code(store, outcome.run_key) == "too_large"


def test_an_overwritten_generation_is_rejected_as_gone(relay: Relay, store):
    delivery = upload(store)
    upload(store, {**TRIGGER, "labels": {"v": "2"}})
    outcome = handle_delivery(relay, delivery)
    assert outcome.outcome == "rejected" and f"no object at generation {delivery.generation}" in outcome.message
    assert rejection_code(store, outcome.run_key) == "trigger_not_found"


def test_a_trigger_uri_without_generation_is_keyed_by_the_current_one(relay: Relay, store):
    delivery = upload(store)
    by_uri = replace(delivery, generation=None, size=None, via="trigger-uri")
    assert handle_delivery(relay, by_uri).outcome == "launched"
    assert handle_delivery(relay, delivery).outcome == "duplicate"


def test_stale_events_are_dropped_with_a_record_unless_already_launched(relay: Relay, store, backend):
    old = replace(EVENT, time=NOW - timedelta(hours=2))
    stale = replace(upload(store), event=old)
    outcome = handle_delivery(relay, stale)
    assert outcome.outcome == "dropped" and "expected an event at most 3600 s old, found 7200 s old" in outcome.message
    assert (
        record(store, naming.rejection_record("gs://results/relay", outcome.run_key))["error"]["code"] == "stale_event"
    )
    fresh = upload(store, name="u.json")
    handle_delivery(relay, fresh)
    assert handle_delivery(relay, replace(fresh, event=old)).outcome == "duplicate"
    assert len(backend.launches) == 1


def test_an_explicit_run_key_is_the_identity(relay: Relay, store, backend):
    handle_delivery(relay, upload(store, {**TRIGGER, "run_key": "nightly-2026-11-21"}, "a.json"))
    outcome = handle_delivery(relay, upload(store, {**TRIGGER, "run_key": "nightly-2026-11-21"}, "b.json"))
    assert outcome.outcome == "duplicate" and outcome.run_key == "nightly-2026-11-21"
    assert len(backend.launches) == 1


def test_inline_messages_are_keyed_by_message_id_and_nonce_or_publish_time(relay: Relay, backend):
    inline = InlineDelivery(EVENT, "projects/proj-p/topics/tee", "42", json.dumps(TRIGGER).encode(), "json")
    outcome = handle_delivery(relay, inline)
    assert outcome.run_key == naming.derive_run_key("echo", "pubsub:projects/proj-p/topics/tee#42")
    assert handle_delivery(relay, inline).outcome == "duplicate" and len(backend.launches) == 1
    # The emulator's message 42 again after a restart, told apart by its publish time (or nonce).
    reused = handle_delivery(relay, replace(inline, nonce_or_publish_time="2026-11-29T21:58:21.511Z"))
    assert reused.outcome == "launched" and len(backend.launches) == 2
    assert reused.run_key == naming.derive_run_key(
        "echo", "pubsub:projects/proj-p/topics/tee#42@2026-11-29T21:58:21.511Z"
    )


def test_a_failed_notification_is_retried_without_a_second_run(relay: Relay, store, backend, notifier):
    delivery = upload(store)
    notifier.failures.append(TransientError("topic unavailable"))
    with pytest.raises(TransientError):
        handle_delivery(relay, delivery)
    outcome = handle_delivery(relay, delivery)
    assert outcome.outcome == "launched" and len(backend.launches) == 1 and notifier.states == ["launched"]


def test_without_a_notifier_records_are_still_written(store, backend):
    relay = Relay(
        settings=Settings(results_uri="gs://results/relay", catalog_uri="gs://catalog"),
        store=store,
        catalog=Catalog(store, "gs://catalog"),
        backend=backend,
        clock=lambda: NOW,
    )
    assert handle_delivery(relay, upload(store)).outcome == "launched"


class Recorded:
    """Relay's service with a real-time clock, for the tests that involve the submit deadline."""

    @staticmethod
    def relay(store: MemoryBlobStore, backend: object, lease: float = 600) -> Relay:
        settings = Settings(results_uri="gs://results/relay", catalog_uri="gs://catalog", claim_lease=lease)
        return Relay(settings=settings, store=store, catalog=Catalog(store, "gs://catalog"), backend=backend)  # type: ignore[arg-type]


def test_the_submit_carries_a_deadline_a_margin_before_the_lease_ends(store: MemoryBlobStore, backend: FakeBackend):
    relay = Recorded.relay(store, backend, lease=600)
    delivery = replace(upload(store), event=replace(EVENT, time=datetime.now(UTC)))
    handle_delivery(relay, delivery)
    [launched] = backend.launches
    claimed = record(store, launch_uri(launched.run_key))
    lease_end = records.parse_timestamp(str(claimed["lease_expires_at"]))
    assert launched.deadline == lease_end - timedelta(seconds=60)


def test_a_holder_past_its_deadline_does_not_submit_and_frees_the_claim(store: MemoryBlobStore):
    class Slow(FakeBackend):
        def launch(self, request: LaunchRequest) -> LaunchedRun:
            if request.deadline and request.deadline - datetime.now(UTC) < timedelta(seconds=1):
                time.sleep(0.05)  # a lock wait or a slow lookup, long enough to pass a short deadline
            request.check_deadline()
            return super().launch(request)

    backend = Slow()
    delivery = replace(upload(store), event=replace(EVENT, time=datetime.now(UTC)))
    with pytest.raises(LeaseExpiredError):
        handle_delivery(Recorded.relay(store, backend, lease=0.001), delivery)
    assert backend.launches == []
    assert store.uris("gs://results/relay/runs/") == []  # nothing was sent: the claim is gone
    assert handle_delivery(Recorded.relay(store, backend), delivery).outcome == "launched"
    assert backend.lookups == [] and len(backend.launches) == 1


def test_an_uncertain_submit_keeps_the_claim_until_its_lease_runs_out(relay: Relay, store, backend):
    delivery = upload(store)
    backend.failures.append(SubmitUncertainError("504 from the load balancer"))
    with pytest.raises(SubmitUncertainError):
        handle_delivery(relay, delivery)
    with pytest.raises(ClaimHeldError):
        handle_delivery(relay, delivery)
    later = replace(relay, clock=lambda: NOW + timedelta(seconds=601))
    outcome = handle_delivery(replace(later, settings=replace(relay.settings, max_event_age=7200)), delivery)
    assert outcome.outcome == "launched" and backend.lookups == [outcome.run_key] and len(backend.launches) == 1


def test_a_stale_redelivery_finishes_a_crashed_claim_instead_of_dropping_it(relay: Relay, store, backend):
    delivery = upload(store)
    key = key_of(delivery)
    leave_claim(store, key, event_id="crashed", claimed_at=NOW - timedelta(hours=3))
    stale = replace(delivery, event=replace(EVENT, time=NOW - timedelta(hours=2)))
    outcome = handle_delivery(relay, stale)
    assert outcome.outcome == "launched" and backend.lookups == [key]
    assert store.uris("gs://results/relay/rejected/") == []


def test_a_stale_event_whose_trigger_cannot_be_read_is_dropped_with_a_record(relay: Relay, store):
    class Unreadable(MemoryBlobStore):
        def read(self, uri: str, *, generation: int | None = None) -> Blob:
            if uri.startswith("gs://triggers/"):
                raise StorageUnavailableError(f"{uri}: 403")
            return super().read(uri, generation=generation)

    unreadable = Unreadable()
    unreadable.write("gs://catalog/echo.yaml", store.read("gs://catalog/echo.yaml").data)
    broken = replace(relay, store=unreadable, catalog=Catalog(unreadable, "gs://catalog"))
    delivery = upload(unreadable)
    with pytest.raises(StorageUnavailableError):
        handle_delivery(broken, delivery)
    outcome = handle_delivery(broken, replace(delivery, event=replace(EVENT, time=NOW - timedelta(hours=2))))
    assert outcome.outcome == "dropped"
    rejection = record(unreadable, naming.rejection_record("gs://results/relay", outcome.run_key))
    assert rejection["error"]["code"] == "stale_event"


def test_a_takeover_that_finds_the_run_records_the_claim_that_submitted_it(relay: Relay, store, backend):
    first = upload(store, {**TRIGGER, "run_key": "nightly-1", "labels": {"file": "a"}}, "a.json")
    handle_delivery(relay, first)
    as_if_crashed_after_submit(store, "nightly-1")
    second = upload(store, {**TRIGGER, "run_key": "nightly-1", "labels": {"file": "b"}}, "b.json")
    outcome = handle_delivery(relay, second)
    assert outcome.outcome == "launched" and len(backend.launches) == 1
    assert record(store, launch_uri("nightly-1"))["labels"] == {"file": "a"}


def test_a_claim_write_retried_after_a_lost_reply_is_still_ours(relay: Relay, store, backend):
    class LostReply(MemoryBlobStore):
        def write(self, uri: str, data: bytes, *, if_generation_match: int | None = None) -> int:
            generation = super().write(uri, data, if_generation_match=if_generation_match)
            if if_generation_match == 0 and uri.endswith("launch.json"):
                raise PreconditionFailedError(uri)  # what the client's retry of a create that went through sees
            return generation

    lossy = LostReply()
    lossy.write("gs://catalog/echo.yaml", store.read("gs://catalog/echo.yaml").data)
    outcome = handle_delivery(replace(relay, store=lossy, catalog=Catalog(lossy, "gs://catalog")), upload(lossy))
    assert outcome.outcome == "launched" and len(backend.launches) == 1


def test_objects_under_the_results_or_catalog_location_are_never_triggers(relay: Relay, store, backend):
    for uri in ("gs://results/relay/runs/k/launch.json", "gs://catalog/echo.yaml"):
        bucket, name = naming.split_gs_uri(uri)
        delivery = ObjectDelivery(EVENT, bucket, name, 1, 10, "storage-event")
        outcome = handle_delivery(relay, delivery)
        assert outcome.outcome == "skipped" and "not a trigger" in outcome.message
    assert backend.launches == []


@pytest.mark.parametrize(
    ("raw", "name", "fragment"),
    [
        (b"? [a]\n: 1\n", "t.yaml", "expected valid YAML"),
        (b"[" * 5000 + b"]" * 5000, "t.json", "expected at most 64 levels of lists and mappings"),
        (b"pipeline: echo\nparameters: {message: m, options: {blob: !!binary aGk=}}\n", "t.yaml", "JSON values only"),
        (b"pipeline: echo\nparameters: {message: m, items: [.nan]}\n", "t.yaml", "JSON values only"),
        (b"a: &x [1, 2]\nb: *x\n", "t.yaml", "aliases (*name) are not allowed"),
    ],
)
def test_documents_json_cannot_hold_are_rejected(relay: Relay, store, backend, raw: bytes, name: str, fragment: str):
    outcome = handle_delivery(relay, upload(store, raw, name))
    assert outcome.outcome == "rejected" and fragment in outcome.message and backend.launches == []


def test_a_message_carrying_its_trigger_is_labelled_as_a_message(relay: Relay, backend):
    document = {**TRIGGER, "labels": {"team": "assay"}}
    handle_delivery(
        relay, InlineDelivery(EVENT, "projects/proj-p/topics/tee", "42", json.dumps(document).encode(), "json")
    )
    [launched] = backend.launches
    assert launched.labels == {
        "team": "assay",
        "relay-tenant": "",
        "relay-pipeline": "echo",
        "relay-trigger": "message",
    }


def test_the_backend_is_sent_the_catalogs_package_spec_and_the_triggers_labels(relay: Relay, store, backend):
    handle_delivery(relay, upload(store, {**TRIGGER, "labels": {"team": "assay", "batch": "7"}}))
    [launched] = backend.launches
    package = store.read("gs://catalog/echo.yaml").data
    assert (launched.pipeline, launched.package, launched.spec) == ("echo", package, yaml.safe_load(package))
    own = {"relay-tenant": "", "relay-pipeline": "echo", "relay-trigger": "object"}  # Relay's, on every run
    assert launched.labels == {"team": "assay", "batch": "7", **own}


def test_a_takeover_that_finds_no_run_records_the_new_claims_trigger(relay: Relay, store, backend):
    delivery = upload(store, {**TRIGGER, "labels": {"by": "new"}})
    key = key_of(delivery)
    leave_claim(store, key, event_id="crashed", claimed_at=NOW - timedelta(hours=1))
    outcome = handle_delivery(relay, delivery)
    assert outcome.outcome == "launched" and backend.lookups == [key]
    assert outcome.message == "launched echo as run run-1 (after takeover)"
    saved = records.decode(store.read(launch_uri(key)).data)
    # The run is this delivery's: the record names its event, parameters and labels, as the submit did.
    assert saved["trigger"]["event_id"] == "evt-1" and saved["labels"] == {"by": "new"}
    assert saved["parameters"] == backend.launches[0].parameters


@pytest.mark.parametrize(("lease", "margin"), [(40.0, 10.0), (240.0, 60.0), (600.0, 60.0)])
def test_a_short_lease_leaves_a_quarter_of_itself_after_the_submit_deadline(
    relay: Relay, store, backend, lease: float, margin: float
):
    short = replace(relay, settings=replace(relay.settings, claim_lease=lease))
    handle_delivery(short, upload(store))
    [launched] = backend.launches
    assert launched.deadline == NOW + timedelta(seconds=lease - margin)
    assert record(store, launch_uri(launched.run_key))["lease_expires_at"] == records.timestamp(
        NOW + timedelta(seconds=lease)
    )


def test_a_trigger_of_exactly_the_size_limit_is_read_and_one_byte_more_is_refused(relay: Relay, store, backend):
    document = json.dumps(TRIGGER).encode()
    at_limit = upload(store, document + b" " * (MAX_TRIGGER_BYTES - len(document)), "limit.json")
    assert at_limit.size == MAX_TRIGGER_BYTES
    assert handle_delivery(relay, at_limit).outcome == "launched"
    over = upload(store, document + b" " * (MAX_TRIGGER_BYTES + 1 - len(document)), "over.json")
    outcome = handle_delivery(relay, over)
    assert (outcome.outcome, outcome.code) == ("rejected", "too_large") and len(backend.launches) == 1
    assert rejection_code(store, outcome.run_key) == "too_large"


def test_a_rejection_names_the_event_trigger_run_key_and_pipeline(relay: Relay, store):
    delivery = upload(store, {"pipeline": "echo", "parameters": {"count": 1}})
    outcome = handle_delivery(relay, delivery)
    key = key_of(delivery)
    assert (outcome.outcome, outcome.event_id, outcome.trigger_uri, outcome.run_key, outcome.run_id) == (
        "rejected",
        "evt-1",
        "gs://triggers/t.json",
        key,
        None,
    )
    assert (outcome.pipeline, outcome.code) == ("echo", "invalid_parameters")
    saved = records.decode(store.read(naming.rejection_record("gs://results/relay", key)).data)
    assert (saved["run_key"], saved["pipeline"]) == (key, "echo")
    assert saved["message"] == outcome.message and outcome.message.startswith("gs://triggers/t.json: 1 problem(s):")


def test_a_stale_drop_says_how_old_the_event_was_on_its_record(relay: Relay, store):
    delivery = replace(upload(store), event=replace(EVENT, time=NOW - timedelta(hours=2)))
    outcome = handle_delivery(relay, delivery)
    key = key_of(delivery)
    assert (outcome.outcome, outcome.run_key, outcome.pipeline) == ("dropped", key, "echo")
    saved = records.decode(store.read(naming.rejection_record("gs://results/relay", key)).data)
    assert saved["pipeline"] == "echo" and saved["error"]["problems"] == [
        {"field": "(event)", "expected": "an event at most 3600 s old", "found": "7200 s old"}
    ]
    assert (
        outcome.message
        == "gs://triggers/t.json: 1 problem(s): (event): expected an event at most 3600 s old, found 7200 s old"
    )


@pytest.mark.parametrize("results_uri", ["gs://results/relay", "gs://results/relay/", "gs://results/relayX/"])
def test_relays_own_objects_are_named_as_such_when_skipped(relay: Relay, backend, results_uri: str):
    relay = replace(relay, settings=replace(relay.settings, results_uri=results_uri))
    skipped = {}
    own = results_uri.rstrip("/") + "/runs/k/launch.json"
    for uri in (own, "gs://catalog/echo.yaml"):
        bucket, name = naming.split_gs_uri(uri)
        skipped[uri] = handle_delivery(relay, ObjectDelivery(EVENT, bucket, name, 1, 10, "storage-event")).message
    assert skipped == {
        own: f"a Relay record under {results_uri}, not a trigger",
        "gs://catalog/echo.yaml": "a catalog entry under gs://catalog, not a trigger",
    }
    # A sibling that merely shares the prefix's letters is a trigger like any other.
    sibling = handle_delivery(relay, ObjectDelivery(EVENT, "results", "relay-2/t.json", 1, 10, "storage-event"))
    assert "not a trigger" not in sibling.message


def test_while_paused_a_new_trigger_is_queued_unclaimed_and_a_launched_run_is_answered(relay: Relay, store, backend):
    class Writes(MemoryBlobStore):
        written: list[str]

        def write(self, uri: str, data: bytes, *, if_generation_match: int | None = None) -> int:
            self.written.append(uri)
            return super().write(uri, data, if_generation_match=if_generation_match)

    counting = Writes()
    counting.written = []
    counting.write("gs://catalog/echo.yaml", store.read("gs://catalog/echo.yaml").data)
    relay = replace(relay, store=counting, catalog=Catalog(counting, "gs://catalog"), gate=SubmitGate())
    first = upload(counting, name="launched.json")
    launched = handle_delivery(relay, first)
    held = upload(counting, name="held.json")
    held_key = naming.derive_run_key("echo", f"gs://triggers/held.json#{held.generation}")
    leave_claim(counting, held_key, event_id="other", claimed_at=NOW)
    with pytest.raises(BackendBusyError), relay.gate.calling():
        raise BackendBusyError("429", retry_after=30)
    before = set(counting.uris("gs://results/"))
    new = upload(counting, name="new.json")
    queued = handle_delivery(relay, new)
    assert (queued.outcome, queued.message) == ("queued", "queued echo: " + QUEUED_FOR_PAUSE)
    # A claim still being launched is no answer: the delivery waits for it to resolve.
    with pytest.raises(ClaimHeldError):
        handle_delivery(relay, held)
    duplicate = handle_delivery(relay, first)
    assert (duplicate.outcome, duplicate.run_key, duplicate.run_id) == ("duplicate", launched.run_key, "run-1")
    assert duplicate.message == f"already launched: {launched.run_key} (run run-1)"
    added = set(counting.uris("gs://results/")) - before
    assert sorted(uri.rsplit("/", 2)[-2] for uri in added) == ["_", str(queued.run_key)]  # its place; its record
    assert record(counting, launch_uri(held_key))["trigger"]["event_id"] == "other"  # type: ignore[index]


QUEUED_FOR_PAUSE = "the fake backend refused for load lately: the backend asked for a pause: 30.0 s left"


def test_a_takeover_whose_submit_is_uncertain_leaves_its_own_claim_to_run_out(relay: Relay, store, backend):
    delivery = upload(store)
    key = key_of(delivery)
    leave_claim(store, key, event_id="crashed", claimed_at=NOW - timedelta(hours=1))
    backend.failures.append(SubmitUncertainError("504 from the load balancer"))
    with pytest.raises(SubmitUncertainError):
        handle_delivery(relay, delivery)
    saved = record(store, launch_uri(key))
    assert (saved["state"], saved["trigger"]["event_id"]) == ("launching", "evt-1")  # type: ignore[index]
    assert saved["lease_expires_at"] == "2026-11-21T12:10:00.000Z"
    with pytest.raises(ClaimHeldError, match="being launched by event evt-1"):
        handle_delivery(relay, delivery)


def test_every_outcome_names_its_event_and_trigger(relay: Relay, store):
    delivery = upload(store)
    launched = handle_delivery(relay, delivery)
    duplicate = handle_delivery(relay, delivery)
    stale_duplicate = handle_delivery(relay, replace(delivery, event=replace(EVENT, time=NOW - timedelta(hours=2))))
    key = launched.run_key
    assert (launched.pipeline, launched.message) == ("echo", "launched echo as run run-1")
    for outcome in (duplicate, stale_duplicate):
        assert (outcome.outcome, outcome.run_key, outcome.run_id, outcome.pipeline) == (
            "duplicate",
            key,
            "run-1",
            "echo",
        )
        assert outcome.message == f"already launched: {key} (run run-1)"
        assert (outcome.event_id, outcome.trigger_uri) == ("evt-1", "gs://triggers/t.json")
    skips = [
        handle_delivery(relay, upload(store, b"", "empty.json")),
        handle_delivery(relay, upload(store, TRIGGER, "notes.txt")),
        handle_delivery(relay, replace(upload(store, b"", "unsized.json"), size=None, via="trigger-uri")),
        handle_delivery(relay, Skip(EVENT, "gs://triggers/odd", "no object in the event", malformed=True)),
    ]
    assert [(s.outcome, s.event_id, s.trigger_uri, s.message, s.severity_override) for s in skips] == [
        (
            "skipped",
            "evt-1",
            "gs://triggers/empty.json",
            "zero-byte object: an upload in progress or a placeholder",
            None,
        ),
        (
            "skipped",
            "evt-1",
            "gs://triggers/notes.txt",
            "not a trigger file: the name does not end in .json, .yaml or .yml",
            None,
        ),
        (
            "skipped",
            "evt-1",
            "gs://triggers/unsized.json",
            "zero-byte object: an upload in progress or a placeholder",
            None,
        ),
        ("skipped", "evt-1", "gs://triggers/odd", "no object in the event", "ERROR"),
    ]


def problems_of(store: MemoryBlobStore, outcome: object) -> list[dict[str, str]]:
    run_key = getattr(outcome, "run_key", None)
    saved = records.decode(store.read(naming.rejection_record("gs://results/relay", str(run_key))).data)
    return list(saved["error"]["problems"])


def test_why_a_trigger_could_not_be_read_is_on_its_record(relay: Relay, store):
    big = handle_delivery(relay, replace(upload(store, name="big.json"), size=MAX_TRIGGER_BYTES + 1))
    assert big.message.startswith("gs://triggers/big.json: 1 problem(s): ")
    assert problems_of(store, big) == [
        {"field": "(document)", "expected": "at most 1048576 bytes", "found": "1048577 bytes"}
    ]
    gone = upload(store, name="gone.json")
    upload(store, {**TRIGGER, "labels": {"v": "2"}}, "gone.json")
    overwritten = handle_delivery(relay, gone)
    assert overwritten.message.startswith("gs://triggers/gone.json: ")
    assert problems_of(store, overwritten) == [
        {"field": "(object)", "expected": "the trigger object", "found": f"no object at generation {gone.generation}"}
    ]
    # A trigger_uri naming an object that is not there: no generation to name, keyed as generation 0.
    missing = ObjectDelivery(EVENT, "triggers", "missing.json", None, None, "trigger-uri")
    outcome = handle_delivery(relay, missing)
    assert outcome.run_key == naming.derive_run_key(naming.UNKNOWN_PIPELINE, "gs://triggers/missing.json#0")
    assert problems_of(store, outcome) == [
        {"field": "(object)", "expected": "the trigger object", "found": "no object"}
    ]


def test_a_generation_named_without_its_size_is_read_at_that_generation_or_not_at_all(relay: Relay, store, backend):
    old = upload(store)
    upload(store, {**TRIGGER, "labels": {"v": "2"}})
    outcome = handle_delivery(relay, replace(old, size=None, via="trigger-uri"))
    assert (outcome.outcome, outcome.code) == ("rejected", "trigger_not_found") and backend.launches == []


@pytest.mark.parametrize(
    ("document", "code", "pipeline"),
    [
        ({"pipeline": "nope"}, "unknown_pipeline", "nope"),
        ({"pipeline": "echo", "parameters": {"count": "3"}}, "invalid_parameters", "echo"),
        (b"{not json", "invalid_trigger", None),
    ],
)
def test_a_rejection_names_the_pipeline_the_trigger_named(relay: Relay, store, document, code, pipeline):
    outcome = handle_delivery(relay, upload(store, document))
    assert (outcome.code, outcome.pipeline) == (code, pipeline)
    assert outcome.message.startswith("gs://triggers/t.json: ")
    saved = records.decode(store.read(naming.rejection_record("gs://results/relay", str(outcome.run_key))).data)
    assert saved["pipeline"] == pipeline


def test_an_event_exactly_as_old_as_allowed_is_not_stale(relay: Relay, store):
    at_limit = replace(upload(store, name="a.json"), event=replace(EVENT, time=NOW - timedelta(seconds=3600)))
    assert handle_delivery(relay, at_limit).outcome == "launched"
    past = replace(upload(store, name="b.json"), event=replace(EVENT, time=NOW - timedelta(seconds=3601)))
    assert handle_delivery(relay, past).outcome == "dropped"


def test_a_gate_never_refused_lets_calls_overlap_from_the_start():
    gate = SubmitGate(clock=lambda: 0.0)
    with gate.calling(), gate.calling():
        assert gate.closed() is None
