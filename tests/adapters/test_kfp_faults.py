"""The launch path against a misbehaving KFP (real KfpBackend, loopback KFP API): a submit that stalls past the
lease, and a backend that admits a fixed rate. Deliveries are redelivered until acknowledged, as Pub/Sub does."""

from __future__ import annotations

import heapq
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import pytest

from relay import drain, queue
from relay.adapters import factory
from relay.catalog import Catalog
from relay.config import Settings
from relay.errors import TransientError
from relay.events import EventInfo, ObjectDelivery
from relay.service import Relay
from tests.fakes import MemoryBlobStore
from tests.integration.support import eventually
from tests.servers.kfp import KfpApiServer

TOKEN = "kfp-token"
RUNS = "/apis/v2beta1/runs"


@pytest.fixture
def kfp() -> Iterator[KfpApiServer]:
    with KfpApiServer(token_check=lambda token: token == TOKEN) as server:
        yield server
    assert server.errors == []


def relay_on(kfp: KfpApiServer, store: MemoryBlobStore, lease: float) -> Relay:
    """A Relay as runtime builds it for RELAY_BACKEND=kfp (its session, timeouts within the submit margin)."""
    settings = Settings(
        results_uri="gs://results/relay",
        catalog_uri="gs://catalog",
        backend="kfp",
        kfp_host=kfp.url,
        auth="static",
        static_token=TOKEN,
        claim_lease=lease,
    )
    return Relay(
        settings=settings, store=store, catalog=Catalog(store, "gs://catalog"), backend=factory.backend(settings)
    )


def upload(store: MemoryBlobStore, name: str) -> ObjectDelivery:
    data = json.dumps({"pipeline": "echo", "parameters": {"message": name}}).encode()
    name = f"{name}.json"
    generation = store.write(f"gs://triggers/{name}", data)
    event = EventInfo(id=name, type="google.cloud.storage.object.v1.finalized", source="s", time=datetime.now(UTC))
    return ObjectDelivery(event, "triggers", name, generation, len(data), "storage-event")


def deliver_until_acknowledged(
    relay: Relay, deliveries: Sequence[ObjectDelivery], *, concurrency: int = 8, redeliver_after: float = 0.05
) -> list[list[str]]:
    """Each delivery's outcomes, in order: handled by `concurrency` threads (an instance's), each raised one put
    back to come again `redeliver_after` seconds later, until every one has been acknowledged."""
    seen: list[list[str]] = [[] for _ in deliveries]
    due = [(0.0, index) for index in range(len(deliveries))]
    pending = len(deliveries)
    lock = threading.Condition()

    def work() -> None:
        nonlocal pending
        while True:
            with lock:
                while pending and (not due or due[0][0] > time.monotonic()):
                    lock.wait(timeout=max(0.001, due[0][0] - time.monotonic()) if due else 0.05)
                if not pending:
                    return
                _, index = heapq.heappop(due)
            try:
                outcome = drain.deliver(relay, deliveries[index])  # as the function entry points do
            except TransientError as error:
                with lock:
                    seen[index].append(type(error).__name__)
                    heapq.heappush(due, (time.monotonic() + redeliver_after, index))
                    lock.notify()
                continue
            with lock:
                seen[index].append(outcome.outcome)
                pending -= 1
                lock.notify_all()

    threads = [threading.Thread(target=work, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert pending == 0, seen
    return seen


@pytest.mark.parametrize("create", [False, True], ids=["hangs-then-fails", "creates-the-run-then-answers-late"])
def test_a_submit_stalled_past_the_lease_gives_one_run_and_holds_up_no_other_launch(
    kfp: KfpApiServer, store: MemoryBlobStore, create: bool
):
    relay = relay_on(kfp, store, lease=4.0)  # submits time out within the 1 s margin
    release = threading.Event()
    kfp.stall_next_run(create=create, release=release)
    stalled: list[list[str]] = []
    try:
        first = threading.Thread(target=lambda: stalled.extend(deliver_until_acknowledged(relay, [upload(store, "a")])))
        first.start()
        eventually(lambda: kfp.stalled == 1, what="the first submit to be held")
        others = deliver_until_acknowledged(relay, [upload(store, name) for name in "bcdef"])
        assert [outcomes[-1] for outcomes in others] == ["launched"] * 5
        first.join(timeout=60)
        # Everything launched, the stalled trigger too (after its lease ran out), while its first submit is held.
        assert kfp.stalled == 1
    finally:
        release.set()
    [outcomes] = stalled
    assert outcomes[0] == "SubmitUncertainError" and outcomes[-1] == "launched"
    assert set(outcomes[1:-1]) <= {"ClaimHeldError"}  # the claim was kept until its lease ran out
    assert Counter(run["display_name"] for run in kfp.runs).most_common(1)[0][1] == 1 and len(kfp.runs) == 6


def test_a_rate_limited_backend_gets_each_trigger_once_at_about_its_rate(store: MemoryBlobStore):
    rate, triggers, concurrency = 20.0, 60, 8
    with KfpApiServer(token_check=lambda token: token == TOKEN, admit_rate=rate) as kfp:
        relay = relay_on(kfp, store, lease=600)
        deliveries = [upload(store, f"t{n}") for n in range(triggers)]
        started = time.monotonic()
        outcomes = deliver_until_acknowledged(relay, deliveries * 2, concurrency=concurrency)  # each one twice
        # What the backend refused waits in the queue, acknowledged; drains (a tick's, a later delivery's) launch
        # it at the pace the backend admits, after the Retry-After each refusal asked for.

        def emptied() -> bool:
            drain.drain(relay)
            return not any(queue.entries(store, relay.settings.results_uri))

        eventually(emptied, timeout=60, what="the queue drained")
        drained = time.monotonic() - started
        admitted, refused = kfp.run_creations
        lookups = kfp.requests_to(RUNS, "GET")
    assert Counter(run["display_name"] for run in kfp.runs).most_common(1)[0][1] == 1 and len(kfp.runs) == triggers
    # No delivery was bounced for load: each was launched, queued or found a duplicate (a live claim, at most,
    # asked for a redelivery while its twin was being launched).
    assert {o[-1] for o in outcomes} <= {"launched", "queued", "duplicate"}
    assert not {"BackendBusyError", "BackendPausedError"} & {step for o in outcomes for step in o}
    # A refused submit went back to the queue: no drain took the takeover path (a run lookup first).
    assert lookups == []
    # After the first wave (each call in flight then may be refused once), a refusal holds every drain off for at
    # least the 1 s the backend asks, and calls go one at a time: at most one more refusal per second drained.
    assert refused <= concurrency + drained + 1, (admitted, refused, drained)
    print(f"{triggers} triggers at {rate}/s: drained in {drained:.2f} s (ideal {triggers / rate:.2f}), {refused=}")
