"""What the backends' run states and times mean to Relay, shared by the KFP and Vertex adapters."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from relay.ports import (
    FAILURE_INFRASTRUCTURE,
    FAILURE_PARAMETER,
    FAILURE_PREEMPTED,
    FAILURE_USER,
    RUN_CANCELLED,
    RUN_FAILED,
    RUN_PENDING,
    RUN_RUNNING,
    RUN_SUCCEEDED,
)

# KFP v2beta1 RuntimeState. SKIPPED is a run KFP did not need to execute (cached): it ended well.
KFP_STATES = {
    "SUCCEEDED": RUN_SUCCEEDED,
    "SKIPPED": RUN_SUCCEEDED,
    "FAILED": RUN_FAILED,
    "CANCELED": RUN_CANCELLED,
    "RUNNING": RUN_RUNNING,
    "CANCELING": RUN_RUNNING,  # still going until the backend says it stopped
    "PAUSED": RUN_RUNNING,
}
VERTEX_STATES = {
    "PIPELINE_STATE_SUCCEEDED": RUN_SUCCEEDED,
    "PIPELINE_STATE_FAILED": RUN_FAILED,
    "PIPELINE_STATE_CANCELLED": RUN_CANCELLED,
    "PIPELINE_STATE_RUNNING": RUN_RUNNING,
    "PIPELINE_STATE_CANCELLING": RUN_RUNNING,
    "PIPELINE_STATE_PAUSED": RUN_RUNNING,
}
# A failed run's `error` is a google.rpc.Status on both KFP v2beta1 and Vertex; its code says whose failure it was.
# UNAVAILABLE, INTERNAL, ABORTED and RESOURCE_EXHAUSTED are the backend's; INVALID_ARGUMENT and OUT_OF_RANGE a
# refused parameter; everything else (FAILED_PRECONDITION: "a task failed", UNKNOWN, DEADLINE_EXCEEDED, no code)
# the pipeline's own. Neither API has a code for preemption: its message says so.
_INFRASTRUCTURE_CODES = {8, 10, 13, 14}
_PARAMETER_CODES = {3, 11}
MAX_MESSAGE = 300  # a record's message is one short line; the backend's console has the rest
_FRACTION = re.compile(r"(\.\d{6})\d+")


def relay_state(states: dict[str, str], backend_state: object) -> str:
    """Relay's name for a backend state; anything unknown (queued, unspecified) counts as not started yet."""
    return states.get(str(backend_state), RUN_PENDING)


def failure_kind(error: object) -> str:
    """Whose failure a failed run's `error` (a google.rpc.Status: {code, message}) says it was (relay.ports)."""
    if not isinstance(error, dict):
        return FAILURE_USER
    if "preempt" in str(error.get("message") or "").lower():
        return FAILURE_PREEMPTED
    code = error.get("code")
    if isinstance(code, int) and code in _INFRASTRUCTURE_CODES:
        return FAILURE_INFRASTRUCTURE
    if isinstance(code, int) and code in _PARAMETER_CODES:
        return FAILURE_PARAMETER
    return FAILURE_USER


def short_line(text: object) -> str:
    """The first line of an error message, cut to MAX_MESSAGE characters."""
    line = " ".join(str(text or "").split())
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 1] + "…"


def backend_time(value: object) -> datetime | None:
    """An RFC 3339 time as the APIs send it (Vertex with nanoseconds), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(_FRACTION.sub(r"\1", value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
