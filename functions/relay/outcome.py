"""What became of one event, as logged in one JSON line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

OutcomeKind = Literal["launched", "duplicate", "rejected", "skipped", "retried", "dropped"]
_SEVERITY: dict[str, str] = {
    "launched": "INFO",
    "duplicate": "INFO",
    "skipped": "INFO",
    "rejected": "ERROR",
    "dropped": "WARNING",
    "retried": "WARNING",
}


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

    @property
    def severity(self) -> str:
        return self.severity_override or _SEVERITY[self.outcome]

    def fields(self) -> dict[str, str | None]:
        return {
            "outcome": self.outcome,
            "event_id": self.event_id,
            "trigger_uri": self.trigger_uri,
            "run_key": self.run_key,
            "run_id": self.run_id,
            "pipeline": self.pipeline,
        }
