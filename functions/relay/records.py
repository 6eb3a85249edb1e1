"""The JSON records Relay writes to the results location: shapes only, no I/O."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from relay.errors import InvalidTriggerError, RelayError
from relay.events import InlineDelivery, ObjectDelivery
from relay.outcome import severity_of_rejection

QUEUED = "queued"  # launch.json of a run waiting in the queue (relay.queue) for a slot, a pause's end or the backend
LAUNCHING = "launching"
LAUNCHED = "launched"
RUNNING = "running"  # launch.json, once a reconcile tick saw the backend run it
CANCELLED = "cancelled"
REJECTED = "rejected"
INCOMPLETE = "incomplete"  # a set of objects its deadline closed before it was complete: no run (relay.sets)
SKIPPED = "skipped"  # a delivery that is no trigger: no run, and no status, as nothing was asked of a backend
# Why a delivery was skipped, as its record names it.
SKIP_NOT_A_TRIGGER = "not_a_trigger"
SKIP_EMPTY = "empty_object"
SUCCEEDED = "succeeded"
FAILED = "failed"
# Where a run is (state) is kept apart from how it ended (status, HTTP-like), as the seeds' result records do.
STATUS_ACCEPTED = 202
STATUS_BAD_REQUEST = 400
STATUS_CANCELLED = 499  # "client closed request", as grpc-gateway maps CANCELLED
ENDED = (SUCCEEDED, FAILED, CANCELLED)


def timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text)  # reads the Z from Python 3.11 on


def trigger_reference(delivery: ObjectDelivery | InlineDelivery, generation: int | None) -> dict[str, Any]:
    """Where the trigger came from, enough to find it again."""
    reference: dict[str, Any] = {
        "uri": delivery.uri,
        "event_id": delivery.event.id,
        "event_type": delivery.event.type,
        "event_time": timestamp(delivery.event.time) if delivery.event.time else None,
    }
    if isinstance(delivery, ObjectDelivery):
        reference.update(generation=generation, via=delivery.via)
        if delivery.origin is not None:  # the message that named the object: its topic is whose delivery it was
            origin = delivery.origin
            reference.update(
                topic=origin.topic, message_id=origin.message_id, nonce_or_publish_time=origin.nonce_or_publish_time
            )
    else:
        # What the run key is a digest of besides the topic: the message id alone repeats across emulator restarts.
        reference.update(
            message_id=delivery.message_id, nonce_or_publish_time=delivery.nonce_or_publish_time, via="pubsub-inline"
        )
    return reference


def claim_record(
    *,
    run_key: str,
    pipeline: str,
    backend: str,
    trigger: Mapping[str, Any],
    parameters: Mapping[str, Any],
    labels: Mapping[str, str],
    now: datetime,
    lease_seconds: float,
    tenant: str = "",
    retries: int | None = None,
    chain: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The create-only record that claims a run key before anything is submitted; a trigger's own `retries`, when
    it asked, for the decision on a failure (relay.retries); its `chain`, what runs when it ends (relay.chains)."""
    return {
        **({"retries": retries} if retries is not None else {}),
        **({"chain": chain} if chain else {}),
        "state": LAUNCHING,
        "status": None,
        "message": f"claimed by event {trigger.get('event_id')}; submitting to {backend}",
        # Unique to this attempt: tells our own create, retried by the client after a lost reply, from another's.
        "claim_id": uuid.uuid4().hex,
        "run_key": run_key,
        "tenant": tenant,
        "pipeline": pipeline,
        "backend": backend,
        "run_id": None,
        "run_url": None,
        "trigger": dict(trigger),
        "parameters": dict(parameters),
        "labels": dict(labels),
        "outputs": {},
        "metrics": {},
        "claimed_at": timestamp(now),
        "lease_expires_at": timestamp(now + timedelta(seconds=lease_seconds)),
    }


def queued_record(claim: Mapping[str, Any], *, place: str, reason: str, now: datetime) -> dict[str, Any]:
    """A run that waits: the claim it will launch with, but no lease (no one is launching it), and its place."""
    return {
        **claim,
        "state": QUEUED,
        "message": f"queued: {reason}",
        "claim_id": None,
        "lease_expires_at": None,
        "slots": [],
        "place": place,
        "queued_at": claim.get("queued_at") or timestamp(now),
        "waiting_for": reason,
    }


def dequeued_claim(
    queued: Mapping[str, Any], *, slots: list[dict[str, Any]], now: datetime, lease_seconds: float
) -> dict[str, Any]:
    """The claim a drain makes of a queued run (or of one whose claim's lease ran out): the same trigger and
    parameters, a fresh claim id and lease, and the slots it holds."""
    return {
        **queued,
        "state": LAUNCHING,
        "message": f"claimed from the queue; submitting to {queued.get('backend')}",
        "claim_id": uuid.uuid4().hex,
        "claimed_at": timestamp(now),
        "lease_expires_at": timestamp(now + timedelta(seconds=lease_seconds)),
        "slots": slots,
    }


def launched_record(claim: Mapping[str, Any], *, run_id: str, run_url: str, now: datetime) -> dict[str, Any]:
    return {
        **claim,
        "state": LAUNCHED,
        "status": STATUS_ACCEPTED,
        "message": f"run {run_id} created on {claim['backend']}",
        "run_id": run_id,
        "run_url": run_url,
        "launched_at": timestamp(now),
    }


