"""The launch use-case: one delivery in, one outcome out, with every port passed in."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from relay import naming, records
from relay.catalog import Catalog, PipelineDefinition, check_parameters, run_parameters
from relay.config import Settings
from relay.errors import (
    BlobNotFoundError,
    ClaimHeldError,
    InvalidTriggerError,
    LaunchRejectedError,
    PermanentError,
    PreconditionFailedError,
    Problem,
    TransientError,
)
from relay.events import Delivery, InlineDelivery, ObjectDelivery, Skip
from relay.outcome import Outcome
from relay.ports import BlobStore, LaunchedRun, LaunchRequest, Notifier, PipelineBackend
from relay.results import publish_record
from relay.triggers import MAX_TRIGGER_BYTES, Format, Trigger, parse_trigger

log = logging.getLogger("relay")


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Relay:
    """The ports and settings one function instance works with."""

    settings: Settings
    store: BlobStore
    catalog: Catalog
    backend: PipelineBackend
    notifier: Notifier | None = None
    clock: Callable[[], datetime] = field(default=_utcnow)


@dataclass(frozen=True)
class _Loaded:
    """A trigger document's bytes and the identity that makes its run key."""

    raw: bytes
    format: Format
    identity: str
    reference: dict[str, Any]


def handle_delivery(relay: Relay, delivery: Delivery) -> Outcome:
    """Validate, claim and launch; permanent problems become records, transient ones raise."""
    if isinstance(delivery, Skip):
        return Outcome(
            "skipped",
            delivery.reason,
            delivery.event.id,
            delivery.uri,
            severity_override="ERROR" if delivery.malformed else None,
        )
    loaded = _load(relay, delivery)
    if isinstance(loaded, Outcome):
        return loaded
    try:
        trigger = parse_trigger(loaded.raw, loaded.format, delivery.uri)
    except InvalidTriggerError as error:
        run_key = naming.derive_run_key(naming.UNKNOWN_PIPELINE, loaded.identity)
        return _reject(relay, delivery, loaded, run_key, None, error)
    run_key = trigger.run_key or naming.derive_run_key(trigger.pipeline, loaded.identity)
    if _is_stale(relay, delivery):
        return _drop_stale(relay, delivery, loaded, run_key, trigger.pipeline)
    try:
        pipeline = relay.catalog.get(trigger.pipeline, trigger_uri=delivery.uri)
        problems = check_parameters(pipeline, trigger.parameters)
        if problems:
            raise InvalidTriggerError(delivery.uri, problems, code="invalid_parameters")
    except InvalidTriggerError as error:
        return _reject(relay, delivery, loaded, run_key, trigger.pipeline, error)
    return _claim_and_launch(relay, delivery, loaded, run_key, trigger, pipeline)


def _load(relay: Relay, delivery: ObjectDelivery | InlineDelivery) -> _Loaded | Outcome:
    if isinstance(delivery, InlineDelivery):
        reference = records.trigger_reference(delivery, None)
        identity = naming.message_identity(delivery.topic, delivery.message_id)
        return _Loaded(delivery.data, delivery.format, identity, reference)
    fmt = delivery.format
    if fmt is None:
        return _skip(delivery, "not a trigger file: the name does not end in .json, .yaml or .yml")
    if delivery.size == 0:
        return _skip(delivery, "zero-byte object: an upload in progress or a placeholder")
    generation, size = delivery.generation, delivery.size
    try:
        if generation is None or size is None:
            info = relay.store.stat(delivery.uri)
            if generation is None or generation == info.generation:
                generation, size = info.generation, info.size
        if size == 0:
            return _skip(delivery, "zero-byte object: an upload in progress or a placeholder")
        identity = naming.object_identity(delivery.bucket, delivery.name, generation)
        reference = records.trigger_reference(delivery, generation)
        if size is not None and size > MAX_TRIGGER_BYTES:
            problem = Problem("(document)", f"at most {MAX_TRIGGER_BYTES} bytes", f"{size} bytes")
            error = InvalidTriggerError(delivery.uri, [problem], code="too_large")
            run_key = naming.derive_run_key(naming.UNKNOWN_PIPELINE, identity)
            return _reject(relay, delivery, _Loaded(b"", fmt, identity, reference), run_key, None, error)
        blob = relay.store.read(delivery.uri, generation=generation)
    except BlobNotFoundError:
        identity = naming.object_identity(delivery.bucket, delivery.name, generation or 0)
        reference = records.trigger_reference(delivery, generation)
        found = f"no object at generation {generation}" if generation else "no object"
        error = InvalidTriggerError(
            delivery.uri, [Problem("(object)", "the trigger object", found)], code="trigger_not_found"
        )
        run_key = naming.derive_run_key(naming.UNKNOWN_PIPELINE, identity)
        return _reject(relay, delivery, _Loaded(b"", fmt, identity, reference), run_key, None, error)
    return _Loaded(blob.data, fmt, identity, reference)


