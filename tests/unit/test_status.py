from __future__ import annotations

from relay import status
from relay.service import Relay, handle_delivery
from tests.fakes import MemoryBlobStore
from tests.unit.test_service import upload


def test_a_run_is_found_by_key_and_by_trigger_uri(relay: Relay, store: MemoryBlobStore):
    delivery = upload(store)
    outcome = handle_delivery(relay, delivery)
    key = status.run_key_for_object(store, "gs://triggers/t.json")
    assert key == outcome.run_key
    run = status.read_run(store, "gs://results/relay", key)
    assert run is not None and run.state == "launched" and run.pipeline == "echo" and run.status == 202
    assert run.trigger_uri == "gs://triggers/t.json" and set(run.uris) == {"launch"}
    assert status.read_run(store, "gs://results/relay", "nope") is None


def test_recent_runs_include_rejections_newest_first(relay: Relay, store: MemoryBlobStore):
    handle_delivery(relay, upload(store, name="a.json"))
    bad = upload(store, b"{not json", name="b.json")
    handle_delivery(relay, bad)
    runs = status.recent_runs(store, "gs://results/relay")
    assert sorted(run.state for run in runs) == ["launched", "rejected"]
    rejected = next(run for run in runs if run.state == "rejected")
    assert rejected.run_key == status.run_key_for_object(store, "gs://triggers/b.json")
    assert "expected valid JSON" in rejected.message
