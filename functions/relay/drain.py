"""The drain: launch queued runs, in arrival order, as far as there is room; and a delivery followed by one.

A drain runs after a delivery that queued its run, after a run's end that Relay records (reconcile, cancel, the
local runner) and on every reconcile tick. Many may run at once, on any instance: each run is claimed from its
queued launch record generation-matched (relay.service.launch_queued), so exactly one drain launches it, and a
drain that dies between that claim and the launch record leaves a claim whose lease runs out, which the next drain
takes over (asking the backend first), as a redelivery would.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from relay import naming, queue, records
from relay import policy_caps as caps
from relay.errors import BackendPausedError, BlobNotFoundError, PreconditionFailedError, TransientError
from relay.events import Delivery
from relay.outcome import Outcome
from relay.service import Relay, handle_delivery, launch_queued

# The most runs one drain launches: a tick or a delivery never spends its whole time draining.
PER_DRAIN = 100
# How long a delivery waits in all, after the backend refused for load, to drain again each time its pause ends: the
# queue then moves at the pace the backend admits instead of waiting for the next tick. Under Pub/Sub's push ack
# deadline (the drains' own work comes on top).
FOLLOW_THROUGH = 10.0
# How much longer, in waits, the one delivery holding the drain lease stays while runs still wait once its
# follow-through is over: the queue keeps moving after the last delivery, not only on the next tick. With the drains'
# own work, well under the function's timeout (540 s as infra/ deploys it).
LEASED = 40.0


@dataclass(frozen=True)
class Drained:
    """What one drain did: the runs it launched (or that found their end meanwhile), in order, and why it
    stopped before the queue ran out ("" : it did not)."""

    outcomes: tuple[Outcome, ...] = ()
    stopped: str = ""

    @property
    def launched(self) -> tuple[str, ...]:
        return tuple(str(o.run_key) for o in self.outcomes if o.outcome == "launched")


def deliver(relay: Relay, delivery: Delivery) -> Outcome:
    """handle_delivery, then, when the run was queued, a drain: it launches at once if it has room (and anything
    queued before it first). The outcome says launched when this drain launched it. A launch on an instance the
    backend refused for load lately drains too: the backend takes runs again, and what it refused waits. Either
    stays to drain again when the backend's wait ends (_follow_through: FOLLOW_THROUGH of waits, LEASED more for
    the drain lease's holder while runs wait)."""
    outcome = handle_delivery(relay, delivery)
    if outcome.outcome != "queued" and not (outcome.outcome == "launched" and relay.gate.wary()):
        return outcome
    # A queued run's drain looks at its own tenant's queue only: runs queued before it are there (the drains of
    # other tenants' runs are theirs, and the ticks'), so a delivery's cost does not grow with other queues.
    tenant = (outcome.tenant or "") if outcome.outcome == "queued" else None
    mine = _follow_through(relay, str(outcome.run_key), tenant)
    if outcome.outcome != "queued" or mine is None:
        return outcome
    return Outcome("launched", mine.message, outcome.event_id, outcome.trigger_uri, mine.run_key, mine.run_id,
                   mine.pipeline, tenant=mine.tenant)  # fmt: skip


def _follow_through(relay: Relay, run_key: str, tenant: str | None = None) -> Outcome | None:
    """Drain (`tenant`'s queue, or every one); then, while the backend asks for a wait (this instance's gate or the
    shared hold), stay and drain again the moment it ends, whoever's runs wait (every drain takes the queue in
    order): what the backend refused goes as soon as it admits again, not at the next tick. Past FOLLOW_THROUGH of
    waits, only the holder of the drain lease stays (LEASED more at the most) while runs wait. The launch of
    `run_key`, if one of these drains made it."""
    drained = drain(relay, tenant=tenant)
    mine = _launched(drained, run_key)
    waited, lease = 0.0, 0
    lease_uri = queue.drainer_uri(relay.settings.results_uri, relay.backend.name)
    holder = uuid.uuid4().hex
    try:
        while drained.stopped and 0 < (wait := _backend_wait(relay)) <= FOLLOW_THROUGH + LEASED - waited:
            if waited + wait > FOLLOW_THROUGH and not lease:
                now = relay.clock()
                until = now + timedelta(seconds=FOLLOW_THROUGH + LEASED - waited)
                lease = queue.take_lease(relay.store, lease_uri, holder, now, until) or 0
                if not lease:
                    break  # another delivery stays for the queue
            drained = drain(relay, tenant=tenant, after=wait)
            mine = mine or _launched(drained, run_key)
            waited += wait
    finally:
        if lease:
            queue.release_lease(relay.store, lease_uri, lease)
    return mine