def _skip(delivery: ObjectDelivery, reason: str) -> Outcome:
    return Outcome("skipped", reason, delivery.event.id, delivery.uri)


def _is_stale(relay: Relay, delivery: ObjectDelivery | InlineDelivery) -> bool:
    sent = delivery.event.time
    return sent is not None and (relay.clock() - sent).total_seconds() > relay.settings.max_event_age


def _drop_stale(
    relay: Relay, delivery: ObjectDelivery | InlineDelivery, loaded: _Loaded, run_key: str, pipeline: str
) -> Outcome:
    existing = _read_record(relay.store, naming.launch_record(relay.settings.results_uri, run_key))
    if existing is not None:
        return _duplicate(delivery, run_key, existing)
    age = (relay.clock() - delivery.event.time).total_seconds() if delivery.event.time else 0.0
    problem = Problem("(event)", f"an event at most {relay.settings.max_event_age:.0f} s old", f"{age:.0f} s old")
    error = InvalidTriggerError(delivery.uri, [problem], code="stale_event")
    outcome = _reject(relay, delivery, loaded, run_key, pipeline, error)
    return Outcome("dropped", outcome.message, outcome.event_id, outcome.trigger_uri, run_key, None, pipeline)


def _reject(
    relay: Relay,
    delivery: ObjectDelivery | InlineDelivery,
    loaded: _Loaded,
    run_key: str,
    pipeline: str | None,
    error: PermanentError,
) -> Outcome:
    """Record the rejection once (duplicates find it) and publish it."""
    uri = naming.rejection_record(relay.settings.results_uri, run_key)
    outcome = Outcome("rejected", str(error), delivery.event.id, delivery.uri, run_key, None, pipeline)
    if _read_record(relay.store, uri) is not None:
        return outcome
    record = records.rejection_record(
        run_key=run_key, pipeline=pipeline, trigger=loaded.reference, error=error, now=relay.clock()
    )
    _publish(relay, record)
    with contextlib.suppress(PreconditionFailedError):  # a concurrent duplicate recorded the same rejection
        relay.store.write(uri, records.encode(record), if_generation_match=0)
    return outcome


