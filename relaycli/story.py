"""What Relay decided about one delivery, in order: read from the records it wrote and its functions' outcome lines.

Pure: the records (relay.status.RunRecords) and the lines come in, the steps of the story go out. Each step names
its moment, what was decided, and who decided it (an event, the function, the reconciler, a person's command).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from relay import policy as rules
from relay import records
from relay.queue import Waiting
from relay.status import RunRecords
from relay.trace import trace_id_of
from relay.triggers import RESERVED_PARAMETERS

_NEVER = datetime.max.replace(tzinfo=UTC)
# Where a step came from: a record Relay wrote, or a function's outcome line.
RECORD, LOG = "record", "log"
# How each entry point's deliveries decide their tenant (relay.service.tenant_for).
_TENANT_BY = {
    "storage-event": "the tenant whose trigger prefix holds the object (its bucket's own storage event)",
    "storage-notification": "the tenant of the topic the notification came on",
    "trigger-uri": "the tenant of the topic the message came on, not the object it names",
    "pubsub-inline": "the tenant of the topic the message came on",
    "set": "the tenant whose route collected the set",
    "rerun": "the run it repeats",
    "retry": "the run it repeats",
}


@dataclass(frozen=True)
class Step:
    """One decision: when, what (a short word), the details, who acted, and where it was read."""

    time: str
    what: str
    detail: str
    by: str = ""
    source: str = RECORD
    run_key: str = ""

    def as_json(self) -> dict[str, str]:
        return {
            "time": self.time,
            "what": self.what,
            "detail": self.detail,
            "by": self.by,
            "source": self.source,
            "run_key": self.run_key,
        }


def tenant_of(run: RunRecords, policy: rules.Policy) -> str:
    """The run's tenant: as recorded, else (a rejection records none) as the policy decides it from the origin."""
    for record in (run.launch, run.skip):
        if record and record.get("tenant") is not None:
            return str(record.get("tenant") or "")
    reference = _reference(run)
    topic, uri, via = str(reference.get("topic") or ""), str(reference.get("uri") or ""), reference.get("via")
    if via == "pubsub-inline":
        topic = uri.partition("#")[0]
    tenant = rules.tenant_for_topic(policy, topic) if topic else None
    if tenant is None and via == "storage-event":
        tenant = rules.tenant_for_object(policy, uri)
    return tenant.name if tenant else ""


def trace_id(run: RunRecords) -> str:
    """The trace id of the delivery that made the run (its launch, rejection or skip record's reference)."""
    return trace_id_of(_reference(run))


def run_steps(run: RunRecords, tenant: str, waiting: Waiting | None = None) -> list[Step]:
    """Every decision the run's records hold, oldest first."""
    key = run.run_key
    reference = _reference(run)
    steps = [_seen(reference, key), *_tenant(reference, tenant, key)]
    launch = run.launch or {}
    if launch:
        steps += _launch_steps(run, launch, waiting)
    if run.rejection:
        steps.append(_rejected(run.rejection, key))
    if run.skip:
        skip = run.skip
        steps.append(Step(_t(skip, "skipped_at"), "skipped", f"{skip.get('code')}: {skip.get('message')}", run_key=key))
    if run.result:
        steps.append(_ended(run.result, key))
    if run.retry:
        retry = run.retry
        when = str(retry.get("retry_at") or "")
        detail = f"as {retry.get('next_attempt')} at {when}" if when else "the next reconcile tick decides"
        steps.append(Step(_t(run.result or {}, "finished_at"), "retry", detail, "reconcile", run_key=key))
    return steps


def later_steps(later: Sequence[RunRecords]) -> list[Step]:
    """The attempts started after the run (rerun, retry): who asked, and as which run key."""
    steps = []
    for attempt in later:
        reference = _reference(attempt)
        via = str(reference.get("via") or "rerun")
        detail = f"attempt {reference.get('attempt')} as {attempt.run_key}, now {attempt.state}"
        by = str(reference.get("requested_by") or "")
        steps.append(Step(str(reference.get("event_time") or ""), via, detail, by, run_key=attempt.run_key))
    return steps


def line_steps(lines: Iterable[Mapping[str, Any]]) -> list[Step]:
    """The functions' outcome lines: every delivery as it was answered (duplicates and retries among them)."""
    steps = []
    for line in lines:
        outcome = str(line.get("outcome") or "")
        event = line.get("event_id") or "-"
        code = f" [{line['code']}]" if line.get("code") else ""
        detail = f"event {event}: {line.get('message') or ''}{code}"
        by = "the function" + (f" (trace {line['trace_id']})" if line.get("trace_id") else "")
        steps.append(Step(str(line.get("time") or ""), outcome, detail, by, LOG, str(line.get("run_key") or "")))
    return steps


def in_order(steps: Iterable[Step]) -> list[Step]:
    """Oldest first; a step of unknown time goes after the timed ones, in its place (sorting is stable)."""
    return sorted(steps, key=lambda step: _moment(step.time) or _NEVER)


