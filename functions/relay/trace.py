"""One trace per trigger: the W3C trace context an event carries (or a new one), and where Relay writes it.

A `traceparent` (www.w3.org/TR/trace-context, version 00) is `00-<32 hex trace id>-<16 hex parent id>-<2 hex
flags>`, lower-case, neither id all zeros. Eventarc carries it as the CloudEvent extension attribute `traceparent`;
a Pub/Sub message as the attribute `googclient_traceparent` (Google's client libraries with OpenTelemetry on) or
`traceparent`. Any publisher may set those: one that is not exactly that shape is replaced by a new trace, never
copied into a record, a label or a log field.

Relay's own work on a delivery is one span of that trace (a new span id, the event's span its parent); the launch
record keeps Relay's span as `trigger.traceparent`, so the run's step is a child of it. Cloud Logging joins the
lines of one trace by `logging.googleapis.com/trace` (`projects/P/traces/ID`) and `logging.googleapis.com/spanId`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from relay import naming

# Where the trace context comes in, most trusted first: the CloudEvent's own (Eventarc sets it), then the message's.
CLOUDEVENT_ATTRIBUTE = "traceparent"
MESSAGE_ATTRIBUTES = ("googclient_traceparent", "traceparent")
TRACE_FIELD = "logging.googleapis.com/trace"
SPAN_FIELD = "logging.googleapis.com/spanId"
SAMPLED_FIELD = "logging.googleapis.com/trace_sampled"
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?\Z", re.DOTALL)
_MAX_TRACEPARENT = 512  # a later version may append fields; a header longer than this is no one's trace context
_TRACE_ID = re.compile(r"^[0-9a-f]{32}\Z")
_SAMPLED = 0x01
_SOURCE_PROJECT = re.compile(r"/projects/([^/]+)/")
CONSOLE = "https://console.cloud.google.com/traces/list"


@dataclass(frozen=True)
class Trace:
    """One span's place in a trace: the trace id, this span's id, and the trace flags."""

    trace_id: str
    span_id: str
    flags: int = 0

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}"

    @property
    def sampled(self) -> bool:
        return bool(self.flags & _SAMPLED)

    def child(self) -> Trace:
        """A new span of the same trace, whose parent is this one."""
        return Trace(self.trace_id, _new_id(8), self.flags)


def parse_traceparent(text: object) -> Trace | None:
    """The trace context a `traceparent` value names; None for anything that is not exactly one (version 00's
    shape, or a later version's with its extra fields after a `-`; version ff is invalid; no id all zeros)."""
    if not isinstance(text, str) or len(text) > _MAX_TRACEPARENT:
        return None
    found = _TRACEPARENT.match(text)
    if found is None:
        return None
    version, trace_id, span_id, flags, rest = found.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return Trace(trace_id, span_id, int(flags, 16))


def new_trace() -> Trace:
    """A trace of Relay's own, for an event that came with none (or with one Relay would not take)."""
    return Trace(_new_id(16), _new_id(8), _SAMPLED)


def incoming(attributes: Mapping[str, Any], message_attributes: Mapping[str, Any] | None = None) -> Trace | None:
    """The valid trace context an event came with: its CloudEvent attribute, else its Pub/Sub message's."""
    found = parse_traceparent(attributes.get(CLOUDEVENT_ATTRIBUTE))
    for name in MESSAGE_ATTRIBUTES:
        if found is None and message_attributes is not None:
            found = parse_traceparent(message_attributes.get(name))
    return found


def span_for(parent: Trace | None) -> Trace:
    """Relay's span for one delivery: a child of the event's, else the root of a new trace."""
    return parent.child() if parent is not None else new_trace()


def log_fields(trace: Trace | None, project: str) -> dict[str, object]:
    """The fields that put a JSON log line in its trace: Relay's own `trace_id` (what `relay why` and a local stack
    read), and Cloud Logging's, which must name the project (`projects/P/traces/ID`), when the project is known."""
    if trace is None:
        return {}
    fields: dict[str, object] = {"trace_id": trace.trace_id}
    if naming.PROJECT_ID.match(project):
        fields[TRACE_FIELD] = f"projects/{project}/traces/{trace.trace_id}"
        fields[SPAN_FIELD] = trace.span_id
        fields[SAMPLED_FIELD] = trace.sampled
    return fields


def trace_id_of(reference: Mapping[str, Any]) -> str:
    """The trace id a record's trigger reference keeps ("" for none, or for one that is not a trace context)."""
    found = parse_traceparent(reference.get("traceparent"))
    return found.trace_id if found else ""


def project_of(source: str) -> str:
    """The project a CloudEvent source names (a Pub/Sub topic's: `//pubsub.googleapis.com/projects/P/topics/T`);
    "" for one that names none (a bucket's storage event: `projects/_`)."""
    found = _SOURCE_PROJECT.search(source)
    return found[1] if found and naming.PROJECT_ID.match(found[1]) else ""


def console_url(project: str, trace_id: str) -> str:
    """Cloud Trace's page of one trace ("" when either is unknown, or the id is not one)."""
    if not naming.PROJECT_ID.match(project) or not _TRACE_ID.match(trace_id):
        return ""
    return f"{CONSOLE}?project={project}&tid={trace_id}"


def _new_id(size: int) -> str:
    while True:  # all zeros is invalid; 2**-64 of the time
        value = secrets.token_hex(size)
        if value.strip("0"):
            return value