def rejection_record(
    *,
    run_key: str,
    pipeline: str | None,
    trigger: Mapping[str, Any],
    error: RelayError,
    now: datetime,
    tenant: str = "",
) -> dict[str, Any]:
    """`rejected/<run_key>.json`; `tenant`, the one the delivery spoke for, so that its board shows it."""
    problems = error.problems if isinstance(error, InvalidTriggerError) else ()
    code = getattr(error, "code", "rejected")
    return {
        "state": REJECTED,
        "status": STATUS_BAD_REQUEST,
        "message": str(error),
        "run_key": run_key,
        "tenant": tenant,
        "pipeline": pipeline,
        "trigger": dict(trigger),
        "severity": severity_of_rejection(code),
        "error": {
            "code": code,
            "message": str(error),
            "problems": [{"field": p.field, "expected": p.expected, "found": p.found} for p in problems],
        },
        "outputs": {},
        "metrics": {},
        "rejected_at": timestamp(now),
    }


def skip_record(
    *,
    run_key: str,
    tenant: str,
    pipeline: str | None,
    trigger: Mapping[str, Any],
    code: str,
    message: str,
    now: datetime,
) -> dict[str, Any]:
    """`runs/<run_key>/skipped.json`: a delivery that did not run, and why, so that `relay runs` can say so."""
    return {
        "state": SKIPPED,
        "status": None,
        "message": message,
        "code": code,
        "run_key": run_key,
        "tenant": tenant,
        "pipeline": pipeline,
        "trigger": dict(trigger),
        "outputs": {},
        "metrics": {},
        "skipped_at": timestamp(now),
    }


def incomplete_record(
    *,
    run_key: str,
    tenant: str,
    pipeline: str,
    trigger: Mapping[str, Any],
    closed: Mapping[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """`runs/<run_key>/incomplete.json`: a set that did not complete by its deadline, its objects, and why."""
    count = len(closed.get("objects") or ())
    return {
        "state": INCOMPLETE,
        "status": None,
        "message": f"set {closed.get('set')} incomplete: its deadline passed with {count} object(s) and no "
        "size, marker or quiet period reached; not launched",
        "run_key": run_key,
        "tenant": tenant,
        "pipeline": pipeline,
        "trigger": dict(trigger),
        "set": dict(closed),
        "outputs": {},
        "metrics": {},
        "incomplete_at": timestamp(now),
    }


def lease_expired(record: Mapping[str, Any], now: datetime) -> bool:
    expires = record.get("lease_expires_at")
    return not isinstance(expires, str) or parse_timestamp(expires) <= now


def encode(record: Mapping[str, Any]) -> bytes:
    """One line of JSON: an indented dump takes the json module's pure-Python encoder, 2.5x the C one's time on
    every launch's two writes; `relay status` lays records out for reading."""
    return json.dumps(record, sort_keys=True).encode() + b"\n"


def decode(data: bytes) -> dict[str, Any]:
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object record")
    return value


def result_record(
    *,
    run_key: str,
    pipeline: str,
    backend: str,
    run_id: str,
    succeeded: bool,
    message: str,
    outputs: Mapping[str, Any],
    metrics: Mapping[str, Any],
    status: int | None = None,
    started: datetime,
    finished: datetime,
) -> dict[str, Any]:
    """How a run ended: `runs/<run_key>/result.json`."""
    return {
        "state": SUCCEEDED if succeeded else FAILED,
        "status": status if status is not None else (200 if succeeded else 500),
        "message": message,
        "run_key": run_key,
        "pipeline": pipeline,
        "backend": backend,
        "run_id": run_id,
        "outputs": dict(outputs),
        "metrics": dict(metrics),
        "started_at": timestamp(started),
        "finished_at": timestamp(finished),
    }


def ended_record(
    *,
    launch: Mapping[str, Any],
    state: str,
    message: str,
    started: datetime | None,
    finished: datetime,
    recorded_by: str,
    failure: str = "",
) -> dict[str, Any]:
    """`result.json` for a run that ended without writing its own: what the backend (or a cancel) said, and for a
    failed run whose failure it was (relay.ports.FAILURES), which decides on a retry (relay.retries)."""
    status = {SUCCEEDED: 200, FAILED: 500, CANCELLED: STATUS_CANCELLED}[state]
    return {
        **({"failure": failure} if state == FAILED and failure else {}),
        "state": state,
        "status": status,
        "message": message,
        "run_key": launch.get("run_key"),
        "pipeline": launch.get("pipeline"),
        "backend": launch.get("backend"),
        "run_id": launch.get("run_id"),
        "outputs": {},
        "metrics": {},
        "started_at": timestamp(started) if started else launch.get("launched_at"),
        "finished_at": timestamp(finished),
        # Not the run's own result: who wrote it, so a reader knows why outputs are empty.
        "recorded_by": recorded_by,
    }


def chain_link(*, first: str, previous: str, depth: int, step: int) -> dict[str, Any]:
    """What the trigger reference of a run a chain started adds: the chain's first run, the run it follows, how
    many runs after the first it is, and which step of the chain started it."""
    return {"chain_of": first, "chained_from": previous, "chain_depth": depth, "chain_step": step}


def attempt_link(*, first: str, previous: str, number: int) -> dict[str, Any]:
    """What a rerun's trigger reference adds: the run it repeats, and which attempt it is (the first is 1)."""
    return {"attempt": number, "attempt_of": first, "previous_attempt": previous}
