"""Sets of files as one run: the pure decisions on a route's `set` (when a set is complete, with which objects).

A route with a `set` collects the objects it takes, folder by folder, into numbered sets; a set closes when
`size` objects have arrived, when its `marker` object lands, or when no object has arrived for `quiet_seconds`;
past `deadline_seconds` from its first object it closes incomplete. Arrivals are Relay's own (when a delivery
joined the object to the set), so the decisions depend on what the store holds and the time asked, nothing else.
The storage protocol is relay.set_store.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

DEFAULT_DEADLINE = 86400.0  # a day: a set that has not completed by then is recorded incomplete
MAX_SIZE = 10_000  # the most objects one set's run is given: its object list is one run parameter
# Why a set closed, as its records say.
SIZE, MARKER, QUIET, DEADLINE = "size", "marker", "quiet", "deadline"


@dataclass(frozen=True)
class SetRule:
    """When a route's set is complete: any of size, marker, quiet_seconds (one at least); incomplete past
    deadline_seconds from its first object."""

    size: int | None = None
    marker: str | None = None
    quiet_seconds: float | None = None
    deadline_seconds: float = DEFAULT_DEADLINE

    def is_marker(self, name: str) -> bool:
        """Whether the object `name` is the marker: its last segment equals it (a glob is allowed, e.g. _SUCCESS*)."""
        return self.marker is not None and fnmatch.fnmatchcase(name.rsplit("/", 1)[-1], self.marker)


@dataclass(frozen=True, order=True)
class Arrival:
    """One object joined to a set: when (Relay's clock, as `stamp` text that sorts in time), which object (its
    digest breaks ties), and whether it is the marker."""

    stamp: str
    digest: str
    uri: str = ""
    generation: int = 0
    marker: bool = False

    @property
    def at(self) -> datetime:
        return parse_stamp(self.stamp)


@dataclass(frozen=True)
class Closing:
    """A set that closes now: why (SIZE, MARKER, QUIET or DEADLINE), and its members in arrival order. Arrivals
    left out (past the size, after a quiet gap or the deadline) start the next set."""

    reason: str
    members: tuple[Arrival, ...]

    @property
    def complete(self) -> bool:
        return self.reason != DEADLINE

    @property
    def objects(self) -> tuple[str, ...]:
        """The set's objects, as its run is given them: every member but the marker, in arrival order."""
        return tuple(member.uri for member in self.members if not member.marker)


def decide(rule: SetRule, arrivals: Iterable[Arrival], now: datetime) -> Closing | None:
    """Whether the set these arrivals make closes at `now`, or None while it stays open. Redelivered objects (one
    digest twice) count once, at their first arrival."""
    ordered: list[Arrival] = []
    seen: set[str] = set()
    for arrival in sorted(arrivals):
        if arrival.digest not in seen:
            seen.add(arrival.digest)
            ordered.append(arrival)
    if not ordered:
        return None
    first = ordered[0].at
    deadline = first + timedelta(seconds=rule.deadline_seconds)
    quiet = timedelta(seconds=rule.quiet_seconds) if rule.quiet_seconds is not None else None
    members: list[Arrival] = []
    cut = ""  # why an arrival proves the set was over before it came: past the deadline, or after a quiet gap
    for arrival in ordered:
        if arrival.at > deadline:
            cut = DEADLINE
            break
        if quiet is not None and members and arrival.at - members[-1].at >= quiet:
            cut = QUIET
            break
        members.append(arrival)
        if rule.size is not None and sum(not m.marker for m in members) >= rule.size:
            return Closing(SIZE, tuple(members))
    # A marker closes the set with every object that arrived, before it or after (its notification may overtake
    # theirs): a set is what the store shows when it closes.
    if any(m.marker for m in members):
        return Closing(MARKER, tuple(members))
    if cut:
        return Closing(cut, tuple(members))
    if quiet is not None and now - members[-1].at >= quiet:
        return Closing(QUIET, tuple(members))
    if now > deadline:
        return Closing(DEADLINE, tuple(members))
    return None


def group_of(name: str) -> str:
    """The folder an object's set is collected in: its name up to the last `/` ("" at the bucket's top)."""
    return name.rpartition("/")[0]


def set_id(tenant: str, route: str, bucket: str, group: str, number: int) -> str:
    """A set's identity, unique across tenants, routes, buckets and folders (its run key is a digest of it)."""
    return f"{tenant}/{route}/gs://{bucket}/{group}#{number}"


def group_digest(bucket: str, group: str) -> str:
    """A folder as one object name segment (a folder's name may be long, or hold anything)."""
    return hashlib.sha256(f"gs://{bucket}/{group}".encode()).hexdigest()[:32]


def object_digest(bucket: str, name: str, generation: int) -> str:
    return hashlib.sha256(f"gs://{bucket}/{name}#{generation}".encode()).hexdigest()[:32]


def stamp(moment: datetime) -> str:
    """An arrival time as text that sorts in time, to the microsecond (an object name segment)."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def parse_stamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)
