"""`relay audit verify` on a trail the real service wrote (launch, duplicate, rejection, cancel, rerun, a seal),
then with entries and records removed, edited and reordered on the disk: each is named, first the earliest."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay import audit, audit_trail, lifecycle
from relay.adapters.audited import AuditedStore
from relay.adapters.routing import RoutingBlobStore
from tests.cli.support import ECHO, Ran, drop, relay_on


@pytest.fixture
def trail(blobs: RoutingBlobStore, results: str) -> Path:
    """The service's records of a launch, its duplicate, a rejection, a cancel and a rerun, audited and sealed;
    the trail's folder."""
    store = AuditedStore(blobs, results, audit.location(results), "user:test")
    relay = relay_on(store, results)
    launched = drop(relay, {**ECHO, "run_key": "nightly"}, "nightly.json")
    assert launched.outcome == "launched" and launched.run_key
    assert drop(relay, {**ECHO, "run_key": "nightly"}, "nightly.json").outcome == "duplicate"
    assert drop(relay, {"pipeline": "echo", "x": 1}, "bad.json").outcome == "rejected"
    lifecycle.cancel(relay, launched.run_key)
    lifecycle.rerun(relay, launched.run_key)
    assert audit_trail.seal(blobs, audit.location(results), datetime.now(UTC)) is not None
    return Path(audit.location(results))


def entry_files(trail: Path) -> list[Path]:
    return sorted(p for p in trail.glob("*/*/*.json") if p.parent.parent.name != audit.SEALS)


def verify(cli: Callable[..., Ran]) -> Ran:
    return cli("audit", "verify")


def test_a_trail_as_written_is_whole(cli: Callable[..., Ran], trail: Path):
    ran = verify(cli)
    assert ran.code == 0, ran.out
    assert ran.out.startswith("audit trail whole:") and "1 seal(s)" in ran.out
    states = [json.loads(p.read_bytes())["state"] for p in entry_files(trail)]
    assert {"launching", "launched", "rejected", "cancelled"} <= set(states)  # what the ledger went through
    as_json = cli("audit", "verify", "--json").json()
    assert as_json["whole"] and as_json["problems"] == [] and as_json["entries"] == len(entry_files(trail))


def first(ran: Ran) -> str:
    assert ran.code == 1, ran.out
    return ran.out.splitlines()[1]


def test_a_removed_entry_is_named(cli: Callable[..., Ran], trail: Path):
    files = entry_files(trail)
    files[2].unlink()
    segment = files[2].parent.name
    assert first(verify(cli)) == f"first: removed: entry {segment}#2: expected an entry, found none"


def test_an_edited_entry_is_named(cli: Callable[..., Ran], trail: Path):
    target = entry_files(trail)[1]
    entry = json.loads(target.read_bytes())
    target.write_text(json.dumps({**entry, "who": "user:mallory"}))
    line = first(verify(cli))
    assert line.startswith(f"first: edited: {target}: expected hash ") and line.endswith(entry["hash"])


def test_reordered_entries_are_named(cli: Callable[..., Ran], trail: Path):
    one, two = entry_files(trail)[1:3]
    a, b = one.read_bytes(), two.read_bytes()
    one.write_bytes(b)
    two.write_bytes(a)
    segment = one.parent.name
    # Both are named; the first is the one whose entry was written first (#1, now where #2 was).
    assert first(verify(cli)) in (
        f"first: reordered: {two}: expected entry {segment}#2 here, found entry {segment}#1",
        f"first: reordered: {one}: expected entry {segment}#1 here, found entry {segment}#2",  # written in one µs
    )


def test_a_removed_tail_is_named_once_sealed(cli: Callable[..., Ran], trail: Path):
    last = entry_files(trail)[-1]
    last.unlink()
    line = first(verify(cli))
    assert line.startswith(f"first: removed: entry {last.parent.name}#{int(last.stem)}: expected the entry seal 0")


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
