"""Caps and the queue against the loopback KFP API: ten triggers into a cap of two, each launched once and in arrival
order as runs end on the server; and a 429 with Retry-After on submit queued, then drained once the wait is over."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from relay import drain, lifecycle, naming, records
from relay.adapters.kfp_backend import KfpBackend
from relay.catalog import Catalog
from relay.config import Settings
from relay.events import EventInfo, ObjectDelivery
from relay.ports import TokenSource
from relay.service import Relay, SubmitGate
from tests.conftest import CATALOG
from tests.fakes import MemoryBlobStore
from tests.policies import policy
from tests.servers.kfp import KfpApiServer

pytestmark = pytest.mark.integration

RESULTS = "gs://results/relay"


class Clock:
    """Now as the Relay sees it: the real time when made (a submit's deadline is checked against it), then moved
    by the test; the gate's monotonic clock moves with it."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)
        self.monotonic = 0.0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.monotonic += seconds


def relay_on(server: KfpApiServer, tokens: TokenSource, caps: str, clock: Clock) -> Relay:
    store = MemoryBlobStore()
    store.write("gs://catalog/echo.yaml", (CATALOG / "echo.yaml").read_bytes())
    settings = Settings(results_uri=RESULTS, catalog_uri="gs://catalog", backend="kfp", max_event_age=3600)
    tenant = f"tenants:\n  - name: lab\n    triggers: [gs://triggers/lab/]\n    caps: {caps}\n"
    return Relay(
        settings=settings,
        store=store,
        catalog=Catalog(store, settings.catalog_uri),
        backend=KfpBackend(server.url, "relay", tokens),
        clock=clock,
        policy=policy(tenant),
        gate=SubmitGate(clock=lambda: clock.monotonic),
    )


def deliver(relay: Relay, n: int) -> str:
    data = json.dumps({"pipeline": "echo", "parameters": {"message": f"plate {n}"}}).encode()
    generation = relay.store.write(f"gs://triggers/lab/t{n}.json", data)
    event = EventInfo(id=f"evt-{n}", type="google.cloud.storage.object.v1.finalized", source="s", time=relay.clock())
    return str(drain.deliver(relay, ObjectDelivery(event, "triggers", f"lab/t{n}.json", generation, len(data),
                                                   "storage-event")).run_key)  # fmt: skip


def run_id(relay: Relay, key: str) -> str:
    return str(records.decode(relay.store.read(naming.launch_record(RESULTS, key)).data)["run_id"])


def test_ten_triggers_into_a_cap_of_two_launch_once_each_in_arrival_order_as_runs_end(
    kfp_server: KfpApiServer, tokens: TokenSource
):
    relay = relay_on(kfp_server, tokens, "{max_in_flight: 2}", Clock())
    keys = [deliver(relay, n) for n in range(10)]
    ended: list[str] = []
    while len(ended) < 10:
        created = [run["display_name"] for run in kfp_server.runs]
        assert len(created) - len(ended) <= 2  # never more than two in flight on the backend
        assert created == keys[: len(created)]  # in arrival order
        oldest = next(key for key in created if key not in ended)
        kfp_server.set_run_state(run_id(relay, oldest), "SUCCEEDED")
        ended.append(oldest)
        lifecycle.reconcile(relay)  # records the end, gives the slot back, launches the next
    assert [run["display_name"] for run in kfp_server.runs] == keys  # each exactly once


def test_a_429_on_submit_queues_the_trigger_and_the_drain_honours_retry_after(
    kfp_server: KfpApiServer, tokens: TokenSource
):
    clock = Clock()
    relay = relay_on(kfp_server, tokens, "{max_in_flight: 5}", clock)
    kfp_server.fail_next(1, 429, {"error": "slow down", "code": 8}, {"Retry-After": "20"}, "/apis/v2beta1/runs")
    key = deliver(relay, 1)
    launch = records.decode(relay.store.read(naming.launch_record(RESULTS, key)).data)
    assert launch["state"] == "queued" and kfp_server.runs == []
    clock.advance(19)
    assert lifecycle.reconcile(relay).drained == drain.Drained(stopped="the backend asked for a pause: 1.0 s left")
    clock.advance(1)
    tick = lifecycle.reconcile(relay)
    assert tick.drained is not None and tick.drained.launched == (key,)
    assert [run["display_name"] for run in kfp_server.runs] == [key]
