"""The schedule's tick writes the runs board to fake-gcs-server through the real Cloud Storage adapter: served as
HTML, at most once per RELAY_BOARD_EVERY, and each tenant's page holding its own runs only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from devstack import FakeGcsServer, create_bucket, fake_gcs_available
from relay import naming, records, runtime
from relay.adapters.gcs import GcsBlobStore
from relay.adapters.tokens import NoTokenSource
from relay.catalog import Catalog
from relay.config import Settings
from relay.events import EventInfo, ObjectDelivery
from relay.ports import RunState
from relay.service import Relay, handle_delivery
from tests.conftest import CATALOG, NOW
from tests.fakes import FakeBackend, MemoryBlobStore
from tests.functions.test_main import event, outcome_lines, post
from tests.policies import policy
from tests.unit.board_support import HOSTILE, seed

pytestmark = pytest.mark.integration

BUCKET = "relay-board"
RESULTS = f"gs://{BUCKET}/relay"
POLICY = policy(
    """
tenants:
  - name: assay
    triggers: [gs://relay-board/triggers/assay/]
  - name: imaging
    triggers: [gs://relay-board/triggers/imaging/]
"""
)


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsBlobStore]:
    missing = fake_gcs_available()
    if missing:
        pytest.fail(f"the board's integration test needs fake-gcs-server: {missing}")
    with FakeGcsServer(tmp_path_factory.mktemp("board")) as server:
        create_bucket(server.url, BUCKET)
        yield GcsBlobStore(endpoint=server.url, tokens=NoTokenSource())


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


def relay_at(gcs: GcsBlobStore, backend: FakeBackend, moment: datetime) -> Relay:
    catalog = MemoryBlobStore()
    catalog.write("gs://catalog/echo.yaml", (CATALOG / "echo.yaml").read_bytes())
    settings = Settings(results_uri=RESULTS, catalog_uri="gs://catalog", deployment_name="lab-prod")
    return Relay(
        settings=settings, store=gcs, catalog=Catalog(catalog, "gs://catalog"), backend=backend,
        clock=lambda: moment, policy=POLICY,
    )  # fmt: skip


def tick(relay: Relay) -> None:
    runtime.install(relay)
    try:
        assert post("on_schedule", event("pubsub_inline")) == 200
    finally:
        runtime.install(None)


def test_the_tick_writes_each_board_once_per_interval_and_a_tenant_sees_its_own(
    gcs: GcsBlobStore, backend: FakeBackend, capsys: pytest.CaptureFixture[str]
):
    seed(gcs, RESULTS, NOW)
    relay = relay_at(gcs, backend, NOW)
    data = json.dumps({"pipeline": "echo", "parameters": {"message": "plate 7"}}).encode()
    generation = gcs.write(f"gs://{BUCKET}/triggers/imaging/plate-7.json", data)
    info = EventInfo(id="evt-7", type="google.cloud.storage.object.v1.finalized", source="s", time=NOW)
    delivery = ObjectDelivery(info, BUCKET, "triggers/imaging/plate-7.json", generation, len(data), "storage-event")
    launched = handle_delivery(relay, delivery)
    assert launched.outcome == "launched" and launched.run_key
    backend.states["run-1"] = RunState("succeeded", "done")
    capsys.readouterr()

    tick(relay)
    [line] = outcome_lines(capsys.readouterr().out)
    assert line["message"].endswith(f"; board: 3 page(s) written under {RESULTS}/board/"), line
    pages = {tenant: naming.board_page(RESULTS, tenant) for tenant in (None, "assay", "imaging")}
    assert all(gcs.stat(uri).content_type == "text/html" for uri in pages.values())  # opens in a browser
    operator, assay, imaging = (gcs.read(uri).data.decode() for uri in pages.values())
    assert "<code>lab-prod</code>" in operator and HOSTILE not in operator
    assert "assay-rejected-0" in operator and "imaging-rejected-0" in operator
    assert "assay-rejected-0" in assay and "imaging" not in assay and "legacy" not in assay
    assert "imaging-rejected-0" in imaging and "assay" not in imaging and "legacy" not in imaging
    # The run the tick just recorded as ended is counted as succeeded on its tenant's board: 6 seeded, and it.
    assert '<td class="n" data-label="succeeded">7</td>' in imaging
    ended = records.decode(gcs.read(naming.result_record(RESULTS, launched.run_key)).data)
    assert ended["state"] == "succeeded"

    generations = {uri: gcs.stat(uri).generation for uri in pages.values()}
    tick(relay_at(gcs, backend, NOW + timedelta(seconds=60)))  # within RELAY_BOARD_EVERY: left as it is
    [line] = outcome_lines(capsys.readouterr().out)
    assert line["message"].endswith("; board: written at 2026-11-21T12:00:00.000Z, next after 300 s"), line
    assert {uri: gcs.stat(uri).generation for uri in pages.values()} == generations
    later = relay_at(gcs, backend, NOW + timedelta(seconds=300))
    tick(replace(later, settings=replace(later.settings, deployment_name="lab-prod-2")))
    capsys.readouterr()
    assert all(gcs.stat(uri).generation > generations[uri] for uri in pages.values())
    assert "<code>lab-prod-2</code>" in gcs.read(pages[None]).data.decode()
