"""One JSON line per log record, in the shape Cloud Logging reads from a function's output."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime

from relay.outcome import Outcome

_LEVEL_TO_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}
_SEVERITY_TO_LEVEL = {severity: level for level, severity in _LEVEL_TO_SEVERITY.items()}
_OUTCOME_FIELDS = "relay_fields"


class JsonFormatter(logging.Formatter):
    """`severity`, `message`, `time`, `logger`, plus the fields an outcome line carries."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "severity": _LEVEL_TO_SEVERITY.get(record.levelno, "DEFAULT"),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        entry.update(getattr(record, _OUTCOME_FIELDS, {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:  # formatted (and scrubbed of secrets) already: relay.secrets.SecretFilter
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str)


class _StdoutHandler(logging.Handler):
    """Writes to whatever sys.stdout is at the time (Cloud Logging reads it; test runners swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stdout.write(self.format(record) + "\n")
            sys.stdout.flush()
        except Exception:
            self.handleError(record)


def configure() -> None:
    """Route Relay's loggers to JSON lines on stdout, once."""
    logger = logging.getLogger("relay")
    if any(isinstance(h, _StdoutHandler) for h in logger.handlers):
        return
    handler = _StdoutHandler()
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def log_outcome(outcome: Outcome, measured: Mapping[str, object] | None = None) -> None:
    """The outcome's line; `measured`, fields the metrics read that the outcome does not hold (relay.observe)."""
    fields = outcome.fields()
    if measured:
        fields.update(measured)
    logging.getLogger("relay").log(
        _SEVERITY_TO_LEVEL[outcome.severity],
        outcome.message,
        extra={_OUTCOME_FIELDS: fields},
    )
