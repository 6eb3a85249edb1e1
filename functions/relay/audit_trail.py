"""Reading the audit trail and sealing it: the I/O around relay.audit's chain and relay.audit_verify's proof.

A seal is created once (create-only, numbered one past the last): two ticks at once make one seal, the other
finds its number taken and leaves it to the next tick. A tick lists only today's and yesterday's entries, so its
cost follows the day's events, not the trail's age. Before it seals, it writes late entries for records a crash
left without one (`late`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from relay import audit
from relay.audit import Head, Seal
from relay.audit_verify import Report, Stored, verify
from relay.errors import BlobNotFoundError, PreconditionFailedError
from relay.ports import BlobStore

_READERS = 8  # reads in flight while verifying: a trail is many small objects
# How long a record may go without its entry before a tick writes a late one: a live instance's buffer waits for
# CPU, which Cloud Run gives it at its next request or its shutdown (an idle instance lives ~15 minutes).
LATE_AFTER = timedelta(minutes=30)
# What a warm tick instance need not read again: a batch's objects (create-only, never replaced), and records
# already older than the two days a tick looks at.
_NAMED: dict[str, frozenset[str]] = {}
_OLD: set[str] = set()


def _batch_place(audit_uri: str, uri: str) -> tuple[str, str, int, int] | None:
    """(day, segment, first, last) of a batch's URI; None for anything else (a seal, a stray object)."""
    parts = uri[len(audit_uri) + 1 :].split("/")
    if len(parts) != 3 or parts[0] == audit.SEALS:
        return None
    numbers = audit.batch_range(parts[2])
    return None if numbers is None else (parts[0], parts[1], *numbers)


def _declared(line: bytes) -> int | None:
    try:
        return audit.parse_entry(line).seq
    except audit.AuditError:
        return None


def _split(uri: str, segment: str, first: int, last: int, data: bytes) -> list[Stored]:
    """A batch's entries, each at its place in the segment: line i is entry first + i. A batch with lines missing
    (or added) places each readable line where it says it belongs, so a line removed is a gap (an entry removed),
    not every later line out of place."""
    lines = [line for line in data.splitlines(keepends=True) if line.strip()]
    whole = len(lines) == last - first + 1
    placed = []
    for i, line in enumerate(lines):
        seq = None if whole else _declared(line)
        number = seq if seq is not None and first <= seq <= last else first + i
        placed.append(Stored(uri, segment, number, line, i + 1))
    return placed


def _seal_number(uri: str) -> int | None:
    number = uri.rsplit("/", 1)[-1].removesuffix(".json")
    return int(number) if number.isdecimal() else None


def _read_all(store: BlobStore, uris: list[str]) -> list[bytes]:
    with ThreadPoolExecutor(_READERS) as pool:
        return list(pool.map(lambda uri: store.read(uri).data, uris))


def _stored(store: BlobStore, items: list[tuple[str, str, int]]) -> list[Stored]:
    datas = _read_all(store, [uri for uri, _, _ in items])
    return [Stored(uri, segment, number, data) for (uri, segment, number), data in zip(items, datas, strict=True)]


def entries(store: BlobStore, audit_uri: str, *, since: datetime | None = None) -> list[Stored]:
    """Every entry (from the day of `since` on), read from its batch."""
    first_day = since.strftime("%Y-%m-%d") if since else ""
    places = []
    for uri in store.list(audit_uri + "/"):
        place = _batch_place(audit_uri, uri)
        if place is not None and place[0] >= first_day:
            places.append((uri, place))
    datas = _read_all(store, [uri for uri, _ in places])
    found = [
        stored
        for (uri, (_, segment, first, last)), data in zip(places, datas, strict=True)
        for stored in _split(uri, segment, first, last, data)
    ]
    if since is None:
        return found
    stamp = audit.stamp(since)
    return [s for s in found if _at(s) >= stamp]


def _at(stored: Stored) -> str:
    try:
        return audit.parse_entry(stored.data).at
    except audit.AuditError:
        return audit.stamp(datetime.max)  # an unreadable entry is kept: verify names it


def seals(store: BlobStore, audit_uri: str, *, since: datetime | None = None) -> list[Stored]:
    first_day = since.strftime("%Y-%m-%d") if since else ""
    folder = audit.seals_folder(audit_uri)
    items = []
    for uri in store.list(folder):
        number = _seal_number(uri)
        if number is not None and uri[len(folder) :].split("/")[0] >= first_day:
            items.append((uri, "", number))
    return _stored(store, items)


def records(store: BlobStore, results_uri: str) -> dict[str, str]:
    """Each ledger record's name under the results and the digest of its bytes."""
    listed = [
        (uri, name)
        for uri in store.list(results_uri.rstrip("/") + "/")
        if (name := audit.ledger_name(results_uri, uri))
    ]
    datas = _read_all(store, [uri for uri, _ in listed])
    return {name: audit.digest(data) for (_, name), data in zip(listed, datas, strict=True)}


def changed_since(store: BlobStore, results_uri: str, names: Iterator[str], since: datetime) -> list[str]:
    """The records changed at or after `since`: those `verify --since` requires an entry for."""
    root = results_uri.rstrip("/")
    changed = []
    for name in names:
        updated = store.stat(f"{root}/{name}").updated
        if updated is None or updated >= since:
            changed.append(name)
    return changed


