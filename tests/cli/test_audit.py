"""`relay audit verify` on a trail the real service wrote (launch, duplicate, rejection, cancel, rerun, a seal),
then with entries and records removed, edited and reordered on the disk: each is named, first the earliest."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from relay import audit, audit_trail, lifecycle
from relay.adapters.audited import AuditedStore
from relay.adapters.routing import RoutingBlobStore
from relay.errors import BlobRequestError
from relay.ports import Blob, BlobInfo
from tests.cli.support import ECHO, Ran, drop, relay_on


@pytest.fixture
def trail(blobs: RoutingBlobStore, results: str) -> Path:
    """The service's records of a launch, its duplicate, a rejection, a cancel and a rerun, audited and sealed;
    the trail's folder. Each step's entries are written as a batch of their own, as a quiet instance's would be
    (the buffer is written only when flushed: no batch is left to the flusher's timing)."""
    store = AuditedStore(blobs, results, audit.location(results), "user:test", age=3600.0)
    relay = relay_on(store, results)
    launched = drop(relay, {**ECHO, "run_key": "nightly"}, "nightly.json")
    assert launched.outcome == "launched" and launched.run_key
    store.flush_audit()
    assert drop(relay, {**ECHO, "run_key": "nightly"}, "nightly.json").outcome == "duplicate"
    store.flush_audit()
    assert drop(relay, {"pipeline": "echo", "x": 1}, "bad.json").outcome == "rejected"
    store.flush_audit()
    lifecycle.cancel(relay, launched.run_key)
    store.flush_audit()
    lifecycle.rerun(relay, launched.run_key)
    store.flush_audit()
    assert audit_trail.seal(blobs, audit.location(results), datetime.now(UTC)) is not None
    return Path(audit.location(results))


def batch_files(trail: Path) -> list[Path]:
    """The batches in the segment's order (their names are their first and last entries' numbers)."""
    return sorted(p for p in trail.glob("*/*/*.json") if p.parent.parent.name != audit.SEALS)


def lines(batch: Path) -> list[bytes]:
    return batch.read_bytes().splitlines(keepends=True)


def a_batch_of_several(trail: Path) -> Path:
    return next(p for p in batch_files(trail) if len(lines(p)) >= 2)


def verify(cli: Callable[..., Ran]) -> Ran:
    return cli("audit", "verify")


def test_a_trail_as_written_is_whole(cli: Callable[..., Ran], trail: Path):
    ran = verify(cli)
    assert ran.code == 0, ran.out
    assert ran.out.startswith("audit trail whole:") and "1 seal(s)" in ran.out
    entries = [json.loads(line) for p in batch_files(trail) for line in lines(p)]
    assert {"launching", "launched", "rejected", "cancelled"} <= {e["state"] for e in entries}  # what the ledger did
    assert [e["seq"] for e in entries] == list(range(len(entries)))  # batches of consecutive entries, in order
    as_json = cli("audit", "verify", "--json").json()
    assert as_json["whole"] and as_json["problems"] == [] and as_json["entries"] == len(entries)


def first(ran: Ran) -> str:
    assert ran.code == 1, ran.out
    return ran.out.splitlines()[1]


def test_an_entry_removed_from_inside_a_batch_is_named(cli: Callable[..., Ran], trail: Path):
    batch = a_batch_of_several(trail)
    kept = lines(batch)
    removed = json.loads(kept.pop(1))
    batch.write_bytes(b"".join(kept))
    segment = batch.parent.name
    assert first(verify(cli)) == f"first: removed: entry {segment}#{removed['seq']}: expected an entry, found none"


def test_a_removed_batch_is_named_by_its_first_entry(cli: Callable[..., Ran], trail: Path):
    batch = batch_files(trail)[1]
    batch.unlink()
    first_seq = int(batch.stem.split("-")[0])
    assert first(verify(cli)) == f"first: removed: entry {batch.parent.name}#{first_seq}: expected an entry, found none"


def test_an_edited_entry_is_named(cli: Callable[..., Ran], trail: Path):
    batch = a_batch_of_several(trail)
    kept = lines(batch)
    entry = json.loads(kept[1])
    kept[1] = json.dumps({**entry, "who": "user:mallory"}).encode() + b"\n"
    batch.write_bytes(b"".join(kept))
    line = first(verify(cli))
    assert line.startswith(f"first: edited: {batch} line 2: expected hash ") and line.endswith(entry["hash"])


def test_entries_reordered_inside_a_batch_are_named(cli: Callable[..., Ran], trail: Path):
    batch = a_batch_of_several(trail)
    kept = lines(batch)
    kept[0], kept[1] = kept[1], kept[0]
    batch.write_bytes(b"".join(kept))
    segment, one, two = batch.parent.name, json.loads(kept[1])["seq"], json.loads(kept[0])["seq"]
    assert first(verify(cli)) in (
        f"first: reordered: {batch} line 2: expected entry {segment}#{two} here, found entry {segment}#{one}",
        f"first: reordered: {batch} line 1: expected entry {segment}#{one} here, found entry {segment}#{two}",
    )


def test_batches_swapped_are_named_as_reordered(cli: Callable[..., Ran], trail: Path):
    one, two = batch_files(trail)[1:3]
    a, b = one.read_bytes(), two.read_bytes()
    one.write_bytes(b)
    two.write_bytes(a)
    line = first(verify(cli))
    assert line.startswith("first: reordered: ") and (str(one) in line or str(two) in line)


def test_a_removed_tail_is_named_once_sealed(cli: Callable[..., Ran], trail: Path):
    last = batch_files(trail)[-1]
    last.unlink()
    last_seq = int(last.stem.split("-")[1])
    ran = verify(cli)
    assert ran.code == 1, ran.out
    assert f"removed: entry {last.parent.name}#{last_seq}: expected the entry seal 0 names" in ran.out


def test_an_edited_record_is_named_with_the_entry_it_should_match(cli: Callable[..., Ran], trail: Path, results: str):
    rejected = next(Path(results, "rejected").glob("*.json"))
    rejected.write_text(rejected.read_text().replace("rejected", "launched"))
    line = first(verify(cli))
    name = rejected.relative_to(results)
    assert line.startswith(f"first: record edited: {name}: expected sha256:") and "(entry " in line


def test_a_removed_record_is_named(cli: Callable[..., Ran], trail: Path, results: str):
    rejected = next(Path(results, "rejected").glob("*.json"))
    rejected.unlink()
    line = first(verify(cli))
    assert line.startswith(f"first: record removed: {rejected.relative_to(results)}: expected sha256:")
    assert line.endswith("found no record")


def test_a_record_made_without_relay_is_named(cli: Callable[..., Ran], trail: Path, results: str):
    forged = Path(results, "runs", "echo-forged", "result.json")
    forged.parent.mkdir(parents=True)
    forged.write_text('{"state": "succeeded"}')
    line = first(verify(cli))
    assert line.startswith("first: record without entry: runs/echo-forged/result.json: expected an audit entry")


def test_since_reads_only_the_recent_trail(cli: Callable[..., Ran], trail: Path):
    ran = cli("audit", "verify", "--since", "1h")
    assert ran.code == 0, ran.out
    assert cli("audit", "verify", "--since", "2000-01-01T00:00:00Z").code == 0


def test_a_tick_writes_its_process_buffer_before_it_seals(
    cli: Callable[..., Ran], blobs: RoutingBlobStore, results: str
):
    store = AuditedStore(blobs, results, audit.location(results), "user:test", age=3600.0)
    relay = relay_on(store, results)
    assert drop(relay, {**ECHO, "run_key": "quiet"}, "quiet.json").outcome == "launched"
    assert batch_files(Path(audit.location(results))) == []  # buffered: nothing written on the event's path
    lifecycle.reconcile(relay)
    [seal] = audit_trail.seals(blobs, audit.location(results))
    [(segment, head)] = audit.parse_seal(seal.data).heads.items()
    assert segment in {p.parent.name for p in batch_files(Path(audit.location(results)))} and head.seq >= 1
    ran = verify(cli)
    assert ran.code == 0, ran.out


def test_entries_a_crash_lost_are_written_late_by_a_tick_and_verify_warns_of_each(
    cli: Callable[..., Ran], blobs: RoutingBlobStore, results: str
):
    crashed = AuditedStore(blobs, results, audit.location(results), "user:test", age=3600.0)
    assert drop(relay_on(crashed, results), {**ECHO, "run_key": "lost"}, "lost.json").outcome == "launched"
    # The process dies with its buffer: the records have no entry, as if written without Relay.
    line = first(verify(cli))
    assert line.startswith("first: record without entry: runs/lost/launch.json")
    # A tick within LATE_AFTER leaves them to a live buffer; one after writes a late entry for each.
    assert audit_trail.late(blobs, results, audit.location(results), datetime.now(UTC)) == ()
    later = datetime.now(UTC) + audit_trail.LATE_AFTER + timedelta(minutes=1)
    [late] = audit_trail.late(blobs, results, audit.location(results), later)
    assert (late.object, late.late, late.state) == ("runs/lost/launch.json", audit.stamp(later), "launched")
    assert audit_trail.late(blobs, results, audit.location(results), later) == ()  # once
    ran = verify(cli)
    assert ran.code == 0, ran.out
    warning = ran.out.splitlines()[1]
    assert warning.startswith(
        f"warning: late: runs/lost/launch.json: expected an entry when it was written (entry {late.segment}#0)"
    )
    assert warning.endswith(f"found one noticed {late.late}")
    assert cli("audit", "verify", "--json").json()["late"][0]["where"] == "runs/lost/launch.json"


class RefusingTrail:
    """The shared store, refusing the audit trail's next `refusals` batch writes (as a store in trouble answers),
    and saying when it has."""

    def __init__(self, inner: RoutingBlobStore, results: str, refusals: int = 1) -> None:
        self.inner, self.trail, self.left = inner, audit.location(results), refusals
        self.refused = threading.Event()

    def read(self, uri: str, *, generation: int | None = None) -> Blob:
        return self.inner.read(uri, generation=generation)

    def stat(self, uri: str, *, generation: int | None = None) -> BlobInfo:
        return self.inner.stat(uri, generation=generation)

    def list(self, prefix: str) -> Iterator[str]:
        return self.inner.list(prefix)

    def write(self, uri: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        if uri.startswith(self.trail + "/") and self.left > 0:
            self.left -= 1
            self.refused.set()
            raise BlobRequestError(f"{uri}: 403 refused")
        return self.inner.write(uri, data, if_generation_match=if_generation_match)

    def delete(self, uri: str, *, if_generation_match: int | None = None) -> None:
        self.inner.delete(uri, if_generation_match=if_generation_match)


def test_a_batch_a_flush_could_not_write_is_written_by_the_next_and_the_chain_stays_whole(
    cli: Callable[..., Ran], blobs: RoutingBlobStore, results: str
):
    refusing = RefusingTrail(blobs, results)
    store = AuditedStore(refusing, results, audit.location(results), "user:test", age=3600.0)
    relay = relay_on(store, results)
    assert drop(relay, {**ECHO, "run_key": "first"}, "first.json").outcome == "launched"
    with pytest.raises(BlobRequestError):
        store.flush_audit()  # a tick's or the exit's flush, refused: the entries stay in the process
    assert batch_files(Path(audit.location(results))) == []
    assert drop(relay, {**ECHO, "run_key": "second"}, "second.json").outcome == "launched"
    store.flush_audit()
    batches = batch_files(Path(audit.location(results)))
    # The refused batch again as it was (the same name: a first try that landed after all is found as ours).
    assert len(batches) == 2 and batches[0].name.startswith("0000000000-")
    entries = sorted(audit.parse_entry(line).seq for batch in batches for line in lines(batch))
    assert entries == list(range(len(entries)))
    assert audit_trail.seal(blobs, audit.location(results), datetime.now(UTC)) is not None
    ran = verify(cli)
    assert ran.code == 0 and "warning" not in ran.out, ran.out


def test_a_batch_the_flusher_could_not_write_is_written_by_the_next_flush(
    cli: Callable[..., Ran], blobs: RoutingBlobStore, results: str
):
    refusing = RefusingTrail(blobs, results)
    # The flusher writes a batch as soon as it holds 2 entries: the launch's claim and its launch.
    store = AuditedStore(refusing, results, audit.location(results), "user:test", age=3600.0, batch=2)
    relay = relay_on(store, results)
    assert drop(relay, {**ECHO, "run_key": "first"}, "first.json").outcome == "launched"
    assert refusing.refused.wait(timeout=60), "the flusher wrote no batch"
    store.flush_audit()  # waits for the flusher's refused batch, then writes it
    entries = [audit.parse_entry(line) for batch in batch_files(Path(audit.location(results))) for line in lines(batch)]
    assert [entry.seq for entry in entries] == [0, 1] and entries[-1].state == "launched"
    ran = verify(cli)
    assert ran.code == 0 and "warning" not in ran.out, ran.out
