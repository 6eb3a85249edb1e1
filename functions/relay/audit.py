"""The audit trail's chain: what an entry and a seal hold, where they live, and which writes are the ledger's. Shapes
and rules only; relay.adapters.audited makes an entry for each of the ledger's writes and writes them in batches,
relay.audit_trail seals them, and relay.audit_verify proves them.

Each process writes its own segment (an id of its own, entries numbered from 0, each naming the previous one's
hash), so instances never wait on one another; its entries are written in batches of consecutive entries, each batch
created once (create-only) and never replaced. A reconcile tick seals: one global chain of seals, each naming every
segment's last entry it saw, so a segment's removed tail shows once a seal has named it. An entry holds digests and
names, never a record's contents.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from relay import naming

AUDIT_FOLDER = "audit"
SEALS = "seals"
WRITE, DELETE, SEEN, VOID = "write", "delete", "seen", "void"
# Not the ledger: places Relay coordinates through (queue places, cap slots, rate marks, holds, the reconcile
# cursor, the local backend's store id), rewritten or deleted as a matter of course and holding no decision of
# their own; a queued run's decision is its launch.json's; the runs board, a page drawn from the records. Every
# other object under the results is audited, but for the bookkeeping below (SET_LEDGER).
# `expectations/`: arrival marks, one a window of an absence declaration, written by the delivery the window's
# first arrival was; each restates a run whose own records (launch.json, its run key named in the mark) are the
# ledger's, and the decision the marks feed, an absence, is its record under `absences/`, audited.
NOT_LEDGER = (
    f"{AUDIT_FOLDER}/",
    "queue/entries/",
    "queue/slots/",
    "queue/rate/",
    "queue/hold-",
    "reconcile/",
    "local-backend.json",
    "board/",
    f"{naming.EXPECTATIONS}/",
)
# Under `sets/` (relay.set_store) only a set's seal (the decision that it takes no new object) and its closed list
# (which objects the run it launched is given, or why it was recorded incomplete) are the ledger's: with the run's
# own launch.json they say who and what launched. The rest is per-object bookkeeping: each object's member record
# (moved to the next set when its set closed without it), its arrival mark in a set, the head hint, and the open
# index the tick walks (deleted once the set is launched); the closed list names every object the set took.
SET_LEDGER = (naming.SET_SEALED, naming.SET_CLOSED)
_DAY = "%Y-%m-%d"


class AuditError(Exception):
    """An audit entry could not be written or read as the chain expects."""


def location(results_uri: str, audit_uri: str = "") -> str:
    """Where the trail lives: `audit_uri` (RELAY_AUDIT_URI: a bucket with a retention policy, as deploy makes
    it), else `audit/` under the results."""
    return (audit_uri or naming.join(results_uri, AUDIT_FOLDER)).rstrip("/")


def actor(environ: Mapping[str, str]) -> str:
    """Who acts through this process: the function's service (Cloud Run sets K_SERVICE), else the local user."""
    if service := environ.get("K_SERVICE"):
        return f"function:{service}"
    import getpass  # here: a deployed function never needs it (cold start)

    try:
        return f"user:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name in a bare container
        return "user:unknown"


def ledger_name(results_uri: str, uri: str) -> str | None:
    """`uri`'s name under the results when it is a ledger record, else None."""
    root = results_uri.rstrip("/") + "/"
    if not uri.startswith(root):
        return None
    name = uri[len(root) :]
    return name if in_ledger(name) else None


def in_ledger(name: str) -> bool:
    """Whether the object `name` under the results is a ledger record (NOT_LEDGER, SET_LEDGER)."""
    if not name or name.startswith(NOT_LEDGER):
        return False
    return not name.startswith(f"{naming.SETS}/") or name.rpartition("/")[2] in SET_LEDGER


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def stamp(moment: datetime) -> str:
    """Microseconds: entries of one record from two instances order by it (their writes are generation-matched,
    so the later one started after the earlier one ended)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def state_of(data: bytes) -> str | None:
    """A JSON record's `state` (launching, launched, queued, cancelled...): what kind of change the write was."""
    try:
        value = json.loads(data)
    except ValueError:
        return None
    state = value.get("state") if isinstance(value, dict) else None
    return state if isinstance(state, str) else None


@dataclass(frozen=True)
class Entry:
    segment: str
    seq: int
    prev: str  # the previous entry's hash in this segment; "" for the first
    at: str
    who: str
    op: str  # WRITE, DELETE, SEEN (a read Relay acted on: the policy), VOID (the write `voids` never landed)
    object: str  # the record's name under the results (SEEN: its URI)
    digest: str | None = None  # the bytes written or seen
    state: str | None = None
    precondition: int | None = None  # the generation the write or delete required (0: create-only)
    voids: int | None = None
    late: str | None = None  # a write found without its entry: when a tick noticed it (`at`: when it was made)
    hash: str = ""

    # vars(), not asdict(): every field is a scalar, and asdict's deep copy of each was most of an entry's cost on
    # the event's path (two per launch).
    def body(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "hash"}

    def sealed(self) -> Entry:
        body = self.body()
        return Entry(**body, hash=chain_hash(body))

    def encode(self) -> bytes:
        return json.dumps(vars(self), sort_keys=True).encode() + b"\n"


