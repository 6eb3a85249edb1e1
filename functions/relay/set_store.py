"""Sets of files in storage, under `<results>/sets/` (Relay's own storage), every write create-only or
generation-matched, so that any number of deliveries and ticks, on any instance, agree on each set:

- `<tenant>/<route>/<folder>/members/<object>.json`: which set an object version is in (create-only on its first
  delivery; moved, generation-matched, to the next set when its set closed without it). A redelivery reads it.
- `<tenant>/<route>/<folder>/<n>/objects/<stamp>-<object>-<d|m>.json`: object joined set n (m: the marker).
- `<tenant>/<route>/<folder>/<n>/sealed.json`: set n takes no new object (create-only: the decision to close).
- `<tenant>/<route>/<folder>/<n>/closed.json`: set n's objects, fixed (create-only, from a listing made after the
  seal: every delivery that wrote its object before it saw no seal is in that listing).
- `<tenant>/<route>/<folder>/head.json`: the set new objects join (a hint: a sealed one is passed over).
- `open/<tenant>/<route>/<folder>-<n>.json`: a set not launched (or recorded incomplete) yet: what the reconcile
  tick walks, to close sets on their quiet period or deadline, and to finish a close a crash interrupted.

Why this order: a delivery writes its object, then looks for the seal; a closer seals, then lists. So a delivery
that saw no seal is in the closer's listing; one that saw it reads closed.json and, when not in it, joins the next
set: an object arriving after its set closed starts the next one, never joins a closed one. The tenant is a path
segment, so no two tenants' sets share a name. The decisions are relay.sets; launching a closed set relay.service.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from relay import naming, records, sets
from relay.errors import BlobNotFoundError, PreconditionFailedError
from relay.ports import BlobStore

NO_TENANT = "_"  # as relay.queue: no tenant name has a "_"


@dataclass(frozen=True)
class Group:
    """The objects of one folder a route of a tenant collects: a run of sets, numbered from 1."""

    tenant: str
    route: str
    bucket: str
    folder: str

    def base(self, results_uri: str) -> str:
        tenant = self.tenant or NO_TENANT
        return naming.join(results_uri, naming.SETS, tenant, self.route, sets.group_digest(self.bucket, self.folder))

    def number(self, results_uri: str, number: int) -> str:
        return naming.join(self.base(results_uri), f"{number:06d}")

    def open_uri(self, results_uri: str, number: int) -> str:
        tenant = self.tenant or NO_TENANT
        name = f"{sets.group_digest(self.bucket, self.folder)}-{number:06d}.json"
        return naming.join(results_uri, naming.SETS, "open", tenant, self.route, name)

    def set_id(self, number: int) -> str:
        return sets.set_id(self.tenant, self.route, self.bucket, self.folder, number)


@dataclass(frozen=True)
class Member:
    """An object version a route's set collects."""

    bucket: str
    name: str
    generation: int
    marker: bool = False

    @property
    def uri(self) -> str:
        return naming.object_uri(self.bucket, self.name)

    @property
    def digest(self) -> str:
        return sets.object_digest(self.bucket, self.name, self.generation)


@dataclass(frozen=True)
class Closed:
    """A closed set as closed.json holds it: launch it (complete) or record it incomplete."""

    group: Group
    number: int
    reason: str
    members: tuple[sets.Arrival, ...]
    closed_at: str

    @property
    def set_id(self) -> str:
        return self.group.set_id(self.number)

    @property
    def complete(self) -> bool:
        return self.reason != sets.DEADLINE

    @property
    def objects(self) -> tuple[str, ...]:
        return tuple(m.uri for m in self.members if not m.marker)

    @property
    def marker(self) -> str | None:
        return next((m.uri for m in self.members if m.marker), None)

    def as_record(self) -> dict[str, Any]:
        group = self.group
        return {
            "set": self.set_id,
            "tenant": group.tenant,
            "route": group.route,
            "bucket": group.bucket,
            "folder": group.folder,
            "number": self.number,
            "reason": self.reason,
            "complete": self.complete,
            "objects": list(self.objects),
            "marker": self.marker,
            "members": [
                {"stamp": m.stamp, "digest": m.digest, "uri": m.uri, "generation": m.generation, "marker": m.marker}
                for m in self.members
            ],
            "closed_at": self.closed_at,
        }


