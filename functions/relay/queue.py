"""The queue's objects, under `<results>/queue/` (Relay's own storage, which no trigger names or reads):

- `entries/<tenant>/<place>.json`: one per queued run, named by its place (its priority, the higher first, then
  arrival time, a sequence and the run key), so that a listing, which Cloud Storage returns in name order, is the
  queue in the order it drains. The
  run itself waits in its launch record (`runs/<key>/launch.json`, state `queued`): the entry only orders it.
- `slots/<scope>/<n>.json`: a run in flight under a cap holds slot n of each capped scope it counts against, one of
  `max_in_flight` names, taken create-only: two takers of one slot cannot both win, so a scope never holds more
  runs than its cap. Counting a scope is one listing of at most `max_in_flight` names; a slot is given back by a
  delete matched to the generation the launch record keeps, so a late or repeated release frees no other run's.
- `rate/<scope>/<minute>/<n>.json`: the same for `max_per_minute`, one name per launch in that minute, never given
  back (a minute's window is swept once past).
- `paused/<tenant>[--<pipeline>].json`: a pause (`relay pause`); `hold-<backend>.json`: no submit before its time
  (a backend's Retry-After), for every instance; `drainer-<backend>.json`: the drain lease, held by the one
  delivery that stays past its follow-through while runs wait (relay.drain).

Only storage here, through the BlobStore port; which scopes cap a run is relay.policy_caps, the drain relay.drain.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from relay import naming, records
from relay.errors import BlobNotFoundError, PreconditionFailedError, TransientError
from relay.policy_caps import CapScope, cap_scopes, describe, paused_by
from relay.policy_model import Policy
from relay.ports import BlobStore
from relay.triggers import MAX_PRIORITY

NO_TENANT = "_"  # the entries folder of a deployment without tenants: no tenant name has a "_"
_ARRIVALS = itertools.count()  # within one process, two arrivals in one microsecond keep their order


def folder(results_uri: str, *parts: str) -> str:
    return naming.join(results_uri, "queue", *parts) + "/"


# --- entries -----------------------------------------------------------------------------------------------------


def place_for(now: datetime, run_key: str, priority: int = 0) -> str:
    """A queued run's place: sorts by priority (the higher first), then arrival time, then the order of arrivals
    within this process."""
    stamp = records.timestamp(now).replace(":", "").replace("-", "")
    return f"p{MAX_PRIORITY - priority}-{stamp}-{next(_ARRIVALS):012d}-{run_key}"


def taken_place(place: str, run_key: str) -> str:
    """The place `run_key` takes over from the run that held `place` (superseded): the same priority, arrival
    time and order, so it sorts where that one did."""
    return "-".join([*place.split("-", 3)[:3], run_key])


def run_key_of(place: str) -> str:
    return place.split("-", 3)[3]


def entry_uri(results_uri: str, tenant: str, place: str) -> str:
    return folder(results_uri, "entries", tenant or NO_TENANT) + f"{place}.json"


def add_entry(store: BlobStore, results_uri: str, tenant: str, place: str) -> None:
    """The run's place in its tenant's queue; already there is fine (a redelivery, or a retry after a crash)."""
    with contextlib.suppress(PreconditionFailedError):
        store.write(entry_uri(results_uri, tenant, place), b"{}\n", if_generation_match=0)


def remove_entry(store: BlobStore, results_uri: str, tenant: str, place: str) -> None:
    store.delete(entry_uri(results_uri, tenant, place))


@dataclass(frozen=True)
class Entry:
    tenant: str  # "" : a deployment without tenants
    place: str

    @property
    def run_key(self) -> str:
        return run_key_of(self.place)


def entries(store: BlobStore, results_uri: str, tenant: str | None = None) -> Iterator[Entry]:
    """Every queued run (only `tenant`'s, when given), tenant by tenant, each tenant's in arrival order; read
    lazily, page by page."""
    prefix = folder(results_uri, "entries")
    within = prefix if tenant is None else folder(results_uri, "entries", tenant or NO_TENANT)
    for uri in store.list(within):
        owner, _, name = uri[len(prefix) :].partition("/")
        if name.endswith(".json") and name.count("-") >= 3:
            yield Entry("" if owner == NO_TENANT else owner, name.removesuffix(".json"))


def position(store: BlobStore, results_uri: str, tenant: str, place: str) -> int | None:
    """1 for the first in its tenant's queue; None when the run has no place (any more)."""
    prefix = folder(results_uri, "entries", tenant or NO_TENANT)
    for number, uri in enumerate(store.list(prefix), start=1):
        if uri == prefix + f"{place}.json":
            return number
    return None


# --- slots and the rate window ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Held:
    """One slot (or rate token) taken, and the generation that proves it is this run's."""

    uri: str
    generation: int

    def as_record(self) -> dict[str, Any]:
        return {"uri": self.uri, "generation": self.generation}


def slots_folder(results_uri: str, scope: CapScope) -> str:
    return folder(results_uri, "slots", scope.id)


def rate_folder(results_uri: str, scope: CapScope, now: datetime) -> str:
    return folder(results_uri, "rate", scope.id, now.strftime("%Y%m%dT%H%MZ"))


def _take(store: BlobStore, prefix: str, size: int, run_key: str, now: datetime, taken: set[str]) -> Held | None:
    """One of `size` names under `prefix` not in `taken` (the names seen taken), taken create-only; None when every
    one is taken. One write per name tried: a name another taker won meanwhile is passed over, and added to
    `taken`, as is the name won."""
    body = records.encode({"run_key": run_key, "taken_at": records.timestamp(now)})
    for number in range(size):
        uri = f"{prefix}{number:04d}.json"
        if uri in taken:
            continue
        taken.add(uri)
        try:
            return Held(uri, store.write(uri, body, if_generation_match=0))
        except PreconditionFailedError:
            continue
    return None


class SlotView:
    """One drain's view of the slots and rate windows it looks at: each folder listed once per drain, then kept by
    what the drain takes and gives back, so a drain launching many runs lists a scope once, not once a run. A view
    that errs full only stops the drain early (the next one looks afresh); one that errs empty costs a create
    that fails, since every take is create-only."""

    def __init__(self, store: BlobStore, results_uri: str) -> None:
        self.store, self.results_uri = store, results_uri
        self._taken: dict[str, set[str]] = {}

    def taken(self, prefix: str) -> set[str]:
        if prefix not in self._taken:
            self._taken[prefix] = set(self.store.list(prefix))
        return self._taken[prefix]

    def full(self, scope: CapScope, now: datetime) -> str | None:
        """Why `scope` has no room now ("in flight" or "rate"), or None: at most one listing per cap it has, per
        view."""
        cap = scope.cap
        if (
            cap.max_in_flight is not None
            and len(self.taken(slots_folder(self.results_uri, scope))) >= cap.max_in_flight
        ):
            return "in flight"
        if (
            cap.max_per_minute is not None
            and len(self.taken(rate_folder(self.results_uri, scope, now))) >= cap.max_per_minute
        ):
            return "rate"
        return None

    def given_back(self, held: Iterable[Held]) -> None:
        for slot in held:
            self.taken(slot.uri.rsplit("/", 1)[0] + "/").discard(slot.uri)


def full(store: BlobStore, results_uri: str, scope: CapScope, now: datetime) -> str | None:
    """Why `scope` has no room now ("in flight" or "rate"), or None: one listing per cap it has."""
    return SlotView(store, results_uri).full(scope, now)


@dataclass(frozen=True)
class Taken:
    """What a run took to launch: its slots (given back at its end) and rate tokens; or the scope it found full."""

    held: tuple[Held, ...] = ()
    full: CapScope | None = None
    rate: bool = False  # the scope found full was full for its rate, not its runs in flight


def take(view: SlotView, scopes: Sequence[CapScope], run_key: str, now: datetime) -> Taken:
    """A slot in every scope with max_in_flight, then a rate token in every one with max_per_minute; all or none
    of the slots (a token taken before a later scope was found full stays spent: the rate errs low)."""
    store, results_uri = view.store, view.results_uri
    slots: list[Held] = []
    for scope in scopes:
        if scope.cap.max_in_flight is None:
            continue
        prefix = slots_folder(results_uri, scope)
        held = _take(store, prefix, scope.cap.max_in_flight, run_key, now, view.taken(prefix))
        if held is None:
            release(store, slots)
            view.given_back(slots)
            return Taken(full=scope)
        slots.append(held)
    for scope in scopes:
        if scope.cap.max_per_minute is None:
            continue
        prefix = rate_folder(results_uri, scope, now)
        if _take(store, prefix, scope.cap.max_per_minute, run_key, now, view.taken(prefix)) is None:
            release(store, slots)
            view.given_back(slots)
            return Taken(full=scope, rate=True)
    return Taken(tuple(slots))


def release(store: BlobStore, held: Iterable[Held]) -> None:
    """Give slots back; one released already (or taken by another run since) is left as it is. If a release
    fails, the reconcile tick's sweep gives the slot back."""
    for slot in held:
        with contextlib.suppress(PreconditionFailedError, TransientError):
            store.delete(slot.uri, if_generation_match=slot.generation)


def held_by(record: Mapping[str, Any]) -> tuple[Held, ...]:
    """The slots a launch record says its run holds."""
    found = []
    for item in record.get("slots") or ():
        if isinstance(item, Mapping) and isinstance(item.get("uri"), str) and isinstance(item.get("generation"), int):
            found.append(Held(item["uri"], item["generation"]))
    return tuple(found)


@dataclass(frozen=True)
class Swept:
    """What a sweep did and saw: the slots it gave back, the run keys that hold a slot, and those with a place in
    the queue (waiting, or launched by a drain that died before removing its place)."""

    freed: int = 0
    holders: frozenset[str] = frozenset()
    queued: frozenset[str] = frozenset()


def sweep(store: BlobStore, results_uri: str, ended: Iterable[str], now: datetime, grace: float) -> Swept:
    """Give back the slots no run holds any more (their run ended, or was never launched with them: a taker that
    crashed before its claim, a release that failed), older than `grace` seconds; and delete rate windows that have
    passed. One listing, then one read per slot."""
    done = set(ended)
    current = now.strftime("%Y%m%dT%H%MZ")
    freed = 0
    holders: set[str] = set()
    queued: set[str] = set()
    entries_prefix = folder(results_uri, "entries")
    for uri in store.list(folder(results_uri)):
        relative = uri[len(folder(results_uri)) :]
        if uri.startswith(entries_prefix) and uri.endswith(".json") and uri.count("-") >= 3:
            queued.add(run_key_of(uri.rsplit("/", 1)[1].removesuffix(".json")))
        elif relative.startswith("rate/") and relative.split("/")[2] < current:
            with contextlib.suppress(PreconditionFailedError):
                store.delete(uri)
        elif relative.startswith("slots/"):
            holder = _unheld(store, results_uri, uri, done, now, grace)
            if holder is None:
                freed += 1
            elif holder:
                holders.add(holder)
    return Swept(freed, frozenset(holders), frozenset(queued))


def _unheld(store: BlobStore, results_uri: str, uri: str, ended: set[str], now: datetime, grace: float) -> str | None:
    """Give the slot back if no run holds it (None); else the run key it names ("" : a slot that cannot be read,
    or gone meanwhile)."""
    try:
        blob = store.read(uri)
        slot = records.decode(blob.data)
        key = str(slot["run_key"])
        if (now - records.parse_timestamp(slot["taken_at"])).total_seconds() < grace:
            return key
    except (BlobNotFoundError, ValueError, KeyError, TypeError):
        return ""
    if key not in ended:
        try:
            launch = records.decode(store.read(naming.launch_record(results_uri, key)).data)
        except BlobNotFoundError:
            launch = {}
        if Held(uri, blob.generation) in held_by(launch):
            return key
    release(store, [Held(uri, blob.generation)])
    return None


# --- pauses and the backend's hold -----------------------------------------------------------------------------


def pause_uri(results_uri: str, tenant: str, pipeline: str = "") -> str:
    name = tenant or NO_TENANT
    return folder(results_uri, "paused") + (f"{name}--{pipeline}.json" if pipeline else f"{name}.json")


def pause(store: BlobStore, results_uri: str, tenant: str, pipeline: str, *, by: str, now: datetime) -> bool:
    """Pause a tenant (or one of its pipelines): its runs queue and none launches; False when it was paused."""
    document = {"tenant": tenant, "pipeline": pipeline, "paused_by": by, "paused_at": records.timestamp(now)}
    try:
        store.write(pause_uri(results_uri, tenant, pipeline), records.encode(document), if_generation_match=0)
    except PreconditionFailedError:
        return False
    return True


def resume(store: BlobStore, results_uri: str, tenant: str, pipeline: str) -> bool:
    """End a pause; False when there was none."""
    uri = pause_uri(results_uri, tenant, pipeline)
    try:
        store.stat(uri)
    except BlobNotFoundError:
        return False
    store.delete(uri)
    return True


def paused(store: BlobStore, results_uri: str) -> frozenset[tuple[str, str]]:
    """Every pause: (tenant, "") for a whole tenant, (tenant, pipeline) for one pipeline. One listing."""
    prefix = folder(results_uri, "paused")
    found = set()
    for uri in store.list(prefix):
        tenant, _, pipeline = uri[len(prefix) :].removesuffix(".json").partition("--")
        found.add(("" if tenant == NO_TENANT else tenant, pipeline))
    return frozenset(found)


# How old the launch path's view of the pauses may be: a pause reaches an instance's new triggers within this, and an
# uncapped trigger pays no round trip for pauses (a capped one goes through the queue, whose drains read afresh).
PAUSE_VIEW_SECONDS = 5.0


class PauseView:
    """One instance's view of the pauses for its launch path: at most one listing per PAUSE_VIEW_SECONDS."""

    def __init__(self, seconds: float = PAUSE_VIEW_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self._seconds, self._clock = seconds, clock
        self._lock = threading.Lock()
        self._seen: tuple[float, str, frozenset[tuple[str, str]]] | None = None

    def get(self, store: BlobStore, results_uri: str) -> frozenset[tuple[str, str]]:
        now = self._clock()
        with self._lock:
            seen = self._seen
        if seen is not None and seen[1] == results_uri and now - seen[0] < self._seconds:
            return seen[2]
        found = paused(store, results_uri)
        with self._lock:
            self._seen = (now, results_uri, found)
        return found


def hold_uri(results_uri: str, backend: str) -> str:
    return naming.join(results_uri, "queue", f"hold-{naming.record_name(backend)}.json")


def read_hold(store: BlobStore, uri: str) -> tuple[datetime | None, int]:
    """Until when no submit may start (None: no hold), and the record's generation (0: none)."""
    try:
        blob = store.read(uri)
    except BlobNotFoundError:
        return None, 0
    try:
        return records.parse_timestamp(str(records.decode(blob.data)["until"])), blob.generation
    except (ValueError, KeyError):
        return None, blob.generation


def hold(store: BlobStore, uri: str, until: datetime, reason: str) -> None:
    """Hold every instance's drain off until `until`, unless a hold as long is there; one that another instance
    saved meanwhile stands (the backend told it the same)."""
    current, generation = read_hold(store, uri)
    if current is not None and current >= until:
        return
    document = {"until": records.timestamp(until), "reason": reason}
    with contextlib.suppress(PreconditionFailedError):
        store.write(uri, records.encode(document), if_generation_match=generation)


def drainer_uri(results_uri: str, backend: str) -> str:
    return naming.join(results_uri, "queue", f"drainer-{naming.record_name(backend)}.json")


def take_lease(store: BlobStore, uri: str, holder: str, now: datetime, until: datetime) -> int | None:
    """The drain lease for `holder` until `until` (absent, run out, or its own already), generation-matched so that
    of takers at once one wins: its generation; None when another holds it."""
    try:
        blob = store.read(uri)
    except BlobNotFoundError:
        generation = 0
    else:
        generation = blob.generation
        try:
            lease = records.decode(blob.data)
            held = lease["holder"] != holder and records.parse_timestamp(str(lease["until"])) > now
        except (ValueError, KeyError, TypeError):
            held = False  # unreadable: as good as run out
        if held:
            return None
    document = {"holder": holder, "until": records.timestamp(until)}
    try:
        return store.write(uri, records.encode(document), if_generation_match=generation)
    except PreconditionFailedError:
        return None


def release_lease(store: BlobStore, uri: str, generation: int) -> None:
    """Give the lease back; one taken over since (it ran out) is left to its new holder."""
    with contextlib.suppress(PreconditionFailedError, BlobNotFoundError, TransientError):
        store.delete(uri, if_generation_match=generation)


# --- why a run waits -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Waiting:
    """A queued run's place in its tenant's queue (1: next; None: it has none any more) and why it waits now."""

    position: int | None
    reason: str


def explain(store: BlobStore, results_uri: str, policy: Policy, launch: Mapping[str, Any], now: datetime) -> Waiting:
    """Where a queued run stands, asked now (its record says why it was queued; this says why it still waits):
    a pause, the backend's hold, a full cap, or the runs ahead of it."""
    tenant, pipeline = str(launch.get("tenant") or ""), str(launch.get("pipeline") or "")
    where = position(store, results_uri, tenant, str(launch.get("place") or ""))
    reason = paused_by(paused(store, results_uri), tenant, pipeline)
    if reason is None:
        until, _ = read_hold(store, hold_uri(results_uri, str(launch.get("backend") or "")))
        if until is not None and now < until:
            reason = f"the {launch.get('backend')} backend asked for a wait until {records.timestamp(until)}"
    for scope in cap_scopes(policy, tenant, pipeline) if reason is None else ():
        why = full(store, results_uri, scope, now)
        if why:
            reason = describe(scope, rate=why == "rate")
            break
    if reason is None:
        ahead = (where or 1) - 1
        reason = f"{ahead} run(s) ahead of it; the next drain launches it" if ahead else "the next drain launches it"
    return Waiting(where, reason)
