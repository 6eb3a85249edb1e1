"""The runs board's model: what its page shows, built from records by pure functions (no I/O, no HTML).

A board is the whole deployment's (`tenant` None: the operator's) or one tenant's. A tenant's board holds only
what records name as that tenant's: its runs, rejections, queue and absences; a record that names no tenant, and
the dead letters (events no tenant is known for), are on the operator's board alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from relay.queue import Entry
from relay.records import timestamp
from relay.status import RunRecords

# Every state a run's records may hold, in the order a run goes through them (relay runs --state lists the same).
STATES = ("queued", "launching", "launched", "running", "succeeded", "failed", "cancelled", "rejected", "skipped")
OTHER = "other"
IN_FLIGHT = ("queued", "launching", "launched", "running")
RECENT_REJECTIONS = 20  # the newest shown; the counts hold them all
NO_TENANT = "(no tenant)"  # how the operator's board names runs of a deployment without tenants


@dataclass(frozen=True)
class TenantRuns:
    """One tenant's runs, counted by state (every state of STATES, in order), and its queue's depth."""

    tenant: str
    counts: tuple[tuple[str, int], ...]
    queued: int  # entries in its queue: what waits for a slot, a pause's end or the backend

    @property
    def total(self) -> int:
        return sum(n for _, n in self.counts)

    @property
    def in_flight(self) -> int:
        return sum(n for state, n in self.counts if state in IN_FLIGHT)


@dataclass(frozen=True)
class Rejection:
    run_key: str
    tenant: str
    pipeline: str
    at: str
    code: str
    reason: str
    uri: str


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    published: str
    attempts: str
    about: str  # the object, trigger_uri or inline document the event was about


@dataclass(frozen=True)
class DeadLetters:
    """The dead letters read for the board, or why there are none to show (`note`: not read here, or failed)."""

    letters: tuple[DeadLetter, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class Absence:
    """An absence record (`absences/<tenant>/...`): something a tenant's route or trigger prefix expected by a
    time did not arrive. `what` is the record's name under its tenant's folder."""

    tenant: str
    what: str
    since: str
    message: str


@dataclass(frozen=True)
class Board:
    deployment: str
    generated_at: str
    tenant: str | None  # None: the operator's board, every tenant's
    tenants: tuple[TenantRuns, ...]
    rejections: tuple[Rejection, ...]
    rejected: int  # all the rejections counted, of which `rejections` are the newest
    dead_letters: DeadLetters | None  # None: not on this board (a tenant's)
    alerts: tuple[Absence, ...]

    @property
    def queue_depth(self) -> int:
        return sum(t.queued for t in self.tenants)

    @property
    def in_flight(self) -> int:
        return sum(t.in_flight for t in self.tenants)


def run_tenant(run: RunRecords) -> str | None:
    """The tenant a run's records name; None when they name none (records older than the field), which only the
    operator's board shows. "" is a deployment without tenants."""
    for record in (run.launch, run.skip, run.rejection):
        if record is not None and isinstance(record.get("tenant"), str):
            return str(record["tenant"])
    return None


def rejection_reason(rejection: Mapping[str, Any]) -> str:
    """Why a trigger was rejected, in one line: its first problem (which says more than the URI the message starts
    with) and how many more; else the message."""
    error = rejection.get("error")
    problems = (error.get("problems") if isinstance(error, Mapping) else None) or []
    if not problems or not isinstance(problems[0], Mapping):
        return str(rejection.get("message", ""))
    first = problems[0]
    more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{first.get('field')}: expected {first.get('expected')}, found {first.get('found')}{more}"


def build_board(
    *,
    deployment: str,
    now: datetime,
    runs: Iterable[RunRecords],
    queued: Iterable[Entry],
    absences: Iterable[Absence],
    dead_letters: DeadLetters | None,
    tenant: str | None = None,
) -> Board:
    """The board of `tenant` (None: the whole deployment's) from the runs' records, the queue's entries, the
    absence records and the dead letters read (given only for the operator's board)."""

    def shown(owner: str | None) -> bool:
        return tenant is None or owner == tenant

    mine = [(owner, run) for run in runs if shown(owner := run_tenant(run))]
    depth: dict[str, int] = {}
    for entry in queued:
        if shown(entry.tenant):
            depth[entry.tenant] = depth.get(entry.tenant, 0) + 1
    counted: dict[str, dict[str, int]] = {}
    for owner, run in mine:
        by_state = counted.setdefault(_name(owner), {})
        by_state[run.state] = by_state.get(run.state, 0) + 1
    for owner in depth:
        counted.setdefault(_name(owner), {})
    tenants = tuple(
        TenantRuns(name, _in_order(by_state), depth.get("" if name == NO_TENANT else name, 0))
        for name, by_state in sorted(counted.items())
    )
    rejections = sorted(
        (_rejection(run, owner) for owner, run in mine if run.state == "rejected" and run.rejection is not None),
        key=lambda r: r.at,
        reverse=True,
    )
    return Board(
        deployment=deployment,
        generated_at=timestamp(now),
        tenant=tenant,
        tenants=tenants,
        rejections=tuple(rejections[:RECENT_REJECTIONS]),
        rejected=len(rejections),
        dead_letters=dead_letters if tenant is None else None,
        alerts=tuple(sorted((a for a in absences if shown(a.tenant)), key=lambda a: a.since, reverse=True)),
    )


def _name(owner: str | None) -> str:
    return owner or NO_TENANT


def _in_order(by_state: Mapping[str, int]) -> tuple[tuple[str, int], ...]:
    """Every state of STATES, then OTHER when a record holds a state not among them (a newer Relay's, or what a
    run's own result says): counted, but as one column, whatever and however many they are."""
    other = sum(n for state, n in by_state.items() if state not in STATES)
    return tuple((state, by_state.get(state, 0)) for state in STATES) + ((OTHER, other),) * bool(other)


def _rejection(run: RunRecords, owner: str | None) -> Rejection:
    record = run.rejection or {}
    error = record.get("error")
    code = error.get("code") if isinstance(error, Mapping) else None
    return Rejection(
        run_key=run.run_key,
        tenant=_name(owner),
        pipeline=run.pipeline or "-",
        at=str(record.get("rejected_at") or ""),
        code=str(code or "rejected"),
        reason=rejection_reason(record),
        uri=run.trigger_uri,
    )


def parse_absence(tenant: str, what: str, record: Mapping[str, Any]) -> Absence:
    """An absence record as the board shows it, whichever of its fields it has: its message (else what it says
    was expected) and the time it was recorded or became due. Its tenant is the folder it lies in, never what it
    says: the folder is what decides whose board shows it."""
    since = next((str(record[k]) for k in ("recorded_at", "due_at", "at", "window_end") if record.get(k)), "")
    expected = record.get("expected") or record.get("expectation") or ""
    message = str(record.get("message") or (f"expected {expected}" if expected else "nothing arrived"))
    return Absence(tenant=tenant, what=what, since=since, message=message)


def unreadable_absence(tenant: str, what: str, problem: str) -> Absence:
    return Absence(tenant=tenant, what=what, since="", message=f"unreadable absence record: {problem}")
