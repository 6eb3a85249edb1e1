"""In-memory fakes of Relay's ports, for tests of the core (the adapters have their own, on real servers)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from relay.errors import BlobNotFoundError, PreconditionFailedError
from relay.ports import RUN_CANCELLED, RUN_PENDING, Blob, BlobInfo, LaunchedRun, LaunchRequest, RunState


class MemoryBlobStore:
    """Objects with Cloud Storage's generation rules: create-only is generation 0, each write a new one."""

    def __init__(self) -> None:
        self._objects: dict[str, tuple[bytes, int]] = {}
        self._facts: dict[str, tuple[str | None, dict[str, str]]] = {}  # content type and metadata, set by `put`
        self._next_generation = 1000
        self._lock = threading.Lock()
        self.looked_at: list[str] = []  # every URI read or stat'ed, in order

    def read(self, uri: str, *, generation: int | None = None) -> Blob:
        self.looked_at.append(uri)
        return self._get(uri, generation)

    def _get(self, uri: str, generation: int | None) -> Blob:
        with self._lock:
            if uri not in self._objects or generation not in (None, self._objects[uri][1]):
                raise BlobNotFoundError(uri)
            data, current = self._objects[uri]
            return Blob(data, current)

    def stat(self, uri: str, *, generation: int | None = None) -> BlobInfo:
        self.looked_at.append(uri)
        blob = self._get(uri, generation)
        content_type, metadata = self._facts.get(uri, (None, {}))
        return BlobInfo(len(blob.data), blob.generation, content_type, dict(metadata))

    def write(self, uri: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        with self._lock:
            current = self._objects.get(uri, (b"", 0))[1]
            if if_generation_match is not None and if_generation_match != current:
                raise PreconditionFailedError(f"{uri}: expected {if_generation_match}, found {current}")
            self._next_generation += 1
            self._objects[uri] = (data, self._next_generation)
            self._facts.pop(uri, None)  # a new version has only what its own upload gave it
            return self._next_generation

    def put(
        self,
        uri: str,
        data: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        generation: int | None = None,
    ) -> int:
        """An upload with the content type and custom metadata a data object carries, at `generation` if given (as
        a notification a test writes names it); the generation it got. Only the newest version is kept."""
        with self._lock:
            if generation is None:
                self._next_generation += 1
                generation = self._next_generation
            self._next_generation = max(self._next_generation, generation)
            self._objects[uri] = (data, generation)
            self._facts[uri] = (content_type, dict(metadata or {}))
        return generation

    def delete(self, uri: str, *, if_generation_match: int | None = None) -> None:
        with self._lock:
            current = self._objects.get(uri, (b"", 0))[1]
            if if_generation_match is not None and current and if_generation_match != current:
                raise PreconditionFailedError(uri)
            self._objects.pop(uri, None)
            self._facts.pop(uri, None)

    def list(self, prefix: str) -> Iterator[str]:
        return iter(self.uris(prefix))

    def uris(self, prefix: str = "") -> list[str]:
        with self._lock:
            return sorted(uri for uri in self._objects if uri.startswith(prefix))


@dataclass
class FakeBackend:
    """Remembers every launch; `failures` are raised, in order, by the next launches."""

    name: str = "fake"
    launches: list[LaunchRequest] = field(default_factory=list)
    failures: list[Exception] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)
    states: dict[str, RunState] = field(default_factory=dict)  # run id -> what run_state answers
    state_lookups: list[str] = field(default_factory=list)
    state_errors: dict[str, Exception] = field(default_factory=dict)  # run id -> what run_state raises instead
    terminated: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def launch(self, request: LaunchRequest) -> LaunchedRun:
        with self._lock:
            if self.failures:
                raise self.failures.pop(0)
            self.launches.append(request)
            return self._run(request.run_key, len(self.launches))

    def find_run(self, run_key: str) -> LaunchedRun | None:
        with self._lock:
            self.lookups.append(run_key)
            for number, launched in enumerate(self.launches, start=1):
                if launched.run_key == run_key:
                    return self._run(run_key, number)
            return None

    def run_state(self, run_key: str, run_id: str) -> RunState:
        """What `states` says of the run (set by the test), else pending; or the error `state_errors` names."""
        with self._lock:
            self.state_lookups.append(run_id)
            if run_id in self.state_errors:
                raise self.state_errors[run_id]
            return self.states.get(run_id, RunState(RUN_PENDING))

    def terminate(self, run_key: str, run_id: str) -> None:
        with self._lock:
            self.terminated.append(run_id)
            if not self.states.get(run_id, RunState(RUN_PENDING)).terminal:
                self.states[run_id] = RunState(RUN_CANCELLED, "terminated")

    @staticmethod
    def _run(run_key: str, number: int) -> LaunchedRun:
        return LaunchedRun(run_id=f"run-{number}", url=f"https://pipelines.example/runs/{number}")


@dataclass
class RecordingNotifier:
    messages: list[tuple[bytes, Mapping[str, str]]] = field(default_factory=list)
    failures: list[Exception] = field(default_factory=list)

    def publish(self, data: bytes, attributes: Mapping[str, str]) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.messages.append((data, dict(attributes)))

    @property
    def states(self) -> list[str]:
        return [attributes["state"] for _, attributes in self.messages]
