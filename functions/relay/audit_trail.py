"""Reading the audit trail and sealing it: the I/O around relay.audit's chain and relay.audit_verify's proof.

A seal is created once (create-only, numbered one past the last): two ticks at once make one seal, the other
finds its number taken and leaves it to the next tick. A tick lists only today's and yesterday's entries, so its
cost follows the day's events, not the trail's age.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from relay import audit
from relay.audit import Head, Seal
from relay.audit_verify import Report, Stored, verify
from relay.errors import PreconditionFailedError
from relay.ports import BlobStore

_READERS = 8  # reads in flight while verifying: a trail is many small objects


def _entry_place(audit_uri: str, uri: str) -> tuple[str, str, int] | None:
    """(day, segment, number) of an entry's URI; None for anything else (a seal, a stray object)."""
    parts = uri[len(audit_uri) + 1 :].split("/")
    if len(parts) != 3 or parts[0] == audit.SEALS or not parts[2].endswith(".json"):
        return None
    number = parts[2].removesuffix(".json")
    return (parts[0], parts[1], int(number)) if number.isdecimal() else None


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
    """Every entry (from the day of `since` on), read."""
    first_day = since.strftime("%Y-%m-%d") if since else ""
    places = []
    for uri in store.list(audit_uri + "/"):
        place = _entry_place(audit_uri, uri)
        if place is not None and place[0] >= first_day:
            places.append((uri, place[1], place[2]))
    found = _stored(store, places)
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
            place = _entry_place(audit_uri, uri)
            if place is not None and (place[1] not in heads or heads[place[1]].seq < place[2]):
                heads[place[1]] = Head(place[2], uri)  # its URI until it is read: the hash is the entry's
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
        else Head(head.seq, audit.parse_entry(store.read(head.hash).data).hash)
        for segment, head in heads.items()
    }
    sealed = Seal(last.number + 1 if last else 0, last.hash if last else "", audit.stamp(now), named).sealed()
    try:
        store.write(audit.seal_uri(audit_uri, sealed), sealed.encode(), if_generation_match=0)
    except PreconditionFailedError:
        return None
    return sealed
