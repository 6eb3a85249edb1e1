"""Relay's errors; the entry points decide ack or retry from the branch an error sits on.

::

    RelayError
    ├── PermanentError            recorded, logged at ERROR, event acknowledged
    │   ├── InvalidTriggerError   the trigger document or its parameters are wrong (one Problem each)
    │   │   └── PolicyDeniedError the trigger asks for more than the deployment's policy allows its tenant
    │   └── LaunchRejectedError   the backend refused the run request itself as invalid (400, 422)
    ├── TransientError            raised from the entry point so the platform redelivers
    │   ├── StorageUnavailableError
    │   ├── TokenUnavailableError
    │   ├── NotifyUnavailableError
    │   ├── BackendUnavailableError       the request surely created no run: retry at once
    │   │   ├── SubmitUncertainError      it may have: let the claim's lease run out, then ask the backend
    │   │   ├── LeaseExpiredError         the claim's lease ran out before the submit, which was not sent
    │   │   └── BackendBusyError          refused for load or quota (429, RESOURCE_EXHAUSTED): pause submits
    │   ├── BackendPausedError    this instance holds submits back after a BackendBusyError; nothing was sent
    │   └── ClaimHeldError        another delivery holds a live claim on this run key
    ├── ConfigError               RELAY_* settings are missing or invalid (every problem at once); raised,
    │                             so events wait for a fixed deployment instead of being acknowledged
    ├── BlobNotFoundError         BlobStore.read found no object (at that generation)
    ├── PreconditionFailedError   BlobStore.write's generation precondition did not hold
    ├── BlobRequestError          Cloud Storage refused the request itself (400: a bad bucket name or generation)
    └── UnauthorizedError         the backend answered 401: refresh the token once and retry
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a trigger: where, what was expected, what was found."""

    field: str
    expected: str
    found: str

    def __str__(self) -> str:
        return f"{self.field}: expected {self.expected}, found {self.found}"


def describe_value(value: object) -> str:
    """A short, type-first description of a found value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"number {value}" if not (isinstance(value, float) and math.isnan(value)) else "NaN"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"string {shown!r}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return f"a mapping of {len(value)}"
    return type(value).__name__


class RelayError(Exception):
    """Base of every error Relay raises on purpose."""


class PermanentError(RelayError):
    """Redelivering the event cannot help: record the problem and acknowledge."""

    code = "permanent"


class InvalidTriggerError(PermanentError):
    """The trigger cannot become a run; `problems` lists every reason found."""

    code = "invalid_trigger"

    def __init__(self, uri: str, problems: list[Problem], *, code: str | None = None) -> None:
        self.uri = uri
        self.problems = tuple(problems)
        if code:
            self.code = code
        listed = "; ".join(str(p) for p in problems)
        super().__init__(f"{uri}: {len(problems)} problem(s): {listed}")


class PolicyDeniedError(InvalidTriggerError):
    """The trigger names a source, destination, secret, cluster or code the policy does not allow (one Problem
    each, with the rule that would allow it)."""

    code = "policy_denied"


class LaunchRejectedError(PermanentError):
    """The backend understood the request and refused it."""

    code = "launch_rejected"


class ConfigError(RelayError):
    """One or more RELAY_* settings are missing or invalid."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("invalid Relay configuration: " + "; ".join(problems))


class TransientError(RelayError):
    """Redelivery may succeed: raise out of the entry point."""


class StorageUnavailableError(TransientError):
    """Cloud Storage (or the local results folder) did not answer as expected."""


class TokenUnavailableError(TransientError):
    """No token could be obtained for the backend."""


class BackendUnavailableError(TransientError):
    """The pipeline backend did not answer, or answered with a retryable status: `status` is the HTTP status it
    answered (None when it gave no usable answer), `retry_after` how long it asked callers to wait (seconds), when
    it said."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class NotifyUnavailableError(TransientError):
    """The notification topic did not take the message."""


class SubmitUncertainError(BackendUnavailableError):
    """The submit failed after it may have reached the backend (a timeout, a 5xx from a proxy)."""


class LeaseExpiredError(BackendUnavailableError):
    """The claim's lease ran out while waiting to submit; nothing was sent."""


class BackendBusyError(BackendUnavailableError):
    """The backend refused the request for load or quota, so it surely created nothing; `retry_after` is how
    long it asked callers to wait (seconds), when it said."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)


class BackendPausedError(TransientError):
    """The backend asked this instance to hold off; the delivery is retried later, nothing was sent."""


class ClaimHeldError(TransientError):
    """A live claim by another delivery exists; retry after it resolves or its lease expires."""


class BlobNotFoundError(RelayError):
    """No object at that URI (and generation)."""


class PreconditionFailedError(RelayError):
    """A conditional write lost: the object exists, or has another generation."""


class BlobRequestError(RelayError):
    """Cloud Storage refused the request as malformed (400): repeating it cannot help."""


class UnauthorizedError(RelayError):
    """The backend rejected the token."""
