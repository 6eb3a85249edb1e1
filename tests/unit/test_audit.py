"""The audit chain on its own: entries built by relay.audit.Chain, proved by relay.audit_verify (no I/O)."""

from __future__ import annotations

import itertools
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from relay import audit, naming, set_store
from relay.audit import Chain, Entry, Head, Seal
from relay.audit_verify import Stored, verify
from relay.set_store import Group, Member
from relay.sets import SetRule
from tests.fakes import MemoryBlobStore

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def stored(entries: list[Entry]) -> list[Stored]:
    return [Stored(f"audit/{e.segment}/{e.seq}", e.segment, e.seq, e.encode()) for e in entries]


def seals(*sealed: Seal) -> list[Stored]:
    return [Stored(f"seals/{s.number}", "", s.number, s.encode()) for s in sealed]


def writes(chain: Chain, count: int, start: datetime = NOW) -> tuple[list[Entry], dict[str, str]]:
    """`count` records, one write each, and the records as the entries name them."""
    entries, records = [], {}
    for n in range(count):
        data = f'{{"state": "launched", "n": {n}}}'.encode()
        entries.append(
            chain.append(start + timedelta(seconds=n), audit.WRITE, f"runs/r{n}/launch.json", digest=audit.digest(data))
        )
        records[f"runs/r{n}/launch.json"] = audit.digest(data)
    return entries, records


def test_a_chain_links_each_entry_to_the_one_before_and_verifies_whole():
    entries, records = writes(Chain("seg-a", "user:test"), 4)
    assert [e.seq for e in entries] == [0, 1, 2, 3]
    assert entries[0].prev == "" and all(b.prev == a.hash for a, b in itertools.pairwise(entries))
    report = verify(stored(entries), [], records)
    assert report.whole and (report.entries, report.segments, report.records) == (4, 1, 4)


def test_an_entry_holds_digests_and_names_never_a_records_contents():
    data = b'{"state": "launching", "parameters": {"token": "s3cret"}}'
    entry = Chain("seg-a", "user:test").append(
        NOW, audit.WRITE, "runs/r/launch.json", digest=audit.digest(data), state=audit.state_of(data)
    )
    assert b"s3cret" not in entry.encode()
    assert entry.state == "launching" and entry.digest == audit.digest(data)


# Two entries as the trail's first build wrote them: a build that numbers, links or encodes entries otherwise would
# make a trail that older entries (and older readers) no longer verify against.
WRITTEN_BEFORE = [
    b'{"at": "2026-12-07T23:00:00.123456Z", "digest": "sha256:abababababababababababababababababababababababababababab'
    b'abababab", "hash": "7d4a2b31058ba3c6140d59f72487a8286b6ca4505e8856967ce5ad349a5a18d1", "late": null, "object": '
    b'"runs/echo-1/launch.json", "op": "write", "precondition": 0, "prev": "", "segment": "20261207T000000-0123456789a'
    b'bcdef", "seq": 0, "state": "launching", "voids": null, "who": "function:relay"}\n',
    b'{"at": "2026-12-07T23:00:00.123456Z", "digest": null, "hash": "4d078a5f30e741108999157b4531134615f0a410983631a07'
    b'49c80130176d419", "late": null, "object": "runs/echo-1/launch.json", "op": "void", "precondition": null, "prev": '
    b'"7d4a2b31058ba3c6140d59f72487a8286b6ca4505e8856967ce5ad349a5a18d1", "segment": "20261207T000000-0123456789abcdef'
    b'", "seq": 1, "state": null, "voids": 0, "who": "function:relay"}\n',
]


def test_entries_are_made_and_encoded_byte_for_byte_as_the_trail_always_wrote_them():
    chain = Chain("20261207T000000-0123456789abcdef", "function:relay")
    at = datetime(2026, 12, 7, 23, 0, 0, 123456, tzinfo=UTC)
    write = chain.append(
        at, audit.WRITE, "runs/echo-1/launch.json", digest="sha256:" + "ab" * 32, state="launching", precondition=0
    )
    void = chain.append(at, audit.VOID, "runs/echo-1/launch.json", voids=0)
    assert [write.encode(), void.encode()] == WRITTEN_BEFORE
    assert [audit.parse_entry(line) for line in WRITTEN_BEFORE] == [write, void]


def test_a_removed_entry_is_named_with_the_entries_around_it():
    entries, records = writes(Chain("seg-a", "user:test"), 4)
    del records[entries[1].object]  # its record went with it
    report = verify(stored([entries[0], *entries[2:]]), [], records)
    assert [(p.what, p.where) for p in report.problems] == [("removed", "entry seg-a#1")]