def _backend_wait(relay: Relay) -> float:
    """Seconds until the backend takes runs again, as this instance's gate and the shared hold say (0: now)."""
    until, _ = queue.read_hold(relay.store, queue.hold_uri(relay.settings.results_uri, relay.backend.name))
    held = (until - relay.clock()).total_seconds() if until is not None else 0.0
    return max(relay.gate.reopens_in(), held)


def _launched(drained: Drained, run_key: str) -> Outcome | None:
    return next((o for o in drained.outcomes if o.run_key == run_key and o.outcome == "launched"), None)


def after_end(relay: Relay, tenant: str) -> Drained | None:
    """The drain of `tenant`'s queue a run's end asks for. One at a time per tenant in this instance: an end that
    comes while one runs has it go round once more and returns None at once, so a burst of ends costs a few drains
    launching several runs each (one listing of the queue each), not one drain an end all contending for the head
    of the queue. Other instances' drains still may run meanwhile: each run is claimed once all the same."""
    key = tenant or queue.NO_TENANT
    if not relay.ending.enter(key):
        return None
    outcomes: list[Outcome] = []
    try:
        # Rounds while ends keep asking, up to one drain's budget of runs: a request never drains for ever (its
        # push would be redelivered). An end that asked during the last round is left to the next end or tick.
        for _ in range(PER_DRAIN):
            drained = drain(relay, tenant=tenant)
            outcomes += drained.outcomes
            if drained.stopped:  # the backend's wait, or a drain's budget: the tick (or the next end) goes on
                break
            if len(outcomes) >= PER_DRAIN:
                drained = Drained(stopped=f"launched {len(outcomes)} in rounds for ends; the next end goes on")
                break
            if not relay.ending.again(key):
                return Drained(tuple(outcomes))
    except BaseException:
        relay.ending.leave(key)
        raise
    relay.ending.leave(key)
    return Drained(tuple(outcomes), drained.stopped)


def drain(relay: Relay, *, budget: int = PER_DRAIN, tenant: str | None = None, after: float = 0.0) -> Drained:
    """Launch queued runs tenant by tenant (only `tenant`'s, when given), each tenant's in arrival order, while
    their scopes have room; a run whose scope is full or paused waits, and so does every later run of that scope
    (no overtaking within a scope). Stops at a refusal for load, a backend's hold (Retry-After) or this instance's
    own pause. A drain of one tenant does nothing when a cap every one of its runs counts against (the deployment's,
    the tenant's) is full, and ends at the first run that finds one full.

    `after`: the seconds the backend asked to wait (a follow-through's). The drain does its reads and claims its
    first run meanwhile, then waits them out and submits at once: the backend's admission is not spent on Relay's
    own round trips. If the backend asked for longer meanwhile (another instance refused), that run goes back to
    its place and the drain stops.

    Cost: one read (the hold), one listing (the pauses), one listing of the queue (page by page, as far as it
    goes), one listing per capped scope (queue.SlotView); per run looked at one read and one create per slot;
    per launch the claim, the submit, the launch record and the entry's delete."""
    store, results, now = relay.store, relay.settings.results_uri, relay.clock()
    closed = None if after else relay.gate.closed()  # the wait `after` is this gate's pause, or longer
    if closed:
        return Drained(stopped=closed)
    view = queue.SlotView(store, results)
    if tenant is not None and _tenant_full(relay, view, tenant, now):
        return Drained()  # nothing of this queue can go before a run ends: the queue is not even listed
    until, _ = queue.read_hold(store, queue.hold_uri(results, relay.backend.name))
    if until is not None and now + timedelta(seconds=after) < until:
        return Drained(stopped=f"the {relay.backend.name} backend asked for a wait until {records.timestamp(until)}")
    ready = _Ready(relay, now + timedelta(seconds=after)) if after else None
    paused = queue.paused(store, results)
    outcomes: list[Outcome] = []
    blocked: set[str] = set()  # scope ids found full, and "tenant/pipeline" pairs paused: later runs of them wait
    for entry in queue.entries(store, results, tenant):
        if len(outcomes) >= budget:
            return Drained(tuple(outcomes), f"launched {budget}, the most one drain does")
        if caps.DEPLOYMENT in blocked:
            break  # every run counts against the deployment's full cap
        if f"tenant-{entry.tenant}" in blocked:
            if tenant is not None:
                break  # the rest of this queue counts against the same full scope: not even listed
            continue  # every later run of this tenant counts against the same full scope
        try:
            outcome = _one(relay, view, entry, paused, blocked, ready)
        except TransientError as error:  # the backend or the store in trouble: the next drain goes on
            return Drained(tuple(outcomes), f"stopped at {entry.run_key}: {' '.join(str(error).split())[:300]}")
        if outcome is None:
            continue
        outcomes.append(outcome)
        if outcome.outcome == "queued":  # put back: the backend refused for load
            return Drained(tuple(outcomes), f"stopped at {entry.run_key}: {outcome.message}")
    return Drained(tuple(outcomes))