def parse_closed(group: Group, record: Mapping[str, Any]) -> Closed:
    members = tuple(
        sets.Arrival(str(m["stamp"]), str(m["digest"]), str(m["uri"]), int(m["generation"]), bool(m["marker"]))
        for m in record.get("members") or ()
    )
    return Closed(group, int(record["number"]), str(record["reason"]), members, str(record["closed_at"]))


def join(
    store: BlobStore, results_uri: str, group: Group, rule: sets.SetRule, member: Member, now: datetime
) -> list[Closed]:
    """Join `member` to its folder's open set (or find the set a redelivery of it joined), closing that set if it
    is complete now. Every closed set this met (the member's own, one it passed over, the sets the objects a close
    left out completed), to launch or record incomplete: both are idempotent, keyed by the set. Empty while the
    member's set stays open."""
    found: list[Closed] = []
    _join(store, results_uri, group, rule, member, now, found)
    for closed in list(found):
        for stray in strays(store, results_uri, closed):
            _join(store, results_uri, group, rule, stray, now, found)
    return found


def _join(
    store: BlobStore,
    results_uri: str,
    group: Group,
    rule: sets.SetRule,
    member: Member,
    now: datetime,
    found: list[Closed],
) -> None:
    uri = naming.join(group.base(results_uri), "members", f"{member.digest}.json")
    number = _head(store, results_uri, group)
    assigned: dict[str, Any] = {
        "set": number,
        "stamp": sets.stamp(now),
        "uri": member.uri,
        "generation": member.generation,
    }
    try:
        generation = store.write(uri, records.encode(assigned), if_generation_match=0)
        first = True
    except PreconditionFailedError:  # a redelivery, or a stray moved on: the set it is in, and its first arrival
        blob = store.read(uri)
        assigned, generation, first = records.decode(blob.data), blob.generation, False
    arrival = sets.Arrival(str(assigned["stamp"]), member.digest, member.uri, member.generation, member.marker)
    number = int(assigned["set"])
    while True:
        closed = _enter(store, results_uri, group, rule, arrival, number, now, first=first)
        if closed is None:
            return
        if closed not in found:
            found.append(closed)
        if any(m.digest == member.digest for m in closed.members):
            return
        # Closed without it (it came after the seal, or past the size, a quiet gap or the deadline): the next set.
        number, generation = _move(store, uri, number, generation)
        first = False


def _enter(
    store: BlobStore,
    results_uri: str,
    group: Group,
    rule: sets.SetRule,
    arrival: sets.Arrival,
    number: int,
    now: datetime,
    *,
    first: bool,
) -> Closed | None:
    """Write the arrival into set `number`, then look for its seal: the set closed (by this or another), or None
    while it is open. `first`: the member's first delivery (the open index is then written by the set's earliest
    arrival only; any other writes it, as the delivery before it may have died first)."""
    folder = group.number(results_uri, number)
    if not first:
        _open(store, results_uri, group, number, now)
    with contextlib.suppress(PreconditionFailedError):  # written by a delivery before this one
        store.write(naming.join(folder, "objects", _entry_name(arrival)), b"{}\n", if_generation_match=0)
    if not _exists(store, naming.join(folder, naming.SET_SEALED)):
        arrivals = _arrivals(store, folder)
        earliest = min(arrivals)
        if first and (earliest.stamp, earliest.digest) == (arrival.stamp, arrival.digest):
            _open(store, results_uri, group, number, now)  # the set's first arrival opens it for the tick
        closing = sets.decide(rule, arrivals, now)
        if closing is None:
            return None
        seal(store, folder, closing.reason, now)
    return finish(store, results_uri, group, rule, number, now)


