"""The seams between Relay's core and the outside world; adapters implement them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from relay.errors import LeaseExpiredError


@dataclass(frozen=True)
class Blob:
    """An object's bytes and the generation they were read at."""

    data: bytes
    generation: int


@dataclass(frozen=True)
class BlobInfo:
    """An object's facts at one generation, as the store keeps them: what a route's templates may use."""

    size: int
    generation: int
    content_type: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)  # the object's custom metadata
    updated: datetime | None = None  # when this version was last changed (`relay backfill --since`), if known


class BlobStore(Protocol):
    """Objects addressed by URI (gs://bucket/name, or a local path), with generation preconditions."""

    def read(self, uri: str, *, generation: int | None = None) -> Blob:
        """The object's bytes (at `generation` if given); BlobNotFoundError when absent."""
        ...

    def stat(self, uri: str, *, generation: int | None = None) -> BlobInfo:
        """The object's facts (at `generation` if given, else the current one); BlobNotFoundError when absent."""
        ...

    def write(self, uri: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        """Write and return the new generation; 0 means create-only. PreconditionFailedError if it lost."""
        ...

    def delete(self, uri: str, *, if_generation_match: int | None = None) -> None:
        """Remove the object; absent is fine."""
        ...

    def list(self, prefix: str) -> Iterator[str]:
        """URIs of the objects whose URI starts with `prefix`."""
        ...


class TokenSource(Protocol):
    """Bearer tokens for the pipeline backend, cached until shortly before they expire."""

    def token(self, *, refresh: bool = False) -> str:
        """A valid token; `refresh` forces a new one (after the backend answered 401)."""
        ...


@dataclass(frozen=True)
class LaunchRequest:
    run_key: str
    pipeline: str
    package: bytes  # compiled YAML as stored in the catalog
    spec: Mapping[str, Any]  # the PipelineSpec document from it
    parameters: Mapping[str, Any]
    labels: Mapping[str, str] = field(default_factory=dict)
    # Past this moment the claim may be taken over: a backend must not start sending the submit then.
    deadline: datetime | None = None

    def check_deadline(self) -> None:
        """Raise LeaseExpiredError once the deadline has passed; backends call it right before submitting."""
        if self.deadline is not None and datetime.now(UTC) >= self.deadline:
            raise LeaseExpiredError(f"{self.run_key}: the claim's lease ran out before the submit; not sent")


@dataclass(frozen=True)
class LaunchedRun:
    run_id: str
    url: str


# Where a run is, as Relay names it whatever the backend calls it (KFP CANCELED, Vertex PIPELINE_STATE_CANCELLED).
RUN_PENDING = "pending"
RUN_RUNNING = "running"
RUN_SUCCEEDED = "succeeded"
RUN_FAILED = "failed"
RUN_CANCELLED = "cancelled"
RUN_MISSING = "missing"  # the backend has no such run (deleted, or never made)
RUN_TERMINAL = (RUN_SUCCEEDED, RUN_FAILED, RUN_CANCELLED)

# Why a run failed, as Relay names it whatever the backend said (relay.adapters.states maps the backends' errors):
# what a policy's `retries.<pipeline>.failures` chooses among. A failure the run recorded itself is FAILURE_USER.
FAILURE_INFRASTRUCTURE = "infrastructure"  # the backend's or the cluster's trouble: unavailable, internal, aborted
FAILURE_PREEMPTED = "preempted"  # a node taken back (Spot/preemptible VMs)
FAILURE_PARAMETER = "parameter"  # the backend refused what the run was given
FAILURE_USER = "user"  # the pipeline's own code failed, or nothing says otherwise
FAILURES = (FAILURE_INFRASTRUCTURE, FAILURE_PREEMPTED, FAILURE_PARAMETER, FAILURE_USER)


@dataclass(frozen=True)
class RunState:
    """What the backend says of one run. `message` is a short line from the run's own status, never a request's."""

    state: str
    message: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    failure: str = ""  # for a failed run: one of FAILURES

    @property
    def terminal(self) -> bool:
        return self.state in RUN_TERMINAL


class PipelineBackend(Protocol):
    """Where runs are created. `find_run` lets a takeover learn whether a crashed instance submitted; `run_state`
    and `terminate` follow and stop a run once launched (`run_key` and `run_id` as the launch record holds them)."""

    name: str

    def find_run(self, run_key: str) -> LaunchedRun | None: ...

    def launch(self, request: LaunchRequest) -> LaunchedRun: ...

    def run_state(self, run_key: str, run_id: str) -> RunState: ...

    def terminate(self, run_key: str, run_id: str) -> None:
        """Ask the backend to stop the run; a run that has already ended is left as it is."""
        ...


class Notifier(Protocol):
    """Publishes each record written, for whoever listens."""

    def publish(self, data: bytes, attributes: Mapping[str, str]) -> None: ...
