"""The one hook of the audit trail: a BlobStore that appends an entry (relay.audit) for every write and delete of
a ledger record, whoever makes it and whatever the record, so a new kind of record is audited without a line of
its own.

The entry is written at the same time as the record (a second request on the pool, not a second round trip after
the first) and the write returns once both landed. A write that was refused (a lost create-only claim, a
generation that moved) never happened: its entry is followed by a void entry naming it. A write whose outcome is
unknown (a timeout) keeps its entry: if it landed, the entry matches the record; if not, the caller's retry writes
the record again with an entry of its own, which is the one the record must match.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TypeVar

from relay import audit
from relay.errors import BlobNotFoundError, PreconditionFailedError, TransientError
from relay.ports import Blob, BlobInfo, BlobStore

_ATTEMPTS = 3  # an entry's create after a transient failure: create-only, so a landed first try shows as ours
_WORKERS = 4
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
    ) -> None:
        self._inner = inner
        self._results = results_uri
        self._audit = audit_uri
        self._watched = frozenset(watched)  # reads Relay acts on (the policy): each version seen is recorded once
        self._seen: set[tuple[str, int]] = set()
        self._clock = clock
        self._chain = audit.Chain(audit.new_segment(clock()), who)
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future[None]] = []
        self._lock = threading.Lock()  # the pool, the pending reads' entries and the versions seen

    def read(self, uri: str, *, generation: int | None = None) -> Blob:
        blob = self._inner.read(uri, generation=generation)
        if uri in self._watched:
            with self._lock:
                first = (uri, blob.generation) not in self._seen
                self._seen.add((uri, blob.generation))
            if first:
                entry = self._chain.append(self._clock(), audit.SEEN, uri, digest=audit.digest(blob.data))
                # Nothing waits on a read's entry: the next write of this process waits for it (the writes are
                # what the policy decided).
                landing = self._submit(entry)
                with self._lock:
                    self._pending.append(landing)
        return blob

    def stat(self, uri: str, *, generation: int | None = None) -> BlobInfo:
        return self._inner.stat(uri, generation=generation)

    def list(self, prefix: str) -> Iterator[str]:
        return self._inner.list(prefix)

    def write(self, uri: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        name = audit.ledger_name(self._results, uri)
        if name is None:
            return self._inner.write(uri, data, if_generation_match=if_generation_match)
        entry = self._chain.append(
            self._clock(),
            audit.WRITE,
            name,
            digest=audit.digest(data),
            state=audit.state_of(data) if uri.endswith(".json") else None,
            precondition=if_generation_match,
        )
        return self._beside(entry, lambda: self._inner.write(uri, data, if_generation_match=if_generation_match))

    def delete(self, uri: str, *, if_generation_match: int | None = None) -> None:
        name = audit.ledger_name(self._results, uri)
        if name is None:
            self._inner.delete(uri, if_generation_match=if_generation_match)
            return
        entry = self._chain.append(self._clock(), audit.DELETE, name, precondition=if_generation_match)
        self._beside(entry, lambda: self._inner.delete(uri, if_generation_match=if_generation_match))

    def _beside(self, entry: audit.Entry, change: Callable[[], T]) -> T:
        landing = self._submit(entry)
        try:
            result = change()
        except (PreconditionFailedError, BlobNotFoundError):
            self._settle(landing)
            void = self._chain.append(self._clock(), audit.VOID, entry.object, voids=entry.seq)
            self._put(void)
            raise
        except BaseException:
            self._settle(landing)  # the change may have landed: its entry must have too
            raise
        self._settle(landing)
        return result

    def _settle(self, landing: Future[None]) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for future in (*pending, landing):
            future.result()

    def _submit(self, entry: audit.Entry) -> Future[None]:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(_WORKERS, thread_name_prefix="relay-audit")
            return self._pool.submit(self._put, entry)

    def _put(self, entry: audit.Entry) -> None:
        uri = audit.entry_uri(self._audit, entry)
        data = entry.encode()
        for attempt in range(_ATTEMPTS):
            try:
                self._inner.write(uri, data, if_generation_match=0)
                return
            except PreconditionFailedError:
                # A retried create whose first try landed finds our own bytes; anything else is not ours.
                if self._inner.read(uri).data == data:
                    return
                raise audit.AuditError(
                    f"{uri}: expected to create audit entry {entry.seq}, found another there"
                ) from None
            except TransientError:
                if attempt == _ATTEMPTS - 1:
                    raise
