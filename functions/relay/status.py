"""Reading a run's records back: by run key, by trigger URI, or the most recent ones."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from relay import naming, records
from relay.errors import BlobNotFoundError
from relay.ports import BlobStore
from relay.service import parse_document, run_key_for
from relay.triggers import format_for


@dataclass(frozen=True)
class RunRecords:
    """What the results location holds for one run key."""

    run_key: str
    uris: Mapping[str, str]  # record name (launch, result, rejected, skipped) -> URI, for those that exist
    launch: Mapping[str, Any] | None = None
    result: Mapping[str, Any] | None = None
    rejection: Mapping[str, Any] | None = None
    skip: Mapping[str, Any] | None = None  # a delivery that never became a run
    retry: Mapping[str, Any] | None = None  # a failed run's retry, decided or not yet (relay.lifecycle.retry)
    incomplete: Mapping[str, Any] | None = None  # a set its deadline closed before it was complete (relay.sets)
    chain: Mapping[str, Any] | None = None  # an ended run whose chain's next runs wait to start (relay.chain_runs)
    chained: Mapping[str, Any] | None = None  # what an ended run's chain started after it, once settled

    @property
    def chained_from(self) -> str:
        """The run whose end started this one through a chain ("" : none)."""
        return str(((self.launch or self.rejection or {}).get("trigger") or {}).get("chained_from") or "")

    @property
    def chained_to(self) -> list[str]:
        """The runs this one's chain started (or refused), as `<run key> (<what became of it>)`; a line saying
        they wait while the marker is there."""
        if self.chained is not None:
            return [f"{link.get('run_key')} ({link.get('outcome')})" for link in self.chained.get("chained") or []]
        return ["its next runs start at the next reconcile tick"] if self.chain is not None else []

    @property
    def latest(self) -> Mapping[str, Any]:
        return self.result or self.rejection or self.launch or self.skip or self.incomplete or {}

    @property
    def state(self) -> str:
        return str(self.latest.get("state", "unknown"))

    @property
    def pipeline(self) -> str:
        return str(self.latest.get("pipeline") or (self.launch or {}).get("pipeline") or "")

    @property
    def status(self) -> int | None:
        value = self.latest.get("status")
        return int(value) if isinstance(value, int) else None

    @property
    def message(self) -> str:
        return str(self.latest.get("message", ""))

    @property
    def trigger_uri(self) -> str:
        trigger = (self.launch or self.rejection or self.skip or self.incomplete or {}).get("trigger") or {}
        return str(trigger.get("uri", ""))

    @property
    def retry_note(self) -> str:
        """The retry this failed run waits for, in a few words; "" when there is none (any more)."""
        if self.retry is None:
            return ""
        if not self.retry.get("retry_at"):
            return "retry: the next reconcile tick decides"
        return f"retry as {self.retry.get('next_attempt')} at {self.retry.get('retry_at')}"

    @property
    def since(self) -> str:
        """When the run began, as recorded (claimed, rejected or skipped)."""
        first = self.launch or self.rejection or self.skip or self.incomplete or {}
        when = first.get("claimed_at") or first.get("rejected_at") or first.get("skipped_at")
        return str(when or first.get("incomplete_at") or "")


def record_uris(results_uri: str, run_key: str) -> dict[str, str]:
    """Every record a run key may have, by name (a retry.json only while its retry waits, a chain.json only while
    its chain's next runs do)."""
    return {
        "launch": naming.launch_record(results_uri, run_key),
        "result": naming.result_record(results_uri, run_key),
        "rejected": naming.rejection_record(results_uri, run_key),
        "skipped": naming.skip_record(results_uri, run_key),
        "retry": naming.retry_record(results_uri, run_key),
        "incomplete": naming.incomplete_record(results_uri, run_key),
        "chain": naming.chain_record(results_uri, run_key),
        "chained": naming.chained_record(results_uri, run_key),
    }


def read_run(store: BlobStore, results_uri: str, run_key: str) -> RunRecords | None:
    return _read_records(store, run_key, record_uris(results_uri, run_key))


def _read_records(store: BlobStore, run_key: str, uris: Mapping[str, str]) -> RunRecords | None:
    found = {name: record for name, uri in uris.items() if (record := _read(store, uri)) is not None}
    if not found:
        return None
    return RunRecords(
        run_key=run_key,
        uris={name: uris[name] for name in found},
        launch=found.get("launch"),
        result=found.get("result"),
        rejection=found.get("rejected"),
        skip=found.get("skipped"),
        retry=found.get("retry"),
        incomplete=found.get("incomplete"),
        chain=found.get("chain"),
        chained=found.get("chained"),
    )


def run_key_for_object(store: BlobStore, uri: str, generation: int | None = None) -> str:
    """The run key Relay gives the trigger file at `uri` (its current generation unless one is given)."""
    blob = store.read(uri, generation=generation)
    bucket, name = naming.split_gs_uri(uri)
    identity = naming.object_identity(bucket, name, blob.generation)
    return run_key_for(parse_document(blob.data, format_for(name) or "json", uri), identity)


def recent_runs(store: BlobStore, results_uri: str, limit: int = 20) -> list[RunRecords]:
    """The most recent runs, rejections and skips, newest first. Only the records the listing shows are read: most
    keys have one or two of the four."""
    by_key: dict[str, dict[str, str]] = {}
    for key, name, uri in _record_names(store, results_uri):
        by_key.setdefault(key, {})[name] = uri
    runs = [run for key, uris in by_key.items() if (run := _read_records(store, key, uris)) is not None]
    return sorted(runs, key=lambda run: run.since, reverse=True)[:limit]


def _record_names(store: BlobStore, results_uri: str) -> Iterator[tuple[str, str, str]]:
    """(run key, record name, URI) for each record listed: what read_run would find, without asking for the rest."""
    runs = naming.runs_folder(results_uri)
    for uri in store.list(runs):
        key, file = naming.listed_run_record(runs, uri)
        if file in (naming.LAUNCH, naming.RESULT, naming.SKIPPED, naming.RETRY, naming.INCOMPLETE):
            yield key, file.removesuffix(".json"), uri
    rejected = naming.join(results_uri, "rejected") + "/"
    for uri in store.list(rejected):
        key = uri[len(rejected) :].removesuffix(".json")
        yield key, "rejected", uri


def _read(store: BlobStore, uri: str) -> dict[str, Any] | None:
    try:
        return records.decode(store.read(uri).data)
    except BlobNotFoundError:
        return None