def test_an_edited_entry_is_named_by_its_hash():
    entries, records = writes(Chain("seg-a", "user:test"), 3)
    forged = replace(entries[1], who="user:someone-else")
    report = verify(stored([entries[0], forged, entries[2]]), [], records)
    first = report.problems[0]
    assert (first.what, first.where, first.found) == ("edited", "audit/seg-a/1", entries[1].hash)


def test_an_edit_that_rehashes_the_entry_breaks_the_next_link():
    entries, records = writes(Chain("seg-a", "user:test"), 3)
    forged = replace(entries[1], digest=audit.digest(b"other")).sealed()
    records[forged.object] = forged.digest or ""
    report = verify(stored([entries[0], forged, entries[2]]), [], records)
    assert [(p.what, p.where) for p in report.problems] == [("reordered", "entry seg-a#2")]


def test_swapped_entries_are_named_as_reordered_where_they_now_lie():
    entries, records = writes(Chain("seg-a", "user:test"), 3)
    swapped = [
        Stored("audit/seg-a/1", "seg-a", 1, entries[2].encode()),
        Stored("audit/seg-a/2", "seg-a", 2, entries[1].encode()),
    ]
    report = verify([*stored(entries[:1]), *swapped], [], records)
    assert report.problems[0].what == "reordered"
    assert report.problems[0].where in ("audit/seg-a/1", "audit/seg-a/2")
    assert "entry seg-a#" in report.problems[0].expected


def test_a_removed_tail_is_found_once_a_seal_named_it():
    entries, records = writes(Chain("seg-a", "user:test"), 3)
    kept = stored(entries[:2])
    del records[entries[2].object]
    assert verify(kept, [], records).whole  # unsealed: a tail removed with its record does not show
    sealed = Seal(0, "", audit.stamp(NOW), {"seg-a": Head(2, entries[2].hash)}).sealed()
    report = verify(kept, seals(sealed), records)
    assert [(p.what, p.where) for p in report.problems] == [("removed", "entry seg-a#2")]
    assert report.problems[0].found == "entries up to #1"


def test_seals_chain_and_a_missing_seal_is_named():
    entries, records = writes(Chain("seg-a", "user:test"), 3)
    first = Seal(0, "", audit.stamp(NOW), {"seg-a": Head(0, entries[0].hash)}).sealed()
    second = Seal(1, first.hash, audit.stamp(NOW), {"seg-a": Head(1, entries[1].hash)}).sealed()
    third = Seal(2, second.hash, audit.stamp(NOW), {"seg-a": Head(2, entries[2].hash)}).sealed()
    assert verify(stored(entries), seals(first, second, third), records).whole
    report = verify(stored(entries), seals(first, third), records)
    assert [(p.what, p.where) for p in report.problems] == [("removed", "seal 1")]


def test_records_must_be_the_ones_their_last_entries_name():
    chain = Chain("seg-a", "user:test")
    entries, records = writes(chain, 2)
    deleted = chain.append(NOW + timedelta(minutes=1), audit.DELETE, entries[1].object)
    trail = stored([*entries, deleted])
    assert verify(trail, [], {entries[0].object: records[entries[0].object]}).whole
    edited = verify(trail, [], {entries[0].object: audit.digest(b"edited")})
    assert [(p.what, p.where) for p in edited.problems] == [("record edited", entries[0].object)]
    assert edited.problems[0].expected.startswith(str(entries[0].digest))
    removed = verify(trail, [], {})
    assert [(p.what, p.where) for p in removed.problems] == [("record removed", entries[0].object)]
    back = verify(trail, [], records)  # the deleted record put back
    assert [(p.what, p.where) for p in back.problems] == [("record edited", entries[1].object)]
    extra = verify(trail, [], {**records, "runs/x/launch.json": audit.digest(b"x")})
    assert ("record without entry", "runs/x/launch.json") in [(p.what, p.where) for p in extra.problems]


def test_a_void_entry_takes_back_a_write_that_never_landed():
    chain = Chain("seg-a", "user:test")
    entries, records = writes(chain, 1)
    refused = chain.append(NOW + timedelta(seconds=5), audit.WRITE, entries[0].object, digest=audit.digest(b"late"))
    void = chain.append(NOW + timedelta(seconds=5), audit.VOID, entries[0].object, voids=refused.seq)
    assert verify(stored([*entries, refused, void]), [], records).whole
    assert not verify(stored([*entries, refused]), [], records).whole


