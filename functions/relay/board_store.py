"""The runs board's reads and writes: what it shows, read from the results location, and the pages the reconcile
ticks keep there (`board/index.html`, the operator's; `board/tenants/<tenant>.html`, each tenant's own).

A refresh is at most once per `RELAY_BOARD_EVERY`, whichever instance ticks: a tick reads when the board was last
written (`board/refreshed.json`) and takes the turn by rewriting that marker matched to the generation it read, so
of two ticks at once one writes the pages and the other leaves them. It runs on the schedule's ticks only, never on
an event's path.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from relay import absence, naming, queue, records
from relay.board import Absence, Board, DeadLetters, build_board, parse_absence, unreadable_absence
from relay.board_page import render_board
from relay.errors import BlobNotFoundError, PreconditionFailedError
from relay.ports import BlobStore
from relay.service import Relay
from relay.status import RunRecords, recent_runs

# The tick reads no dead letters (a pull is the CLI's, with its own credentials): its board says where to look.
NOT_READ_BY_THE_TICK = "Not read by the reconcile tick: run relay board, or relay dead-letters list, to see them."


@dataclass(frozen=True)
class Sources:
    """Everything a board is built from, read once for the operator's board and every tenant's."""

    runs: tuple[RunRecords, ...]
    queued: tuple[queue.Entry, ...]
    absences: tuple[Absence, ...]


def read_sources(store: BlobStore, results_uri: str) -> Sources:
    """One listing each of the runs' and rejections' records (and a read of each), the queue and the absences."""
    runs = recent_runs(store, results_uri, limit=sys.maxsize)
    return Sources(tuple(runs), tuple(queue.entries(store, results_uri)), tuple(read_absences(store, results_uri)))


def read_absences(store: BlobStore, results_uri: str) -> Iterator[Absence]:
    """The absence records (relay.absence reads them), each as the board shows it; one that cannot be read is
    shown as such rather than left out."""
    for one in absence.stored(store, results_uri):
        if one.record is None:
            yield unreadable_absence(one.tenant, one.what, one.problem)
        else:
            yield parse_absence(one.tenant, one.what, one.record)


def board_for(
    sources: Sources, *, deployment: str, now: datetime, dead_letters: DeadLetters | None, tenant: str | None = None
) -> Board:
    return build_board(
        deployment=deployment,
        now=now,
        runs=sources.runs,
        queued=sources.queued,
        absences=sources.absences,
        dead_letters=dead_letters,
        tenant=tenant,
    )


def deployment_name(relay: Relay) -> str:
    return relay.settings.deployment_name or relay.settings.results_uri


def refresh(relay: Relay) -> str:
    """Write the boards when the last was written RELAY_BOARD_EVERY ago or more, else leave them; what it did, in
    a few words for the tick's line."""
    settings, store, now = relay.settings, relay.store, relay.clock()
    marker = naming.board_refreshed(settings.results_uri)
    try:
        blob = store.read(marker)
    except BlobNotFoundError:
        generation, last = 0, None
    else:
        generation, last = blob.generation, _written_at(blob.data)
    if last is not None and now < last + timedelta(seconds=settings.board_every):
        return f"written at {records.timestamp(last)}, next after {settings.board_every:.0f} s"
    try:
        store.write(marker, records.encode({"written_at": records.timestamp(now)}), if_generation_match=generation)
    except PreconditionFailedError:
        return "another tick is writing it"
    sources = read_sources(store, settings.results_uri)
    name = deployment_name(relay)
    pages = {naming.board_page(settings.results_uri): board_for(
        sources, deployment=name, now=now, dead_letters=DeadLetters(note=NOT_READ_BY_THE_TICK)
    )}  # fmt: skip
    for tenant in relay.policy.tenants:  # a page for each tenant of the policy, of its own runs only
        pages[naming.board_page(settings.results_uri, tenant.name)] = board_for(
            sources, deployment=name, now=now, dead_letters=None, tenant=tenant.name
        )
    for uri, board in pages.items():
        store.write(uri, render_board(board).encode())
    return f"{len(pages)} page(s) written under {naming.join(settings.results_uri, 'board')}/"


def _written_at(data: bytes) -> datetime | None:
    """When the marker says the board was written; None (write it now) for a marker that cannot be read."""
    try:
        return records.parse_timestamp(str(json.loads(data)["written_at"]))
    except (ValueError, KeyError, TypeError):
        return None
