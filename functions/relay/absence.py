"""Absence: an arrival marks its window of each declaration it meets; a reconcile tick records (once) and logs the
windows that closed with no mark. Create-only writes make both exactly once across ticks and instances."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta

from relay import naming, records
from relay.errors import BlobNotFoundError, PreconditionFailedError
from relay.outcome import Outcome
from relay.policy_locations import within
from relay.policy_model import Expectation, Tenant
from relay.ports import BlobStore
from relay.service import Relay

# What counts as an arrival: a delivery Relay took (a redelivery of one too). A rejected trigger is no arrival:
# the data the declaration waits for did not start its run.
ARRIVALS = ("launched", "duplicate", "queued")
# A window is checked this long after it closed: an arrival just before its end has its mark written by then.
GRACE = timedelta(minutes=1)


def meets(tenant: Tenant, expectation: Expectation, uri: str) -> bool:
    """Whether an arrival of `uri` is what `expectation` waits for: an object its route takes, or a trigger under
    its prefix."""
    if expectation.prefix:
        return within(uri, expectation.prefix)
    route = next((r for r in tenant.routes if r.id == expectation.route), None)
    if route is None or not uri.startswith("gs://"):
        return False
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    return route.matches(bucket, name)


def arrived(relay: Relay, outcome: Outcome) -> None:
    """Mark the current window of each declaration of the outcome's tenant that this arrival meets (create-only:
    the first arrival of a window writes it, the next ones find it)."""
    if outcome.outcome not in ARRIVALS or not outcome.tenant:
        return
    tenant = relay.policy.tenant(outcome.tenant)
    if tenant is None or not tenant.expect:
        return
    from relay.expectations import window_at  # here, not at the top: only a tenant that declares expectations

    now = relay.clock()
    for expectation in tenant.expect:
        window = window_at(expectation.schedule, expectation.zone, now)
        if window is None or not meets(tenant, expectation, outcome.trigger_uri):
            continue
        mark = {
            "tenant": tenant.name,
            "expectation": expectation.id,
            "window": window.name,
            "uri": outcome.trigger_uri,
            "run_key": outcome.run_key,
            "arrived_at": records.timestamp(now),
        }
        uri = naming.arrival_record(relay.settings.results_uri, tenant.name, expectation.id, window.name)
        with suppress(PreconditionFailedError):
            relay.store.write(uri, records.encode(mark), if_generation_match=0)


def check(relay: Relay) -> tuple[Outcome, ...]:
    """Record each declaration's last closed window that nothing arrived in, once: the `absent` lines to log (one
    per window recorded by this call; another tick or instance that recorded it first leaves none here)."""
    from relay.expectations import last_closed  # not at the top: an event's cold start need not load it

    now = relay.clock()
    found: list[Outcome] = []
    for tenant in relay.policy.tenants:
        for expectation in tenant.expect:
            window = last_closed(expectation.schedule, expectation.zone, now - GRACE)
            if window is None:
                continue
            results = relay.settings.results_uri
            try:
                relay.store.read(naming.arrival_record(results, tenant.name, expectation.id, window.name))
                continue
            except BlobNotFoundError:
                pass
            where = expectation.prefix or f"route {expectation.route}"
            message = f"nothing arrived from {where} of tenant {tenant.name} in {_span(window.start, window.end)}"
            record = {
                "state": "absent",
                "message": message,
                "tenant": tenant.name,
                "expectation": expectation.id,
                "route": expectation.route,
                "prefix": expectation.prefix,
                "window": window.name,
                "window_start": records.timestamp(window.start),
                "window_end": records.timestamp(window.end),
                "recorded_at": records.timestamp(now),
            }
            uri = naming.absence_record(results, tenant.name, expectation.id, window.name)
            try:
                relay.store.write(uri, records.encode(record), if_generation_match=0)
            except PreconditionFailedError:
                continue  # recorded (and alerted) by another tick already
            found.append(
                Outcome(
                    "absent",
                    message,
                    "",
                    expectation.prefix or f"route:{expectation.route}",
                    tenant=tenant.name,
                    expectation=expectation.id,
                    window=window.name,
                )
            )
    return tuple(found)


@dataclass(frozen=True)
class Stored:
    """An absence record as it lies under `absences/`: the tenant folder it is in (whose it is, never what it
    says), its name there (`<expectation>/<window>`), and what it says, or why it cannot be read."""

    tenant: str
    what: str
    record: Mapping[str, object] | None  # None: unreadable, `problem` says why
    problem: str = ""


def stored(store: BlobStore, results_uri: str) -> Iterator[Stored]:
    """Every absence record under `results_uri` (one listing, a read of each); none while no one records them."""
    folder = naming.absences_folder(results_uri)
    for uri in store.list(folder):
        tenant, _, what = uri[len(folder) :].partition("/")
        if not what.endswith(".json"):
            continue
        what = what.removesuffix(".json")
        try:
            record = records.decode(store.read(uri).data)
        except BlobNotFoundError:
            continue  # removed since the listing
        except ValueError as error:  # JSONDecodeError and UnicodeDecodeError alike
            yield Stored(tenant, what, None, str(error))
            continue
        yield Stored(tenant, what, record)


def recorded(store: BlobStore, results_uri: str, limit: int) -> list[Mapping[str, object]]:
    """The readable absence records under `results_uri`, the latest windows first, at most `limit` (`relay runs`)."""
    found = [one.record for one in stored(store, results_uri) if one.record is not None]
    return sorted(found, key=lambda record: str(record.get("window_end")), reverse=True)[:limit]


def _span(start: datetime, end: datetime) -> str:
    return f"[{records.timestamp(start)}, {records.timestamp(end)})"