def _claim_and_launch(
    relay: Relay,
    delivery: ObjectDelivery | InlineDelivery,
    loaded: _Loaded,
    run_key: str,
    trigger: Trigger,
    pipeline: PipelineDefinition,
) -> Outcome:
    settings = relay.settings
    uri = naming.launch_record(settings.results_uri, run_key)
    parameters = run_parameters(pipeline, trigger.parameters, run_key=run_key, results_uri=settings.results_uri)
    claim = records.claim_record(
        run_key=run_key,
        pipeline=pipeline.name,
        backend=relay.backend.name,
        trigger=loaded.reference,
        parameters=parameters,
        labels=trigger.labels,
        now=relay.clock(),
        lease_seconds=settings.claim_lease,
    )
    try:
        generation = relay.store.write(uri, records.encode(claim), if_generation_match=0)
        taking_over = False
    except PreconditionFailedError:
        try:
            existing = relay.store.read(uri)
        except BlobNotFoundError:
            raise ClaimHeldError(f"{uri}: a claim on {run_key} was just released; retry") from None
        current = records.decode(existing.data)
        if current.get("state") != records.LAUNCHING:
            return _duplicate(delivery, run_key, current)
        if not records.lease_expired(current, relay.clock()):
            raise ClaimHeldError(
                f"{uri}: run key {run_key} is being launched by event {current['trigger'].get('event_id')} "
                f"until {current.get('lease_expires_at')}; retry later"
            ) from None
        try:
            generation = relay.store.write(uri, records.encode(claim), if_generation_match=existing.generation)
        except PreconditionFailedError:
            raise ClaimHeldError(f"{uri}: another delivery took over run key {run_key} first") from None
        taking_over = True
    # A takeover first asks the backend: the crashed holder may have submitted before it could record.
    found = relay.backend.find_run(run_key) if taking_over else None
    run = found or _submit(relay, uri, generation, claim, pipeline, parameters, trigger)
    if isinstance(run, PermanentError):
        return _reject(relay, delivery, loaded, run_key, pipeline.name, run)
    launched = records.launched_record(claim, run_id=run.run_id, run_url=run.url, now=relay.clock())
    try:
        _publish(relay, launched)
        relay.store.write(uri, records.encode(launched), if_generation_match=generation)
    except TransientError:
        _expire_claim(relay.store, uri, generation, claim, relay.clock())
        raise
    except PreconditionFailedError:
        # Our lease ran out mid-launch and another delivery took over; it finds this run by its key.
        log.warning("launch record for %s was taken over; run %s stands", run_key, run.run_id)
    message = f"launched {pipeline.name} as run {run.run_id}" + (" (after takeover)" if taking_over else "")
    return Outcome("launched", message, delivery.event.id, delivery.uri, run_key, run.run_id, pipeline.name)


def _submit(
    relay: Relay,
    uri: str,
    generation: int,
    claim: Mapping[str, Any],
    pipeline: PipelineDefinition,
    parameters: Mapping[str, Any],
    trigger: Trigger,
) -> LaunchedRun | PermanentError:
    request = LaunchRequest(
        run_key=claim["run_key"],
        pipeline=pipeline.name,
        package=pipeline.package,
        spec=pipeline.spec,
        parameters=parameters,
        labels=trigger.labels,
    )
    try:
        return relay.backend.launch(request)
    except LaunchRejectedError as error:
        relay.store.delete(uri, if_generation_match=generation)
        return error
    except TransientError:
        # The submit may have gone through: let the next delivery take over at once and ask the backend.
        _expire_claim(relay.store, uri, generation, claim, relay.clock())
        raise


def _expire_claim(store: BlobStore, uri: str, generation: int, claim: Mapping[str, Any], now: datetime) -> None:
    expired = {**claim, "lease_expires_at": records.timestamp(now)}
    # If this fails the lease simply runs out; a takeover still asks the backend first.
    with contextlib.suppress(PreconditionFailedError, TransientError):
        store.write(uri, records.encode(expired), if_generation_match=generation)


def _duplicate(delivery: ObjectDelivery | InlineDelivery, run_key: str, record: Mapping[str, Any]) -> Outcome:
    return Outcome(
        "duplicate",
        f"already {record.get('state')}: {run_key} (run {record.get('run_id')})",
        delivery.event.id,
        delivery.uri,
        run_key,
        record.get("run_id"),
        record.get("pipeline"),
    )


def _read_record(store: BlobStore, uri: str) -> dict[str, Any] | None:
    try:
        return records.decode(store.read(uri).data)
    except BlobNotFoundError:
        return None


def _publish(relay: Relay, record: Mapping[str, Any]) -> None:
    publish_record(relay.notifier, record)
