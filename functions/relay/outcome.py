"""What became of one event, as logged in one JSON line, and how loud that line is.

Severity says whose problem it is, so that Error Reporting and alerts fire for Relay's faults only:

- INFO: all went as it should (launched, a duplicate acknowledged, a skip).
- WARNING: the trigger's own problem (a rejection: bad document, unknown pipeline, bad parameters, a policy
  denial, a missing or oversized object), which its author fixes; and a transient fault being retried.
- ERROR: Relay's fault or its deployment's: a backend that refuses what Relay checked and sent
  (`launch_rejected`), an event that ran out of time before it could launch (`stale_event`, dropped), a retry
  caused by configuration or a bug, a delivery Relay cannot make out at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

OutcomeKind = Literal[
    "launched",
    "duplicate",
    "rejected",
    "skipped",
    "retried",
    "dropped",
    "cancelled",
    "reconciled",
    "queued",
    "collected",
    "incomplete",
]
_SEVERITY: dict[str, str] = {
    "launched": "INFO",
    "duplicate": "INFO",
    "skipped": "INFO",
    "rejected": "WARNING",
    "dropped": "ERROR",
    "retried": "WARNING",
    "cancelled": "INFO",  # a run stopped on request (lifecycle.cancel)
    "reconciled": "INFO",  # one reconcile tick (on_schedule)
    "queued": "INFO",  # accepted, waiting in the queue for a slot, a pause's end or the backend (relay.queue)
    "collected": "INFO",  # an object joined a set that is not complete yet (relay.sets)
    "incomplete": "WARNING",  # a set its deadline closed before it was complete: someone should look
}


# Rejection codes that are not the trigger's doing: the trigger passed every check Relay makes, or never got a
# chance to (the backend refused it; Relay could not launch it before it went stale).
_RELAY_FAULTS = frozenset({"launch_rejected", "stale_event"})


def severity_of_rejection(code: str) -> str:
    """WARNING for a trigger's own problem, ERROR for a rejection that is Relay's fault (see the module's doc)."""
    return "ERROR" if code in _RELAY_FAULTS else "WARNING"


@dataclass(frozen=True)
class Outcome:
    outcome: OutcomeKind
    message: str
    event_id: str
    trigger_uri: str
    run_key: str | None = None
    run_id: str | None = None
    pipeline: str | None = None
    severity_override: str | None = None
    code: str | None = None  # a rejection's error code: it decides whose problem the rejection is

    @property
    def severity(self) -> str:
        if self.severity_override:
            return self.severity_override
        if self.code and self.outcome in ("rejected", "dropped"):
            return severity_of_rejection(self.code)
        return _SEVERITY[self.outcome]

    def fields(self) -> dict[str, str | None]:
        return {
            "outcome": self.outcome,
            "event_id": self.event_id,
            "trigger_uri": self.trigger_uri,
            "run_key": self.run_key,
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            **({"code": self.code} if self.code else {}),  # a rejection's: for log-based metrics and alerts
        }