def test_problems_come_first_by_when_their_entry_was_written():
    entries, records = writes(Chain("seg-a", "user:test"), 5)
    forged_late = replace(entries[4], who="x")
    trail = stored([entries[0], entries[2], entries[3], forged_late])
    del records[entries[1].object]
    report = verify(trail, [], records)
    assert [p.where for p in report.problems][:2] == ["entry seg-a#1", "audit/seg-a/4"]


def test_since_checks_from_the_first_entry_it_read():
    entries, records = writes(Chain("seg-a", "user:test"), 4)
    report = verify(stored(entries[2:]), [], records, partial=True, required=[entries[3].object])
    assert report.whole


def test_threads_appending_at_once_make_one_unbroken_chain():
    chain = Chain("seg-a", "user:test")
    made: list[Entry] = []
    lock = threading.Lock()

    def append(n: int) -> None:
        entry = chain.append(NOW, audit.WRITE, f"runs/r{n}/launch.json", digest=audit.digest(b"%d" % n))
        with lock:
            made.append(entry)

    threads = [threading.Thread(target=append, args=(n,)) for n in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = {e.object: e.digest or "" for e in made}
    assert sorted(e.seq for e in made) == list(range(64))
    assert verify(stored(made), [], records).whole


def test_ledger_names_leave_out_what_relay_coordinates_through():
    results = "gs://b/results"
    assert audit.ledger_name(results, "gs://b/results/runs/k/launch.json") == "runs/k/launch.json"
    assert audit.ledger_name(results, "gs://b/results/rejected/k.json") == "rejected/k.json"
    assert audit.ledger_name(results, "gs://b/results/queue/paused/lab.json") == "queue/paused/lab.json"
    for other in ("audit/x/0.json", "queue/slots/s/0000.json", "queue/entries/_/p.json", "reconcile/kfp.json"):
        assert audit.ledger_name(results, f"gs://b/results/{other}") is None
    assert audit.ledger_name(results, "gs://b/resultsother/runs/k/launch.json") is None
    assert audit.ledger_name(results, "gs://triggers/x.json") is None


def test_a_sets_seal_and_closed_list_are_the_ledger_and_its_per_object_bookkeeping_is_not():
    results, group = "gs://b/results", Group("lab", "plates", "lab-data", "plates/p1")
    store = MemoryBlobStore()
    for name in ("a", "b"):  # a pair: the second closes set 1 with both
        set_store.join(store, results, group, SetRule(size=2), Member("lab-data", f"plates/p1/{name}", 1), NOW)
    ledger = {name for uri in store.uris() if (name := audit.ledger_name(results, uri))}
    one = group.number(results, 1).removeprefix(f"{results}/")
    assert ledger == {f"{one}/sealed.json", f"{one}/closed.json"}  # with the run's launch.json: what launched
    left_out = {_set_part(results, uri) for uri in store.uris() if audit.ledger_name(results, uri) is None}
    # Each object's member record and its arrival mark in the set, the hint new objects follow, the tick's index.
    assert left_out == {"members", "objects", "head.json", "open"}


def _set_part(results: str, uri: str) -> str:
    parts = uri.removeprefix(f"{results}/sets/").split("/")
    return "open" if parts[0] == "open" else parts[-1] if parts[-1] == "head.json" else parts[-2]


def test_entries_for_what_is_no_longer_the_ledger_are_proved_but_never_matched_against_records():
    chain = Chain("seg-a", "user:test")
    entries, records = writes(chain, 1)
    member = "sets/lab/plates/0123/members/4567.json"  # audited before a set's bookkeeping was left out
    older = chain.append(NOW, audit.WRITE, member, digest=audit.digest(b"{}"))
    mark = chain.append(NOW, audit.WRITE, "expectations/lab/nightly/2026-12-07.json", digest=audit.digest(b"{}"))
    assert verify(stored([*entries, older, mark]), [], records).whole  # neither is a record the listing reads


def test_arrival_marks_are_bookkeeping_and_the_absence_they_decide_is_the_ledger():
    results = "gs://b/results"
    assert audit.ledger_name(results, naming.arrival_record(results, "lab", "nightly", "2026-12-07")) is None
    absent = naming.absence_record(results, "lab", "nightly", "2026-12-07")
    assert audit.ledger_name(results, absent) == "absences/lab/nightly/2026-12-07.json"


def test_the_actor_is_the_function_where_there_is_one():
    assert audit.actor({"K_SERVICE": "relay-on-object"}) == "function:relay-on-object"
    assert audit.actor({"USER": "ada", "LOGNAME": "ada"}).startswith("user:")


def test_the_trail_lives_under_the_results_unless_named():
    assert audit.location("gs://b/results") == "gs://b/results/audit"
    assert audit.location("gs://b/results", "gs://b-audit/") == "gs://b-audit"
