"""The runs board in the results location: what the tick writes and when, the absence records it reads, and the
tenant each rejection the service records is shown to."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from relay import board_store, naming, records
from relay.board_store import read_absences, read_sources, refresh
from relay.config import Settings
from relay.errors import ConfigError
from relay.events import EventInfo, ObjectDelivery
from relay.ports import Blob
from relay.service import Relay, handle_delivery
from tests.conftest import NOW
from tests.fakes import MemoryBlobStore
from tests.policies import policy
from tests.unit.board_support import seed

RESULTS = "gs://results/relay"
POLICY = policy(
    """
tenants:
  - name: assay
    triggers: [gs://triggers/assay/]
  - name: imaging
    triggers: [gs://triggers/imaging/]
"""
)
PAGES = [naming.board_page(RESULTS), naming.board_page(RESULTS, "assay"), naming.board_page(RESULTS, "imaging")]


@pytest.fixture
def governed(relay: Relay, store: MemoryBlobStore) -> Relay:
    seed(store, RESULTS, NOW)
    return replace(relay, policy=POLICY, settings=replace(relay.settings, deployment_name="lab-prod"))


def at(relay: Relay, moment: datetime) -> Relay:
    return replace(relay, clock=lambda: moment)


def page(store: MemoryBlobStore, uri: str) -> str:
    return store.read(uri).data.decode()


def test_a_tick_writes_the_operators_page_and_one_for_each_tenant_of_the_policy(
    governed: Relay, store: MemoryBlobStore
):
    assert refresh(governed) == f"3 page(s) written under {RESULTS}/board/"
    assert store.uris(naming.join(RESULTS, "board") + "/") == sorted([*PAGES, naming.board_refreshed(RESULTS)])
    operator = page(store, PAGES[0])
    assert "<code>lab-prod</code>" in operator and "imaging-running-0" not in operator  # counted, not listed
    assert "assay-rejected-0" in operator and "imaging-rejected-0" in operator and "legacy-0" in operator
    assert board_store.NOT_READ_BY_THE_TICK in operator
    assay, imaging = page(store, PAGES[1]), page(store, PAGES[2])
    assert "assay-rejected-0" in assay and "imaging" not in assay and "legacy" not in assay
    assert "imaging-rejected-0" in imaging and "assay" not in imaging and "legacy" not in imaging
    assert 'id="dead-letters"' not in assay + imaging


def test_at_most_one_refresh_per_board_every(governed: Relay, store: MemoryBlobStore):
    every = governed.settings.board_every
    assert refresh(governed).startswith("3 page(s)")
    written = {uri: store.read(uri).generation for uri in PAGES}
    soon = at(governed, NOW + timedelta(seconds=every - 0.001))
    assert refresh(soon) == f"written at 2026-11-21T12:00:00.000Z, next after {every:.0f} s"
    assert {uri: store.read(uri).generation for uri in PAGES} == written
    later = at(governed, NOW + timedelta(seconds=every))
    assert refresh(later).startswith("3 page(s)")
    assert all(store.read(uri).generation > written[uri] for uri in PAGES)
    assert "Generated at 2026-11-21T12:05:00.000Z" in page(store, PAGES[0])


class MarkerTakenMeanwhile(MemoryBlobStore):
    """Another tick's turn taken between this tick's read of the marker and its write."""

    def __init__(self, meanwhile: Callable[[], object]) -> None:
        super().__init__()
        self.meanwhile: Callable[[], object] | None = meanwhile

    def read(self, uri: str, *, generation: int | None = None) -> Blob:
        blob = super().read(uri, generation=generation)
        if uri == naming.board_refreshed(RESULTS) and self.meanwhile is not None:
            meanwhile, self.meanwhile = self.meanwhile, None
            meanwhile()
        return blob


def test_of_two_ticks_at_once_one_writes_the_pages(relay: Relay):
    store = MarkerTakenMeanwhile(lambda: refresh(first))
    first = replace(relay, store=store, policy=POLICY)
    seed(store, RESULTS, NOW)
    store.write(naming.board_refreshed(RESULTS), records.encode({"written_at": "2026-11-21T11:00:00.000Z"}))
    assert refresh(first) == "another tick is writing it"  # the other, let in meanwhile, wrote them
    assert [uri for uri in PAGES if uri in store.uris()] == PAGES


def test_a_marker_that_cannot_be_read_is_written_over(governed: Relay, store: MemoryBlobStore):
    store.write(naming.board_refreshed(RESULTS), b"{not json")
    assert refresh(governed).startswith("3 page(s)")
    assert json.loads(store.read(naming.board_refreshed(RESULTS)).data) == {"written_at": "2026-11-21T12:00:00.000Z"}


def test_without_a_deployment_name_the_page_names_the_results_location(relay: Relay, store: MemoryBlobStore):
    refresh(relay)
    assert f"<code>{RESULTS}</code>" in page(store, PAGES[0])
    assert store.uris(naming.join(RESULTS, "board", "tenants")) == []  # no policy, no tenants, no tenant pages


def test_absence_records_are_read_by_tenant_folder_and_an_unreadable_one_is_shown_as_such(store: MemoryBlobStore):
    folder = naming.absences_folder(RESULTS)
    store.write(folder + "assay/nightly/2026-11-21.json", records.encode({"message": "no plates", "recorded_at": "t"}))
    store.write(folder + "imaging/scans/2026-11-21.json", b"\xff not json")
    store.write(folder + "imaging/README.txt", b"not a record")
    found = sorted(read_absences(store, RESULTS), key=lambda a: a.tenant)
    assert [(a.tenant, a.what, a.message) for a in found] == [
        ("assay", "nightly/2026-11-21", "no plates"),
        ("imaging", "scans/2026-11-21", found[1].message),
    ]
    assert found[1].message.startswith("unreadable absence record: ")
    assert list(read_absences(MemoryBlobStore(), RESULTS)) == []  # no one records absences yet


def test_a_rejection_the_service_records_names_the_tenant_it_came_from(relay: Relay, store: MemoryBlobStore):
    governed = replace(relay, policy=POLICY)
    data = json.dumps({"pipeline": "echo", "parameters": {"unknown": 1}}).encode()
    generation = store.write("gs://triggers/assay/bad.json", data)
    event = EventInfo(id="evt-1", type="google.cloud.storage.object.v1.finalized", source="s", time=NOW)
    delivery = ObjectDelivery(event, "triggers", "assay/bad.json", generation, len(data), "storage-event")
    outcome = handle_delivery(governed, delivery)
    assert outcome.outcome == "rejected" and outcome.run_key
    saved = records.decode(store.read(naming.rejection_record(RESULTS, outcome.run_key)).data)
    assert saved["tenant"] == "assay"
    sources = read_sources(store, RESULTS)
    [run] = sources.runs
    boards = {
        tenant: board_store.board_for(sources, deployment="d", now=NOW, dead_letters=None, tenant=tenant)
        for tenant in ("assay", "imaging")
    }
    assert [r.run_key for r in boards["assay"].rejections] == [run.run_key] and boards["imaging"].rejections == ()


def test_the_board_settings_are_read_from_the_environment():
    settings = Settings.from_env({"RELAY_RESULTS_URI": "r", "RELAY_BOARD_EVERY": "15m", "RELAY_DEPLOYMENT_NAME": "lab"})
    assert settings.board_every == 900 and settings.deployment_name == "lab"
    assert Settings.from_env({"RELAY_RESULTS_URI": "r"}).board_every == 300
    with pytest.raises(ConfigError, match="RELAY_BOARD_EVERY: expected a duration like 90s, 15m or 1h, found 'often'"):
        Settings.from_env({"RELAY_RESULTS_URI": "r", "RELAY_BOARD_EVERY": "often"})
