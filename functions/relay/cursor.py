"""Where the reconcile ticks keep their place: the run key the last tick got through, and a time before which the
backend asked not to be called. One small record per backend under the results location, written
generation-matched, so two ticks at once never interleave their saves (the one that read an older cursor loses,
and the winner's place stands)."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from relay import records
from relay.errors import BlobNotFoundError, PreconditionFailedError
from relay.ports import BlobStore


@dataclass(frozen=True)
class Cursor:
    """`after`: the last run key a tick got through ("" : start at the first); `not_before`: no backend call
    before then; `generation`: the record's, for the conditional save (0: none saved yet)."""

    after: str = ""
    not_before: datetime | None = None
    generation: int = 0


def read_cursor(store: BlobStore, uri: str) -> Cursor:
    """The saved cursor; none saved, or one that cannot be read, starts at the first run key (and is overwritten)."""
    try:
        blob = store.read(uri)
    except BlobNotFoundError:
        return Cursor()
    try:
        saved = records.decode(blob.data)
        after = saved.get("after") or ""
        not_before = saved.get("not_before")
        if not isinstance(after, str) or not (not_before is None or isinstance(not_before, str)):
            raise ValueError("expected text in after and not_before")
        return Cursor(after, records.parse_timestamp(not_before) if not_before else None, blob.generation)
    except ValueError:  # json.JSONDecodeError and a bad timestamp are ValueErrors too
        return Cursor(generation=blob.generation)


def save_cursor(store: BlobStore, uri: str, read: Cursor, saved: Cursor, *, now: datetime, note: str = "") -> bool:
    """Save `saved` if the record is still the one `read` came from; False when another tick saved meanwhile (its
    place stands: it started where this one did). Nothing is written when nothing changed."""
    if (saved.after, saved.not_before) == (read.after, read.not_before):
        return True
    document = {
        "after": saved.after,
        "not_before": records.timestamp(saved.not_before) if saved.not_before else None,
        "saved_at": records.timestamp(now),
        "note": note,
    }
    try:
        store.write(uri, records.encode(document), if_generation_match=read.generation)
    except PreconditionFailedError:
        return False
    return True


def rotated(keys: Iterable[str], after: str) -> list[str]:
    """The keys in order, starting past `after` and wrapping around: each key comes once, the ones a tick did not
    reach last time first."""
    ordered = sorted(keys)
    start = bisect.bisect_right(ordered, after) if after else 0
    return ordered[start:] + ordered[:start]