def is_member(store: BlobStore, results_uri: str, group: Group, member: Member) -> bool:
    """Whether `member` joined a set of `group` already (one read)."""
    return _member_record(store, results_uri, group, member.digest) is not None


def _move(store: BlobStore, uri: str, number: int, generation: int) -> tuple[int, int]:
    """Move a member's assignment from set `number` to the next, generation-matched; when another delivery (or the
    closer) moved it first, the set it moved it to."""
    blob = store.read(uri)
    assigned = records.decode(blob.data)
    if int(assigned["set"]) > number:
        return int(assigned["set"]), blob.generation
    moved = {**assigned, "set": number + 1}
    try:
        return number + 1, store.write(uri, records.encode(moved), if_generation_match=blob.generation)
    except PreconditionFailedError:
        return _move(store, uri, number, generation)


def seal(store: BlobStore, folder: str, reason: str, now: datetime) -> None:
    """Set `folder` takes no new object; sealed already is fine (the first seal's reason stands)."""
    document = {"reason": reason, "sealed_at": records.timestamp(now)}
    with contextlib.suppress(PreconditionFailedError):
        store.write(naming.join(folder, naming.SET_SEALED), records.encode(document), if_generation_match=0)


def finish(store: BlobStore, results_uri: str, group: Group, rule: sets.SetRule, number: int, now: datetime) -> Closed:
    """Set `number`'s closed.json, written from a listing made after its seal when no one has written it yet (a
    closer that died after sealing is finished here); then the objects the set left out are moved on to the next
    set. Once closed.json is there, this is two reads."""
    folder = group.number(results_uri, number)
    uri = naming.join(folder, naming.SET_CLOSED)
    try:
        closed = parse_closed(group, records.decode(store.read(uri).data))
    except BlobNotFoundError:
        sealed = records.decode(store.read(naming.join(folder, naming.SET_SEALED)).data)
        arrivals = _arrivals(store, folder)
        closing = sets.decide(rule, arrivals, now) or sets.Closing(str(sealed["reason"]), tuple(sorted(arrivals)))
        members = tuple(_with_object(store, group, m, results_uri) for m in closing.members)
        closed = Closed(group, number, closing.reason, members, records.timestamp(now))
        try:
            store.write(uri, records.encode(closed.as_record()), if_generation_match=0)
        except PreconditionFailedError:
            closed = parse_closed(group, records.decode(store.read(uri).data))
    _advance_head(store, results_uri, group, number)
    return closed


def strays(store: BlobStore, results_uri: str, closed: Closed) -> list[Member]:
    """Objects that wrote themselves into a closed set but are not in it: each joins the next set (their own
    deliveries do so as well; whichever is first, the member record moves once)."""
    inside = {m.digest for m in closed.members}
    out = []
    for arrival in _arrivals(store, closed.group.number(results_uri, closed.number)):
        if arrival.digest not in inside:
            found = _member_record(store, results_uri, closed.group, arrival.digest)
            # Up to the next set: a mover that died between the move and its entry there is finished too.
            if found is not None and int(found.get("set", 0)) <= closed.number + 1:
                bucket, name = naming.split_gs_uri(str(found["uri"]))
                out.append(Member(bucket, name, int(found["generation"]), arrival.marker))
    return out


def done(store: BlobStore, results_uri: str, closed: Closed) -> None:
    """The set is launched (or recorded incomplete): the tick need not look at it again."""
    with contextlib.suppress(PreconditionFailedError):
        store.delete(closed.group.open_uri(results_uri, closed.number))


@dataclass(frozen=True)
class OpenSet:
    group: Group
    number: int


def open_sets(store: BlobStore, results_uri: str) -> Iterator[OpenSet]:
    """Every set not yet launched or recorded incomplete: one listing, page by page."""
    prefix = naming.join(results_uri, naming.SETS, "open") + "/"
    for uri in store.list(prefix):
        try:
            document = records.decode(store.read(uri).data)
            group = Group(str(document["tenant"]), str(document["route"]), document["bucket"], document["folder"])
            yield OpenSet(group, int(document["number"]))
        except (BlobNotFoundError, ValueError, KeyError):
            continue  # done meanwhile, or not ours


