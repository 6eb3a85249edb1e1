"""AuditedStore, the audit trail's one hook: on the in-memory fake, on the disk and on fake-gcs-server, whose
create-only preconditions are Cloud Storage's."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devstack import FakeGcsServer, create_bucket
from relay import audit, audit_trail
from relay.adapters.audited import AuditedStore
from relay.adapters.gcs import GcsBlobStore
from relay.adapters.localfs import LocalBlobStore
from relay.adapters.stores import results_store
from relay.adapters.tokens import NoTokenSource
from relay.errors import PreconditionFailedError
from relay.ports import BlobStore
from tests.fakes import MemoryBlobStore

RESULTS = "gs://relay-results/lab"
TRAIL = f"{RESULTS}/audit"


def audited(inner: BlobStore, results: str = RESULTS, **kwargs: tuple[str, ...]) -> AuditedStore:
    return AuditedStore(inner, results, audit.location(results), "user:test", **kwargs)


def trail(store: BlobStore, results: str = RESULTS, *, of: AuditedStore | None = None) -> list[audit.Entry]:
    if of is not None:
        of.flush_audit()
    found = audit_trail.entries(store, audit.location(results))
    return sorted((audit.parse_entry(s.data) for s in found), key=lambda e: e.seq)


def test_each_ledger_write_and_delete_leaves_one_entry_and_nothing_else_does():
    inner = MemoryBlobStore()
    store = audited(inner)
    generation = store.write(f"{RESULTS}/runs/k/launch.json", b'{"state": "launching"}', if_generation_match=0)
    store.write(f"{RESULTS}/runs/k/launch.json", b'{"state": "launched"}', if_generation_match=generation)
    store.write(f"{RESULTS}/queue/slots/s/0000.json", b"{}", if_generation_match=0)  # coordination, not the ledger
    store.write("gs://triggers/t.json", b"{}")  # not under the results
    store.delete(f"{RESULTS}/runs/k/launch.json")
    entries = trail(inner, of=store)
    assert [(e.op, e.object, e.state, e.precondition) for e in entries] == [
        ("write", "runs/k/launch.json", "launching", 0),
        ("write", "runs/k/launch.json", "launched", generation),
        ("delete", "runs/k/launch.json", None, None),
    ]
    assert {e.who for e in entries} == {"user:test"} and len({e.segment for e in entries}) == 1
    assert audit_trail.prove(inner, RESULTS, TRAIL).whole


def test_a_refused_write_is_voided_and_the_trail_still_proves():
    inner = MemoryBlobStore()
    store = audited(inner)
    uri = f"{RESULTS}/runs/k/skipped.json"
    store.write(uri, b'{"state": "skipped", "at": 1}', if_generation_match=0)
    with pytest.raises(PreconditionFailedError):
        store.write(uri, b'{"state": "skipped", "at": 2}', if_generation_match=0)
    assert [(e.op, e.voids) for e in trail(inner, of=store)] == [("write", None), ("write", None), ("void", 1)]
    assert audit_trail.prove(inner, RESULTS, TRAIL).whole


def test_the_policy_read_is_recorded_once_per_version():
    inner = MemoryBlobStore()
    policy = "gs://catalog/policy.yaml"
    inner.write(policy, b"tenants: {}\n")
    store = audited(inner, watched=(policy,))
    store.read(policy)
    store.read(policy)
    store.write(f"{RESULTS}/rejected/k.json", b"{}")
    entries = trail(inner, of=store)
    assert [(e.op, e.object) for e in entries] == [("seen", policy), ("write", "rejected/k.json")]
    assert entries[0].digest == audit.digest(b"tenants: {}\n")


def test_instances_writing_at_once_each_keep_an_unbroken_segment(tmp_path: Path):
    """Several processes' stores (one segment each) and threads within each, on one results folder."""
    results = str(tmp_path / "results")
    stores = [results_store(results, str(tmp_path), audit_uri="") for _ in range(3)]
    errors: list[BaseException] = []

    def launch(store: BlobStore, n: int) -> None:
        try:
            uri = f"{results}/runs/k{n}/launch.json"
            generation = store.write(uri, b'{"state": "launching"}', if_generation_match=0)
            store.write(uri, b'{"state": "launched"}', if_generation_match=generation)
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    threads = [threading.Thread(target=launch, args=(stores[n % 3], n)) for n in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for store in stores:
        audit.flush(store)
    reader = LocalBlobStore(tmp_path)
    assert audit_trail.seal(reader, audit.location(results), datetime.now(UTC)) is not None
    report = audit_trail.prove(reader, results, audit.location(results))
    assert report.problems == () and (report.entries, report.segments, report.records) == (48, 3, 24)


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcsServer]:
    with FakeGcsServer(tmp_path_factory.mktemp("gcs")) as running:
        create_bucket(running.url, "relay-results")
        yield running


@pytest.mark.integration
def test_on_cloud_storage_an_entry_is_created_once_and_never_replaced(gcs: FakeGcsServer):
    inner = GcsBlobStore(endpoint=gcs.url, tokens=NoTokenSource())
    store = audited(inner, f"{RESULTS}/create-only")
    generation = store.write(
        f"{RESULTS}/create-only/runs/k/launch.json", b'{"state": "launching"}', if_generation_match=0
    )
    store.write(f"{RESULTS}/create-only/runs/k/launch.json", b'{"state": "launched"}', if_generation_match=generation)
    store.flush_audit()
    entries = audit_trail.entries(inner, audit.location(f"{RESULTS}/create-only"))
    assert len(entries) == 2
    with pytest.raises(PreconditionFailedError):
        inner.write(entries[0].uri, b"{}", if_generation_match=0)
    assert audit_trail.prove(inner, f"{RESULTS}/create-only", audit.location(f"{RESULTS}/create-only")).whole


def test_a_tick_does_not_seal_over_an_entry_that_is_not_as_written():
    inner = MemoryBlobStore()
    store = audited(inner)
    store.write(f"{RESULTS}/runs/k/launch.json", b'{"state": "launching"}', if_generation_match=0)
    store.flush_audit()
    [entry] = audit_trail.entries(inner, TRAIL)
    inner.write(entry.uri, b"not an entry")
    assert audit_trail.seal(inner, TRAIL, datetime.now(UTC)) is None
    assert audit_trail.prove(inner, RESULTS, TRAIL).problems[0].what == "edited"


def test_the_response_waits_for_no_entry_and_the_flusher_writes_them_in_one_batch():
    """Nothing is written to the trail on the write's path; the flusher's thread writes the buffer as one
    create-only batch of consecutive entries (here when it holds `batch` entries: no timing in the test)."""
    inner = MemoryBlobStore()
    store = AuditedStore(inner, RESULTS, TRAIL, "user:test", age=3600.0, batch=3)
    for n in range(2):
        store.write(f"{RESULTS}/runs/k{n}/launch.json", b'{"state": "launching"}', if_generation_match=0)
    assert list(inner.list(TRAIL + "/")) == []  # buffered
    store.write(f"{RESULTS}/runs/k2/launch.json", b'{"state": "launching"}', if_generation_match=0)
    store.flush_audit()  # waits for the flusher's batch in flight, then writes what is left: nothing
    [batch] = list(inner.list(TRAIL + "/"))
    assert batch.endswith("/0000000000-0000000002.json")
    assert [e.seq for e in trail(inner)] == [0, 1, 2]
    assert audit_trail.prove(inner, RESULTS, TRAIL).whole
