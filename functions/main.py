"""Cloud Functions entry points: decode the event, hand it to Relay, log one outcome line."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import flask
import functions_framework
from cloudevents.http import CloudEvent
from werkzeug.exceptions import BadRequest, HTTPException

from relay import absence, actions, drain, logs, observe, runtime, unreadable
from relay import trace as tracing
from relay.errors import PermanentError, TransientError
from relay.events import (
    PUBSUB_PUBLISHED,
    Delivery,
    EventInfo,
    envelope_problem,
    event_info,
    parse_pubsub_event,
    parse_storage_event,
    topic_of,
    with_span,
)
from relay.outcome import Outcome, OutcomeKind

logs.configure()


@functions_framework.cloud_event
def on_object_finalized(cloud_event: CloudEvent) -> None:
    """google.cloud.storage.object.v1.finalized: read the object as a trigger file."""
    _handle(cloud_event, parse_storage_event)


@functions_framework.cloud_event
def on_message_published(cloud_event: CloudEvent) -> None:
    """google.cloud.pubsub.topic.v1.messagePublished: an inline trigger, a storage notification or a URI; or, with
    an `action` attribute, a cancel or rerun of a run of the topic's tenant."""
    attributes, data = cloud_event.get_attributes(), cloud_event.get_data()
    event = event_info(attributes)
    message = data.get("message") if isinstance(data, Mapping) else None
    topic = topic_of(event.source)
    if event.type == PUBSUB_PUBLISHED and isinstance(message, Mapping):
        action = actions.action_request(event, topic, message)
        # An envelope that cannot be read is no action either: the parser below skips it. Asked only of an action,
        # as the parser asks it of every other message.
        if action is not None and envelope_problem(attributes, data) is None:
            _act(event, f"{topic}#{message.get('messageId') or event.id}", action)
            return
    _handle(cloud_event, parse_pubsub_event)


@functions_framework.cloud_event
def on_schedule(cloud_event: CloudEvent) -> None:
    """A Cloud Scheduler tick through Pub/Sub: bring the records of launched runs to the backend's state."""
    event = event_info(cloud_event.get_attributes())
    # Here, not at the top: the lifecycle's modules load with the first tick or action, never with a trigger's.
    from relay import lifecycle

    try:
        relay = runtime.current(os.environ)
        tick = lifecycle.reconcile(relay)
    except Exception as error:
        # The next tick does the same work; a retry of this one would only crowd it.
        logs.log_outcome(
            Outcome("retried", f"{type(error).__name__}: {error}", event.id, "schedule", severity_override="ERROR")
        )
        return
    for line in tick.lines:
        logs.log_outcome(line)
    # Here, not at the top: the board's modules load with the first tick, never with an event's cold start.
    from relay import board_store

    severity = None
    try:
        board = board_store.refresh(relay)
    except Exception as error:  # the board is a view: its trouble must not hide what the tick did
        board, severity = f"not written: {type(error).__name__}: {error}", "ERROR"
    summary = f"{lifecycle.tick_summary(tick)}; board: {board}"
    logs.log_outcome(Outcome("reconciled", summary, event.id, "schedule", severity_override=severity))


@functions_framework.cloud_event
def on_run_ended(cloud_event: CloudEvent) -> None:
    """A record on the notify topic: a run's end (the pipeline's exit step publishes it, as does every end Relay
    records) frees its slots and drains its tenant's queue at once. Only a hint: relay.lifecycle.end_seen frees
    nothing the result record or the backend does not confirm. Any other record is skipped without a look."""
    attributes, data = cloud_event.get_attributes(), cloud_event.get_data()
    event = event_info(attributes)
    message = data.get("message") if isinstance(data, Mapping) else None
    if event.type != PUBSUB_PUBLISHED or not isinstance(message, Mapping):
        logs.log_outcome(Outcome("skipped", "expected a Pub/Sub message", event.id, event.source))
        return
    uri = f"{topic_of(event.source)}#{message.get('messageId') or event.id}"
    from relay import lifecycle  # as in on_schedule: loaded with the first end, not with a trigger

    run_key = lifecycle.ended_run(message)
    if run_key is None:
        logs.log_outcome(Outcome("skipped", "not a run's end", event.id, uri))
        return
    try:
        seen = lifecycle.end_seen(runtime.current(os.environ), run_key)
    except Exception as error:
        # Redelivered: the end frees its slots on the next try (or the tick's, whichever comes first).
        severity = None if isinstance(error, TransientError) else "ERROR"
        message_text = f"{type(error).__name__}: {error}"
        logs.log_outcome(Outcome("retried", message_text, event.id, uri, run_key, severity_override=severity))
        raise
    logs.log_outcome(Outcome("reconciled", lifecycle.end_summary(seen), event.id, uri, run_key))