def close_due(store: BlobStore, results_uri: str, open_set: OpenSet, rule: sets.SetRule, now: datetime) -> list[Closed]:
    """On the tick: close an open set whose quiet period or deadline has passed (or finish one a crash left sealed,
    or find one closed but not launched), with the sets the objects it left out complete; empty while it stays
    open."""
    group, number = open_set.group, open_set.number
    folder = group.number(results_uri, number)
    if not _exists(store, naming.join(folder, naming.SET_SEALED)):
        closing = sets.decide(rule, _arrivals(store, folder), now)
        if closing is None:
            return []
        seal(store, folder, closing.reason, now)
    found = [finish(store, results_uri, group, rule, number, now)]
    for stray in strays(store, results_uri, found[0]):
        _join(store, results_uri, group, rule, stray, now, found)
    return found


# --- storage details ---------------------------------------------------------------------------------------------


def _entry_name(arrival: sets.Arrival) -> str:
    return f"{arrival.stamp}-{arrival.digest}-{'m' if arrival.marker else 'd'}.json"


def _arrivals(store: BlobStore, folder: str) -> list[sets.Arrival]:
    """The set's arrivals as its listing names them (no reads): stamp, object digest and marker flag."""
    prefix = naming.join(folder, "objects") + "/"
    found = []
    for uri in store.list(prefix):
        parts = uri[len(prefix) :].removesuffix(".json").split("-")
        if len(parts) == 3:
            found.append(sets.Arrival(parts[0], parts[1], marker=parts[2] == "m"))
    return found


def _with_object(store: BlobStore, group: Group, arrival: sets.Arrival, results_uri: str) -> sets.Arrival:
    """The arrival with its object's URI and generation, from its member record (read once, at the close)."""
    found = _member_record(store, results_uri, group, arrival.digest) or {}
    return sets.Arrival(
        arrival.stamp, arrival.digest, str(found.get("uri", "")), int(found.get("generation", 0)), arrival.marker
    )


def _member_record(store: BlobStore, results_uri: str, group: Group, digest: str) -> dict[str, Any] | None:
    try:
        return records.decode(store.read(naming.join(group.base(results_uri), "members", f"{digest}.json")).data)
    except BlobNotFoundError:
        return None


def _open(store: BlobStore, results_uri: str, group: Group, number: int, now: datetime) -> None:
    document = {
        "tenant": group.tenant,
        "route": group.route,
        "bucket": group.bucket,
        "folder": group.folder,
        "number": number,
        "opened_at": records.timestamp(now),
    }
    with contextlib.suppress(PreconditionFailedError):
        store.write(group.open_uri(results_uri, number), records.encode(document), if_generation_match=0)


def _exists(store: BlobStore, uri: str) -> bool:
    try:
        store.stat(uri)
    except BlobNotFoundError:
        return False
    return True


def _head(store: BlobStore, results_uri: str, group: Group) -> int:
    try:
        return int(records.decode(store.read(naming.join(group.base(results_uri), "head.json")).data)["number"])
    except (BlobNotFoundError, ValueError, KeyError):
        return 1


def _advance_head(store: BlobStore, results_uri: str, group: Group, number: int) -> None:
    """Point new objects past closed set `number` (a hint: losing a race to another closer is fine)."""
    uri = naming.join(group.base(results_uri), "head.json")
    try:
        blob = store.read(uri)
        current, generation = int(records.decode(blob.data)["number"]), blob.generation
    except (BlobNotFoundError, ValueError, KeyError):
        current, generation = 1, 0
    if current > number:
        return
    with contextlib.suppress(PreconditionFailedError):
        store.write(uri, records.encode({"number": number + 1}), if_generation_match=generation)