def _tenant_full(relay: Relay, view: queue.SlotView, tenant: str, now: datetime) -> bool:
    """Whether a cap every run of `tenant` counts against (the deployment's, the tenant's) is full: one listing
    each, which the drain's takes then go on from."""
    scopes = [scope for scope in caps.cap_scopes(relay.policy, tenant, "") if scope.pipeline is None]
    return any(view.full(scope, now) for scope in scopes)


@dataclass(frozen=True)
class _Ready:
    """A drain's wait for the backend: a submit before `until` waits till then, and then only if the backend asks
    for no more meanwhile (this instance's gate, the shared hold: one read); a submit after it goes at once."""

    relay: Relay
    until: datetime

    def __call__(self) -> None:
        left = (self.until - self.relay.clock()).total_seconds()
        if left <= 0:
            return
        self.relay.sleep(left)
        if (longer := _backend_wait(self.relay)) > 0:
            raise BackendPausedError(f"not calling the backend: it asked for {longer:.1f} s more meanwhile")


def _one(
    relay: Relay,
    view: queue.SlotView,
    entry: queue.Entry,
    paused: frozenset[tuple[str, str]],
    blocked: set[str],
    ready: _Ready | None = None,
) -> Outcome | None:
    """Launch one queued run if it may go now (after `ready`); None when it waits (or is being launched by another
    drain)."""
    store, results = relay.store, relay.settings.results_uri
    uri = naming.launch_record(results, entry.run_key)
    try:
        blob = store.read(uri)
        record = records.decode(blob.data)
    except (BlobNotFoundError, ValueError):
        record = {}
    state = record.get("state")
    if state not in (records.QUEUED, records.LAUNCHING) or record.get("place") != entry.place:
        # Launched, rejected or cancelled since (a drain that died before removing the entry): done with it.
        with contextlib.suppress(PreconditionFailedError):
            queue.remove_entry(store, results, entry.tenant, entry.place)
        return None
    pipeline = str(record.get("pipeline") or "")
    if caps.paused_by(paused, entry.tenant, pipeline):
        blocked.add(f"{entry.tenant}/{pipeline}")
        return None
    scopes = caps.cap_scopes(relay.policy, entry.tenant, pipeline)
    if f"{entry.tenant}/{pipeline}" in blocked or any(scope.id in blocked for scope in scopes):
        return None
    slots: tuple[queue.Held, ...] = ()
    if state == records.LAUNCHING:
        if not records.lease_expired(record, relay.clock()):
            return None  # another drain launches it now
    else:
        taken = queue.take(view, scopes, entry.run_key, relay.clock())
        if taken.full is not None:
            blocked.add(taken.full.id)
            return None
        slots = taken.held
    outcome = launch_queued(relay, record, blob.generation, slots, ready)
    if outcome.outcome != "launched":
        view.given_back(slots)  # launch_queued gave them back: another drain claimed the run, or it went no further
    if outcome.outcome in ("launched", "rejected"):
        queue.remove_entry(store, results, entry.tenant, entry.place)
    return None if outcome.outcome == "duplicate" else outcome
