"""The fields an outcome line carries for the log-based metrics and alerts (infra/monitoring): who, how fast, how
long, how a run ended. Pure: each takes what the caller already holds, so a line costs no extra read."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from relay import records
from relay.outcome import Outcome
from relay.policy_decisions import SEPARATOR, tenant_for_object, tenant_for_topic
from relay.policy_model import Policy


def tenant_of(policy: Policy, outcome: Outcome) -> str | None:
    """The tenant of a delivery the service did not name one for (a rejection, a skip): the one its run key's
    namespace (`<tenant>--<key>`) or its trigger's location or topic says, or None."""
    if not policy.tenants:
        return None
    name, separator, _ = (outcome.run_key or "").partition(SEPARATOR)
    if separator and policy.tenant(name) is not None:
        return name
    uri = outcome.trigger_uri
    found = tenant_for_object(policy, uri) if uri.startswith("gs://") else tenant_for_topic(policy, uri.split("#")[0])
    return found.name if found else None


def measured(outcome: Outcome, policy: Policy, *, now: datetime, event_time: datetime | None) -> dict[str, object]:
    """What one delivery's line adds to the outcome's own fields: its tenant when the service named none, and for a
    launch its latency from the event's time. A mapping, not a new Outcome: a copy of the frozen dataclass costs
    more than the rest of the line (bench.telemetry)."""
    extra: dict[str, object] = {}
    if outcome.tenant is None and (tenant := tenant_of(policy, outcome)) is not None:
        extra["tenant"] = tenant
    if outcome.outcome == "launched" and event_time is not None:
        extra["latency_ms"] = max(0, round((now - event_time).total_seconds() * 1000))
    return extra


def ended(record: Mapping[str, Any], launch: Mapping[str, Any] | None, now: datetime) -> Outcome:
    """The line of a run's end, recorded at `now`: its state, how long it ran, how long its end waited to be
    recorded, and which attempt of its chain it was."""
    launch = launch or {}
    started, finished = _moment(record.get("started_at")), _moment(record.get("finished_at"))
    trigger = launch.get("trigger") if isinstance(launch.get("trigger"), Mapping) else {}
    attempt = trigger.get("attempt", 1) if isinstance(trigger, Mapping) else 1
    state = str(record.get("state"))
    return Outcome(
        "ended",
        f"{record.get('run_key')} {state}: {str(record.get('message') or '')[:200]}",
        str(trigger.get("event_id") or "") if isinstance(trigger, Mapping) else "",
        str(trigger.get("uri") or "") if isinstance(trigger, Mapping) else "",
        str(record.get("run_key")),
        record.get("run_id"),
        record.get("pipeline"),
        severity_override="WARNING" if state == records.FAILED else None,
        tenant=str(launch.get("tenant") or "") or None,
        state=state,
        duration_s=_seconds(started, finished),
        lag_s=_seconds(finished, now),
        recorded_by=str(record.get("recorded_by") or "run"),
        attempt=attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else 1,
    )


def _moment(value: object) -> datetime | None:
    try:
        return records.parse_timestamp(value) if isinstance(value, str) and value else None
    except ValueError:
        return None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None or start.tzinfo is None or end.tzinfo is None:
        return None
    return round(max(0.0, (end - start).total_seconds()), 3)