def chain_hash(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def parse_entry(data: bytes) -> Entry:
    """An entry as written; AuditError for anything else (an edit that broke its shape)."""
    try:
        value = json.loads(data)
        return Entry(**value) if isinstance(value, dict) else _refuse(value)
    except (ValueError, TypeError) as exc:
        raise AuditError(f"expected an audit entry (JSON with the entry's fields), found {data[:80]!r}") from exc


def _refuse(value: Any) -> Entry:
    raise TypeError(f"not an object: {type(value).__name__}")


def new_segment(now: datetime) -> str:
    """A segment id per process: sorts by when it started, unique by its random part."""
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:16]


def batch_uri(audit_uri: str, day: str, segment: str, first: int, last: int) -> str:
    """`<audit>/<day>/<segment>/<first>-<last>.json`: consecutive entries of one segment, one per line, created
    once; a tick lists only today's and yesterday's folders to seal."""
    return naming.join(audit_uri, day, segment, f"{first:010d}-{last:010d}.json")


def encode_batch(entries: Sequence[Entry]) -> bytes:
    return b"".join(entry.encode() for entry in entries)


def batch_range(name: str) -> tuple[int, int] | None:
    """(first, last) of a batch's file name; None for anything else."""
    first, dash, last = name.removesuffix(".json").partition("-")
    if not (name.endswith(".json") and dash and first.isdecimal() and last.isdecimal()):
        return None
    return int(first), int(last)


@runtime_checkable
class Buffered(Protocol):
    """A store whose entries wait in a buffer: a tick writes them before it seals."""

    def flush_audit(self) -> None: ...


def flush(store: object) -> None:
    """Write what `store` holds of the trail, if it holds any (relay.adapters.audited)."""
    if isinstance(store, Buffered):
        store.flush_audit()


def day_folder(audit_uri: str, day: datetime) -> str:
    return naming.join(audit_uri, day.astimezone(UTC).strftime(_DAY)) + "/"


def recent_days(now: datetime) -> tuple[datetime, datetime]:
    return now - timedelta(days=1), now


class Chain:
    """One segment being written: numbers and links each entry under a lock (no I/O under it), so entries
    from any number of threads form one unbroken chain whatever order their writes land in."""

    def __init__(self, segment: str, who: str) -> None:
        self.segment = segment
        self._who = who
        self._seq = 0
        self._prev = ""
        self._lock = threading.Lock()

    def append(self, now: datetime, op: str, name: str, **facts: Any) -> Entry:
        with self._lock:
            entry = Entry(self.segment, self._seq, self._prev, stamp(now), self._who, op, name, **facts).sealed()
            self._seq += 1
            self._prev = entry.hash
            return entry


@dataclass(frozen=True)
class Head:
    """A segment's last entry as a seal names it."""

    seq: int
    hash: str


@dataclass(frozen=True)
class Seal:
    number: int
    prev: str  # the previous seal's hash; "" for the first
    at: str
    heads: Mapping[str, Head]
    hash: str = ""

    def body(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "prev": self.prev,
            "at": self.at,
            "heads": {segment: asdict(head) for segment, head in sorted(self.heads.items())},
        }

    def sealed(self) -> Seal:
        return Seal(self.number, self.prev, self.at, self.heads, chain_hash(self.body()))

    def encode(self) -> bytes:
        return json.dumps({**self.body(), "hash": self.hash}, sort_keys=True).encode() + b"\n"


def parse_seal(data: bytes) -> Seal:
    try:
        value = json.loads(data)
        heads = {segment: Head(int(h["seq"]), str(h["hash"])) for segment, h in value["heads"].items()}
        return Seal(int(value["number"]), str(value["prev"]), str(value["at"]), heads, str(value["hash"]))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise AuditError(f"expected an audit seal (number, prev, at, heads, hash), found {data[:80]!r}") from exc


def seals_folder(audit_uri: str) -> str:
    return naming.join(audit_uri, SEALS) + "/"


def seal_uri(audit_uri: str, seal: Seal) -> str:
    """`<audit>/seals/<day>/<number>.json`: a tick finds the last seal in today's or yesterday's folder."""
    return naming.join(audit_uri, SEALS, seal.at[:10], f"{seal.number:010d}.json")


def seal_day_folder(audit_uri: str, day: datetime) -> str:
    return naming.join(audit_uri, SEALS, day.astimezone(UTC).strftime(_DAY)) + "/"