def _moment(text: str) -> datetime | None:
    """A record's moment (UTC, with Z) or a log line's (+00:00) as one comparable time; None when unreadable."""
    try:
        moment = records.parse_timestamp(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _seen(reference: Mapping[str, Any], key: str) -> Step:
    via = str(reference.get("via") or "-")
    parts = [f"{reference.get('uri') or '-'} via {via}", f"event {reference.get('event_id') or '-'}"]
    if reference.get("message_id"):
        parts.append(
            f"message {reference['message_id']}" + (f" on {reference['topic']}" if reference.get("topic") else "")
        )
    if reference.get("generation"):
        parts.append(f"generation {reference['generation']}")
    if reference.get("attempt_of"):
        parts.append(f"attempt {reference.get('attempt')} of {reference['attempt_of']}")
    trace = trace_id_of(reference)
    if trace:
        parts.append(f"trace {trace}")
    return Step(
        str(reference.get("event_time") or ""),
        "event",
        ", ".join(parts),
        str(reference.get("requested_by") or ""),
        run_key=key,
    )


def _tenant(reference: Mapping[str, Any], tenant: str, key: str) -> list[Step]:
    how = _TENANT_BY.get(str(reference.get("via") or ""), "where the delivery came from")
    steps = [
        Step(
            str(reference.get("event_time") or ""),
            "tenant",
            f"{tenant or '(none: no policy tenants)'}, by {how}",
            run_key=key,
        )
    ]
    if reference.get("route"):
        took = "the set's objects" if reference.get("set") else "the object"
        steps.append(
            Step(str(reference.get("event_time") or ""), "route", f"{reference['route']} took {took}", run_key=key)
        )
    if reference.get("set"):
        detail = (
            f"{reference['set']} closed ({reference.get('set_reason')}) with {reference.get('set_objects')} object(s)"
        )
        steps.append(Step(str(reference.get("event_time") or ""), "set", detail, run_key=key))
    return steps


def _launch_steps(run: RunRecords, launch: Mapping[str, Any], waiting: Waiting | None) -> list[Step]:
    key, steps = run.run_key, []
    # The verdict came before the queue: a run that waited was checked when it was queued, claimed when it left.
    claimed = _t(launch, "queued_at") or _t(launch, "claimed_at")
    parameters = {k: v for k, v in dict(launch.get("parameters") or {}).items() if k not in RESERVED_PARAMETERS}
    values = ", ".join(f"{name}={value!r}" for name, value in sorted(parameters.items())) or "none"
    made = "the route's templates made" if (_reference(run).get("route")) else "the trigger asked for"
    steps.append(Step(claimed, "parameters", f"{made}: {values}", run_key=key))
    tenant = str(launch.get("tenant") or "")
    steps.append(
        Step(
            claimed,
            "policy",
            f"allowed: pipeline {launch.get('pipeline')} and each parameter within "
            + (f"tenant {tenant}'s rules" if tenant else "the deployment's rules"),
            run_key=key,
        )
    )
    if launch.get("queued_at"):
        detail = f"place {launch.get('place')}: {launch.get('waiting_for')}"
        if waiting is not None and run.state == records.QUEUED:
            where = f"position {waiting.position}" if waiting.position else "being launched"
            detail += f"; now {where}: {waiting.reason}"
        steps.append(Step(_t(launch, "queued_at"), "queued", detail, run_key=key))
    if launch.get("claimed_at") and launch.get("state") != records.QUEUED:
        event = (launch.get("trigger") or {}).get("event_id")
        how = "from the queue " if launch.get("queued_at") else ""
        steps.append(Step(_t(launch, "claimed_at"), "claim", f"run key claimed {how}by event {event}", run_key=key))
    takeover = launch.get("takeover")
    if isinstance(takeover, Mapping):
        found = "found on the backend" if takeover.get("found") else "submitted anew"
        detail = (
            f"took over the claim of event {takeover.get('from_event')} (claimed {takeover.get('claimed_at')}): {found}"
        )
        steps.append(Step(_t(launch, "launched_at"), "takeover", detail, run_key=key))
    if launch.get("launched_at"):
        detail = f"run {launch.get('run_id')} on {launch.get('backend')}" + (
            f": {launch['run_url']}" if launch.get("run_url") else ""
        )
        steps.append(Step(_t(launch, "launched_at"), "launched", detail, run_key=key))
    if launch.get("running_at"):
        steps.append(Step(_t(launch, "running_at"), "running", "the backend runs it", "reconcile", run_key=key))
    return steps


def _rejected(rejection: Mapping[str, Any], key: str) -> Step:
    error = rejection.get("error") or {}
    problems = [
        f"{p.get('field')}: expected {p.get('expected')}, found {p.get('found')}" for p in error.get("problems") or []
    ]
    verdict = "; ".join(problems) or str(rejection.get("message") or "")
    return Step(_t(rejection, "rejected_at"), "rejected", f"{error.get('code')}: {verdict}", run_key=key)


def _ended(result: Mapping[str, Any], key: str) -> Step:
    by = str(result.get("recorded_by") or "the run's step")
    detail = f"{result.get('state')} (status {result.get('status')}): {result.get('message')}"
    return Step(_t(result, "finished_at"), str(result.get("state") or "ended"), detail, by, run_key=key)


def _reference(run: RunRecords) -> Mapping[str, Any]:
    reference = (run.launch or run.rejection or run.skip or {}).get("trigger")
    return reference if isinstance(reference, Mapping) else {}


def _t(record: Mapping[str, Any], key: str) -> str:
    return str(record.get(key) or "")
