"""Proving the audit trail: every segment unbroken, every seal chained and its heads present, every ledger record the
one its last entry names, every record with an entry. Pure: what to read is relay.audit_trail's.

What is found, and when: an entry edited, removed from inside a segment (from its batch, or with it) or moved
(always: its hash, the next entry's link, its number against its place in its batch); a segment's tail removed (once
a seal named it: the next reconcile tick; before, its records show as records without an entry unless they were
removed too); a record edited, removed, put back at an older version or made without Relay (always). Not found: the
last seals removed, or everything since a moment removed with its records (the retention policy, once locked, is
what prevents that). Late entries (a tick wrote them for records a crash left without one) are listed apart, as
warnings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from relay.audit import DELETE, VOID, WRITE, AuditError, Entry, Seal, chain_hash, in_ledger, parse_entry, parse_seal

LAST = "~"  # sorts after every timestamp: problems with no entry time come after those with one


@dataclass(frozen=True)
class Problem:
    at: str  # when the entry concerned was written (what "first" means)
    where: str
    what: str  # removed, edited, reordered, record removed, record edited, record without entry
    expected: str
    found: str

    def __str__(self) -> str:
        return f"{self.what}: {self.where}: expected {self.expected}, found {self.found}"


@dataclass(frozen=True)
class Stored:
    """One object of the trail as listed: its place (segment and number, or seal number) and bytes."""

    uri: str
    segment: str
    number: int
    data: bytes
    line: int = 0  # its line in a batch of entries (from 1); 0 for an object of its own (a seal)

    @property
    def where(self) -> str:
        return f"{self.uri} line {self.line}" if self.line else self.uri


@dataclass(frozen=True)
class Report:
    problems: tuple[Problem, ...]
    entries: int
    segments: int
    seals: int
    records: int
    late: tuple[Problem, ...] = ()  # warnings: writes whose entries a tick wrote after them (relay.audit_trail.late)

    @property
    def whole(self) -> bool:
        return not self.problems


def verify(
    entries: Iterable[Stored],
    seals: Iterable[Stored],
    records: Mapping[str, str],
    *,
    partial: bool = False,
    required: Iterable[str] | None = None,
) -> Report:
    """`records`: each ledger record's name and digest; `partial` (since a moment): segments and seals may start
    after 0, and only `required` records (those changed since) must have an entry."""
    problems: list[Problem] = []
    damaged: set[tuple[str, int]] = set()  # entries there but not as written: named once, as edited or moved
    segments = _segments(entries, problems, damaged)
    for segment, chain in sorted(segments.items()):
        problems += _links(segment, chain, partial, damaged)
    listed = sorted(seals, key=lambda s: s.number)
    problems += _seals(listed, segments, partial)
    problems += _records(segments, records, set(records) if required is None else set(required))
    # The trail's own breaks first (a record that no longer matches is often their consequence), each by when.
    problems.sort(key=lambda p: (p.what.startswith("record"), p.at, p.where))
    count = sum(len(chain) for chain in segments.values())
    late = sorted(
        (
            Problem(e.at, e.object, "late", f"an entry when it was written ({which(e)})", f"one noticed {e.late}")
            for chain in segments.values()
            for e in chain.values()
            if e.late
        ),
        key=lambda p: (p.at, p.where),
    )
    return Report(tuple(problems), count, len(segments), len(listed), len(records), tuple(late))


def which(entry: Entry) -> str:
    return f"entry {entry.segment}#{entry.seq}"


def _segments(
    entries: Iterable[Stored], problems: list[Problem], damaged: set[tuple[str, int]]
) -> dict[str, dict[int, Entry]]:
    segments: dict[str, dict[int, Entry]] = {}
    for stored in entries:
        segments.setdefault(stored.segment, {})
        damaged.add((stored.segment, stored.number))  # until it proves whole
        try:
            entry = parse_entry(stored.data)
        except AuditError as exc:
            problems.append(Problem(LAST, stored.where, "edited", "an audit entry", str(exc)))
            continue
        if entry.hash != chain_hash(entry.body()):
            problems.append(Problem(entry.at, stored.where, "edited", f"hash {chain_hash(entry.body())}", entry.hash))
            continue
        if (entry.segment, entry.seq) != (stored.segment, stored.number):
            problems.append(
                Problem(
                    entry.at,
                    stored.where,
                    "reordered",
                    f"entry {stored.segment}#{stored.number} here",
                    f"entry {entry.segment}#{entry.seq}",
                )
            )
            continue
        segments[stored.segment][stored.number] = entry
        damaged.discard((stored.segment, stored.number))
    return segments


def _links(segment: str, chain: Mapping[int, Entry], partial: bool, damaged: set[tuple[str, int]]) -> list[Problem]:
    numbers = set(chain) | {seq for name, seq in damaged if name == segment}
    if not numbers:
        return []
    problems = []
    first = min(numbers) if partial else 0
    previous: Entry | None = None
    for seq in range(first, max(numbers) + 1):
        entry = chain.get(seq)
        if (segment, seq) in damaged:
            previous = None  # named already; the next entry's link is not checked against it
            continue
        if entry is None:
            after = previous.at if previous else LAST
            problems.append(Problem(after, f"entry {segment}#{seq}", "removed", "an entry", "none"))
        elif previous is not None and previous.seq == seq - 1 and entry.prev != previous.hash:
            expected = f"a link to entry {segment}#{seq - 1} ({previous.hash[:16]})"
            problems.append(Problem(entry.at, f"entry {segment}#{seq}", "reordered", expected, entry.prev[:16]))
        elif seq == 0 and entry.prev:
            problems.append(Problem(entry.at, f"entry {segment}#0", "reordered", "no link (the first)", entry.prev))
        previous = entry if entry is not None else previous
    return problems


def _seals(listed: Sequence[Stored], segments: Mapping[str, Mapping[int, Entry]], partial: bool) -> list[Problem]:
    problems: list[Problem] = []
    previous: Seal | None = None
    expected_number = listed[0].number if partial and listed else 0
    for stored in listed:
        try:
            seal = parse_seal(stored.data)
        except AuditError as exc:
            problems.append(Problem(LAST, stored.uri, "edited", "an audit seal", str(exc)))
            continue
        where = f"seal {seal.number}"
        if seal.hash != chain_hash(seal.body()) or seal.number != stored.number:
            problems.append(Problem(seal.at, where, "edited", f"hash {chain_hash(seal.body())}", seal.hash))
            continue
        if seal.number != expected_number:
            problems.append(Problem(seal.at, f"seal {expected_number}", "removed", "a seal", "none"))
        elif previous is not None and seal.prev != previous.hash:
            problems.append(Problem(seal.at, where, "reordered", f"a link to seal {previous.number}", seal.prev[:16]))
        expected_number = seal.number + 1
        previous = seal
        for segment, head in sorted(seal.heads.items()):
            chain = segments.get(segment, {})
            entry = chain.get(head.seq)
            if entry is None and (not partial or (chain and head.seq >= min(chain))):
                last = max(chain) if chain else None
                found = f"entries up to #{last}" if last is not None else "no entries"
                problems.append(
                    Problem(seal.at, f"entry {segment}#{head.seq}", "removed", f"the entry {where} names", found)
                )
            elif entry is not None and entry.hash != head.hash:
                problems.append(
                    Problem(entry.at, f"entry {segment}#{head.seq}", "edited", f"the hash {where} names", entry.hash)
                )
    return problems


def _records(
    segments: Mapping[str, Mapping[int, Entry]], records: Mapping[str, str], required: set[str]
) -> list[Problem]:
    voided = {(e.segment, e.voids) for chain in segments.values() for e in chain.values() if e.op == VOID}
    last: dict[str, Entry] = {}
    for chain in segments.values():
        for entry in chain.values():
            # An entry for what is no longer the ledger (written before NOT_LEDGER or SET_LEDGER left it out) is
            # proved in its chain, never matched against a record: the records are read by today's rule.
            if entry.op in (WRITE, DELETE) and (entry.segment, entry.seq) not in voided and in_ledger(entry.object):
                known = last.get(entry.object)
                if known is None or (entry.at, entry.segment, entry.seq) > (known.at, known.segment, known.seq):
                    last[entry.object] = entry
    problems = []
    for name, entry in sorted(last.items()):
        which = f"entry {entry.segment}#{entry.seq}"
        found = records.get(name)
        if entry.op == WRITE and found is None:
            problems.append(Problem(entry.at, name, "record removed", f"{entry.digest} ({which})", "no record"))
        elif entry.op == WRITE and found != entry.digest:
            problems.append(Problem(entry.at, name, "record edited", f"{entry.digest} ({which})", str(found)))
        elif entry.op == DELETE and found is not None:
            problems.append(Problem(entry.at, name, "record edited", f"no record (deleted by {which})", found))
    for name in sorted(required - set(last)):
        problems.append(Problem(LAST, name, "record without entry", "an audit entry", records[name]))
    return problems