@functions_framework.errorhandler(Exception)
def _unreadable_request(error: Exception) -> Any:
    """What the framework raised before an entry point could run (a body it cannot read: see relay.unreadable) is
    acknowledged with one outcome line; what an entry point raised keeps the framework's 500, for a redelivery."""
    if isinstance(error, HTTPException) and not isinstance(error, BadRequest):
        return error  # Flask's own answers (a GET, an unknown path) stay as they are
    if not unreadable.raised_before(error, _handle.__code__.co_filename):
        raise error
    headers = flask.request.headers
    logs.log_outcome(unreadable.outcome(error, headers.get("ce-id", ""), headers.get("ce-source", "")))
    return "OK"


def _act(event: EventInfo, uri: str, request: actions.ActionRequest | str) -> None:
    """One action message: done, refused (acknowledged, like a rejected trigger), or raised for a redelivery."""
    from relay import lifecycle  # as in on_schedule: loaded with the first action, not with a trigger

    if not isinstance(request, actions.ActionRequest):
        logs.log_outcome(Outcome("skipped", str(request), event.id, uri, severity_override="ERROR"))
        return
    try:
        answer = lifecycle.handle_action(runtime.current(os.environ), request)
    except PermanentError as refused:  # not this tenant's run, a run still going, a policy that no longer allows
        logs.log_outcome(Outcome("rejected", str(refused), event.id, uri, request.run_key))
        return
    except Exception as error:
        severity = None if isinstance(error, TransientError) else "ERROR"
        logs.log_outcome(
            Outcome(
                "retried",
                f"{type(error).__name__}: {error}",
                event.id,
                uri,
                request.run_key,
                severity_override=severity,
            )
        )
        raise
    kind: OutcomeKind = "skipped"
    if answer.changed:
        kind = "cancelled" if request.action == "cancel" else "launched"
    logs.log_outcome(Outcome(kind, answer.message, event.id, uri, answer.run_key, answer.run_id, answer.pipeline))


def _handle(cloud_event: CloudEvent, parse: Callable[[Mapping[str, Any], Any], Delivery]) -> None:
    attributes = cloud_event.get_attributes()
    event_id, uri = str(attributes.get("id", "")), str(attributes.get("source", ""))
    span: tracing.Trace | None = None
    project = ""
    try:
        # The parser turns every malformed shape into a Skip; it sits inside the try all the same, so that even a
        # bug there ends in this event's one outcome line.
        delivery = with_span(parse(attributes, cloud_event.get_data()))
        event_id, uri, span = delivery.event.id, delivery.uri, delivery.event.trace
        relay = runtime.current(os.environ)
        project = relay.settings.project or tracing.project_of(delivery.event.source)
        outcome = drain.deliver(relay, delivery)
        measured = observe.measured(outcome, relay.policy, now=relay.clock(), event_time=delivery.event.time)
        absence.arrived(relay, outcome)
    except Exception as error:
        # Permanent problems were recorded and returned as outcomes; anything raised is worth a redelivery
        # (transient faults, settings that need a redeploy, or a bug that a fix will clear).
        severity = None if isinstance(error, TransientError) else "ERROR"
        message = f"{type(error).__name__}: {error}"
        retried = Outcome("retried", message, event_id, uri, severity_override=severity)
        logs.log_outcome(retried, tracing.log_fields(span, project))
        raise
    logs.log_outcome(outcome, measured, tracing.log_fields(span, project))
