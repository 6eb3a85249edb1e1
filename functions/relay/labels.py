"""The labels a run carries: the trigger's own (triggers.py checks them against these rules) and Relay's three."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# Cloud labels as Vertex AI takes them on a PipelineJob: at most 64, keys of 1-63 and values of 0-63 lower-case
# letters, digits, _ or -, a key starting with a letter. (International letters are allowed there; Relay keeps to
# ASCII, so that a label reads the same in every console and filter.)
MAX_LABELS = 64
KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}\Z")
VALUE = re.compile(r"^[a-z0-9_-]{0,63}\Z")
KEY_RULE = "a label key: a lower-case letter, then up to 62 lower-case letters, digits, _ or -"
VALUE_RULE = "a label value: up to 63 lower-case letters, digits, _ or -"

# Relay's own labels, on every run, so that the console tells runs apart by tenant, pipeline and trigger.
TENANT = "relay-tenant"  # "" for a deployment without tenants
PIPELINE = "relay-pipeline"
TRIGGER = "relay-trigger"  # how the run was started: one of TRIGGERED_BY
TRIGGERED_BY = ("object", "message", "route", "rerun")
TRACE = "relay-trace"  # the trace id of the delivery that launched it (relay.trace): Cloud Trace finds the rest
RELAY_PREFIX = "relay-"  # every key under it is Relay's, now and in later releases
# Vertex AI sets this one on every run itself, and overrides a value sent ("user set value will get overrided").
VERTEX_BILLING = "vertex-ai-pipelines-run-billing-id"
RELAY_KEYS = (TENANT, PIPELINE, TRIGGER, TRACE)
MAX_TRIGGER_LABELS = MAX_LABELS - len(RELAY_KEYS)  # the room Relay's own leave
RESERVED_RULE = f"a key of the trigger's own (not {RELAY_PREFIX}*, which Relay sets, nor {VERTEX_BILLING})"
COUNT_RULE = f"at most {MAX_TRIGGER_LABELS} labels (a run takes {MAX_LABELS}; Relay adds {', '.join(RELAY_KEYS)})"


def triggered_by(reference: Mapping[str, Any]) -> str:
    """How a run was started, from its trigger reference: a rerun, a routed data object, a message carrying the
    trigger, or a trigger file (its bucket's event, a notification or a message naming it)."""
    via = reference.get("via")
    if via == "rerun":
        return "rerun"  # first: a rerun's reference keeps the `route` of the run it repeats
    if "route" in reference:
        return "route"
    return "message" if via == "pubsub-inline" else "object"


def for_run(
    own: Mapping[str, str], *, tenant: str, pipeline: str, triggered: str, trace_id: str = ""
) -> dict[str, str]:
    """The labels a run is sent with: the trigger's, then Relay's (a trigger cannot hold Relay's keys); the trace
    id only when it is a label value (relay.trace checked it already: a record from before may hold anything)."""
    traced = {TRACE: trace_id} if trace_id and VALUE.match(trace_id) else {}
    return {**own, TENANT: tenant, PIPELINE: pipeline, TRIGGER: triggered, **traced}


def is_reserved(key: str) -> bool:
    """A key a trigger may not set: Relay's, or one Vertex AI sets itself."""
    return key.startswith(RELAY_PREFIX) or key == VERTEX_BILLING
