"""The one hook of the audit trail: a BlobStore that appends an entry (relay.audit) for every write and delete of
a ledger record, whoever makes it and whatever the record, so a new kind of record is audited without a line of
its own.

An entry is numbered and linked at once, in the order of the changes, under one lock (so the sequence is
contemporaneous), and waits in this process's buffer; a thread of its own writes the buffer as one create-only
batch of consecutive entries when it holds BATCH entries or its oldest is AGE old, and `flush_audit` writes it at
once (a reconcile tick before it seals; the process's exit). So the event's response waits for no entry: on the
bench, two requests per warm launch became about one per batch. What a crash loses is the buffer: its records
then have no entry, which the tick and `relay audit verify` find (relay.audit_trail).

A write that was refused (a lost create-only claim, a generation that moved) never happened: its entry is
followed by a void entry naming it. A write whose outcome is unknown (a timeout) keeps its entry: if it landed,
the entry matches the record; if not, the caller's retry writes the record again with an entry of its own, which
is the one the record must match.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from relay import audit
from relay.errors import BlobNotFoundError, PreconditionFailedError, TransientError
from relay.ports import Blob, BlobInfo, BlobStore

BATCH = 64  # entries in one batch at most: a burst's entries cost one request per BATCH
AGE = 0.05  # seconds the oldest entry waits for others before its batch is written (CPU permitting)
_ATTEMPTS = 3  # a batch's create after a transient failure: create-only, so a landed first try shows as ours
_AFTER_FAILURE = 1.0  # seconds before a batch that could not be written is tried again
log = logging.getLogger(__name__)
T = TypeVar("T")


class AuditedStore:
    def __init__(
        self,
        inner: BlobStore,
        results_uri: str,
        audit_uri: str,
        who: str,
        *,
        watched: tuple[str, ...] = (),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        age: float = AGE,
        batch: int = BATCH,
    ) -> None:
        self._inner = inner
        self._results = results_uri
        self._audit = audit_uri
        self._watched = frozenset(watched)  # reads Relay acts on (the policy): each version seen is recorded once
        self._seen: set[tuple[str, int]] = set()
        self._clock = clock
        self._age = age
        self._batch = batch
        self._in_flight = 0  # batches the flusher took and has not written yet
        self._chain = audit.Chain(audit.new_segment(clock()), who)
        self._buffer: list[audit.Entry] = []
        # Batches a write failed, tried again as they were: the same name, so that a first try that landed after
        # all (a timeout) is found as ours, not written twice under two names.
        self._unwritten: list[Sequence[audit.Entry]] = []
        self._since = 0.0  # when the oldest buffered entry was made (monotonic)
        self._ready = threading.Condition()  # the buffer, the versions seen, the flusher
        self._flusher: threading.Thread | None = None

    def read(self, uri: str, *, generation: int | None = None) -> Blob:
        blob = self._inner.read(uri, generation=generation)
        if uri in self._watched:
            with self._ready:
                if (uri, blob.generation) not in self._seen:
                    self._seen.add((uri, blob.generation))
                    self._enter(audit.SEEN, uri, digest=audit.digest(blob.data))
        return blob

    def stat(self, uri: str, *, generation: int | None = None) -> BlobInfo:
        return self._inner.stat(uri, generation=generation)

    def list(self, prefix: str) -> Iterator[str]:
        return self._inner.list(prefix)

    def write(self, uri: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        name = audit.ledger_name(self._results, uri)
        if name is None:
            return self._inner.write(uri, data, if_generation_match=if_generation_match)
        with self._ready:
            entry = self._enter(
                audit.WRITE,
                name,
                digest=audit.digest(data),
                state=audit.state_of(data) if uri.endswith(".json") else None,
                precondition=if_generation_match,
            )
        return self._voided(entry, lambda: self._inner.write(uri, data, if_generation_match=if_generation_match))

    def delete(self, uri: str, *, if_generation_match: int | None = None) -> None:
        name = audit.ledger_name(self._results, uri)
        if name is None:
            self._inner.delete(uri, if_generation_match=if_generation_match)
            return
        with self._ready:
            entry = self._enter(audit.DELETE, name, precondition=if_generation_match)
        self._voided(entry, lambda: self._inner.delete(uri, if_generation_match=if_generation_match))

    def flush_audit(self) -> None:
        """Write every buffered entry now (a tick before it seals, the process's exit: a daemon thread's batch would
        die with it). The flusher's batch in flight is waited for first: one it could not write is then among the
        unwritten, written here as it was. A batch this cannot write stays unwritten, with those after it, for the
        next flush or the flusher's next try, and its error is raised."""
        with self._ready:
            self._ready.wait_for(lambda: self._in_flight == 0)
            buffered, self._buffer = self._buffer, []
            batches = [*self._unwritten, *(buffered[i : i + self._batch] for i in range(0, len(buffered), self._batch))]
            self._unwritten = []
        for n, batch in enumerate(batches):
            try:
                self._put(batch)
            except audit.AuditError:  # its name taken by another: trying again cannot help; verify names the gap
                log.exception("audit batch not written")
            except Exception:
                with self._ready:
                    self._unwritten[:0] = batches[n:]
                raise

    def _voided(self, entry: audit.Entry, change: Callable[[], T]) -> T:
        try:
            return change()
        except (PreconditionFailedError, BlobNotFoundError):
            with self._ready:
                self._enter(audit.VOID, entry.object, voids=entry.seq)
            raise

    def _enter(self, op: str, name: str, **facts: Any) -> audit.Entry:
        """Number, link and buffer an entry; the caller holds `_ready`, so the buffer is in the chain's order."""
        entry = self._chain.append(self._clock(), op, name, **facts)
        self._buffer.append(entry)
        if len(self._buffer) == 1:
            self._since = time.monotonic()
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_when_due, name="relay-audit", daemon=True)
            self._flusher.start()
            atexit.register(self.flush_audit)
        if len(self._buffer) in (1, self._batch):
            self._ready.notify_all()
        return entry

    def _flush_when_due(self) -> None:
        while True:
            with self._ready:
                while not self._unwritten and (
                    not self._buffer
                    or (len(self._buffer) < self._batch and (left := self._since + self._age - time.monotonic()) > 0)
                ):
                    self._ready.wait(None if not self._buffer else left)
                if self._unwritten:
                    batch = self._unwritten.pop(0)
                else:
                    batch, self._buffer = self._buffer[: self._batch], self._buffer[self._batch :]
                    self._since = time.monotonic()
                self._in_flight += 1
            failed = False
            try:
                self._put(batch)
            except audit.AuditError:  # its name taken by another: trying again cannot help; verify names the gap
                log.exception("audit batch not written")
            except Exception:  # kept for the next try: a gap in the segment would read as entries removed
                log.exception("audit batch not written; tried again")
                failed = True
            finally:
                # Kept before it is no longer in flight, so that a flush waiting for it writes it.
                with self._ready:
                    if failed:
                        self._unwritten.insert(0, batch)
                    self._in_flight -= 1
                    self._ready.notify_all()
            if failed:
                time.sleep(_AFTER_FAILURE)

    def _put(self, batch: Sequence[audit.Entry]) -> None:
        first, last = batch[0], batch[-1]
        uri = audit.batch_uri(self._audit, first.at[:10], first.segment, first.seq, last.seq)
        data = audit.encode_batch(batch)
        for attempt in range(_ATTEMPTS):
            try:
                self._inner.write(uri, data, if_generation_match=0)
                return
            except PreconditionFailedError:
                # A retried create whose first try landed finds our own bytes; anything else is not ours.
                if self._inner.read(uri).data == data:
                    return
                raise audit.AuditError(
                    f"{uri}: expected to create audit entries {first.seq}-{last.seq}, found another there"
                ) from None
            except TransientError:
                if attempt == _ATTEMPTS - 1:
                    raise