def prove(store: BlobStore, results_uri: str, audit_uri: str, *, since: datetime | None = None) -> Report:
    """Read the trail and the records, and verify them (relay.audit_verify)."""
    ledger = records(store, results_uri)
    required = None if since is None else changed_since(store, results_uri, iter(sorted(ledger)), since)
    return verify(
        entries(store, audit_uri, since=since),
        seals(store, audit_uri, since=since),
        ledger,
        partial=since is not None,
        required=required,
    )


def _last_seal(store: BlobStore, audit_uri: str, now: datetime) -> Seal | None:
    for day in reversed(audit.recent_days(now)):
        found = sorted(
            (n, uri)
            for uri in store.list(audit.seal_day_folder(audit_uri, day))
            if (n := _seal_number(uri)) is not None
        )
        if found:
            return audit.parse_seal(store.read(found[-1][1]).data)
    # No seal for two days (the first, or ticks that stopped): the whole folder, once.
    found = sorted(
        (n, uri) for uri in store.list(audit.seals_folder(audit_uri)) if (n := _seal_number(uri)) is not None
    )
    return audit.parse_seal(store.read(found[-1][1]).data) if found else None


def _last_entry(data: bytes, seq: int) -> audit.Entry:
    """A batch's last entry, which its name says is `seq`; AuditError when it is not."""
    lines = [line for line in data.splitlines() if line.strip()]
    entry = audit.parse_entry(lines[-1] if lines else b"")
    if entry.seq != seq:
        raise audit.AuditError(f"expected entry {seq} last in its batch, found entry {entry.seq}")
    return entry


def late(store: BlobStore, results_uri: str, audit_uri: str, now: datetime) -> tuple[audit.Entry, ...]:
    """Write a late entry for each ledger record changed in the last day (and at least LATE_AFTER ago) that no
    entry of today's or yesterday's names: a write whose buffered entry a crash lost, or one made without Relay.
    They go as one batch in a segment of their own, marked late with when they were noticed; `relay audit
    verify` lists each. A record rewritten without its entry is not found here (its older entry names it):
    verify names it as edited."""
    named: set[str] = set()
    listed = set()
    for day in audit.recent_days(now):
        for uri in store.list(audit.day_folder(audit_uri, day)):
            if _batch_place(audit_uri, uri) is None:
                continue
            if uri not in _NAMED:
                _NAMED[uri] = frozenset(_objects(store.read(uri).data))
            named |= _NAMED[uri]
            listed.add(uri)
    for gone in set(_NAMED) - listed:  # older than two days: never read again
        del _NAMED[gone]
    root = results_uri.rstrip("/")
    found: list[tuple[str, datetime, bytes]] = []
    for uri in store.list(root + "/"):
        name = audit.ledger_name(results_uri, uri)
        if name is None or name in named or uri in _OLD:
            continue
        try:
            updated = store.stat(uri).updated
            if updated is None or updated < now - timedelta(days=1):
                _OLD.add(uri)
            elif updated <= now - LATE_AFTER:
                found.append((name, updated, store.read(uri).data))
        except BlobNotFoundError:
            continue  # deleted since the listing (a retry marker taken): its delete has its own entry
    if not found:
        return ()
    chain = audit.Chain(audit.new_segment(now), audit.actor(os.environ))
    noticed = audit.stamp(now)
    entries = [
        chain.append(updated, audit.WRITE, name, digest=audit.digest(data), state=audit.state_of(data), late=noticed)
        for name, updated, data in found
    ]
    first, last = entries[0], entries[-1]
    where = audit.batch_uri(audit_uri, noticed[:10], first.segment, first.seq, last.seq)
    store.write(where, audit.encode_batch(entries), if_generation_match=0)
    return tuple(entries)


def _objects(data: bytes) -> Iterator[str]:
    for line in data.splitlines():
        try:
            yield audit.parse_entry(line).object
        except audit.AuditError:
            continue  # verify names it


def seal(store: BlobStore, audit_uri: str, now: datetime) -> Seal | None:
    """Chain every segment's last entry of today and yesterday into the next seal; None when there is nothing
    new to seal, another tick sealed first, or an entry or seal is not as written (`relay audit verify` names
    it: a broken trail must not stop the tick's reconciling)."""
    try:
        return _seal(store, audit_uri, now)
    except audit.AuditError:
        return None


def _seal(store: BlobStore, audit_uri: str, now: datetime) -> Seal | None:
    heads: dict[str, Head] = {}
    for day in audit.recent_days(now):
        for uri in store.list(audit.day_folder(audit_uri, day)):
            place = _batch_place(audit_uri, uri)
            if place is not None and (place[1] not in heads or heads[place[1]].seq < place[3]):
                heads[place[1]] = Head(place[3], uri)  # its batch's URI until it is read: the hash is the entry's
    if not heads:
        return None
    last = _last_seal(store, audit_uri, now)
    before = dict(last.heads) if last else {}
    if all(before.get(segment, Head(-1, "")).seq == head.seq for segment, head in heads.items()):
        return None
    # The seal names the heads of the segments that wrote today or yesterday: its size follows two days' instances.
    named = {
        segment: before[segment]
        if segment in before and before[segment].seq == head.seq
        else Head(head.seq, _last_entry(store.read(head.hash).data, head.seq).hash)
        for segment, head in heads.items()
    }
    sealed = Seal(last.number + 1 if last else 0, last.hash if last else "", audit.stamp(now), named).sealed()
    try:
        store.write(audit.seal_uri(audit_uri, sealed), sealed.encode(), if_generation_match=0)
    except PreconditionFailedError:
        return None
    return sealed
