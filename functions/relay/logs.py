"""One JSON line per log record, in the shape Cloud Logging reads from a function's output."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Mapping
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


def log_outcome(outcome: Outcome, *extra: Mapping[str, object] | None) -> None:
    """The outcome's line; `extra`: fields the outcome does not hold, such as those the metrics read
    (relay.observe) and those that put the line in its trace (relay.trace.log_fields)."""
    fields = outcome.fields()
    for more in extra:
        if more:
            fields.update(more)
    logging.getLogger("relay").log(
        _SEVERITY_TO_LEVEL[outcome.severity], outcome.message, extra={_OUTCOME_FIELDS: fields}
    )


class TraceFilter(logging.Filter):
    """Puts every line a process writes through Relay's loggers in one trace (a pipeline step's lines)."""

    def __init__(self, fields: Mapping[str, object]) -> None:
        super().__init__()
        self._fields = dict(fields)

    def filter(self, record: logging.LogRecord) -> bool:
        setattr(record, _OUTCOME_FIELDS, {**self._fields, **getattr(record, _OUTCOME_FIELDS, {})})
        return True


@contextlib.contextmanager
def lines_in_trace(name: str, fields: Mapping[str, object]) -> Iterator[None]:
    """While inside: logger `name`'s lines (INFO and up) also as JSON lines on stdout, each with `fields` (a
    pipeline step's lines in its run's trace). The logger keeps its other handlers and propagation."""
    logger = logging.getLogger(name)
    handler = _StdoutHandler()
    handler.setFormatter(JsonFormatter())
    handler.addFilter(TraceFilter(fields))
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
