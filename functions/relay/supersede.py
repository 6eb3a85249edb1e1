"""At a cap whose policy says `at_cap: supersede`: a newer generation of an object takes the place of the run of
an older one.

Each such object (bucket and name) has one pointer under the results, `supersede/<digest>.json`: the generation
whose run stands, and the run it replaced. A delivery of a newer generation moves the pointer, generation-matched
(of deliveries at once one moves it; a redelivery finds it moved by itself), then stops the older run: dropped from
the queue (the newer takes its place there), cancelled on its backend as `relay cancel` does, or, not claimed yet,
closed with a cancelled launch record its own delivery then finds. Each is recorded `cancelled` with
`superseded_by` naming the newer run. An older generation arriving after a newer one finds the pointer past it and
is dropped, as a stale event is: it never supersedes the newer.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from relay import naming, queue, records
from relay.errors import BlobNotFoundError, ClaimHeldError, PreconditionFailedError
from relay.ports import BlobStore, Notifier, PipelineBackend
from relay.results import record_result

SUPERSEDED = "superseded"  # the code of an older generation's delivery dropped after a newer one
BY = "relay supersede"


def pointer_uri(results_uri: str, bucket: str, name: str) -> str:
    digest = hashlib.sha256(f"{bucket}\n{name}".encode()).hexdigest()[:32]
    return naming.join(results_uri, "supersede", f"{digest}.json")


@dataclass(frozen=True)
class Standing:
    """What the pointer says after this delivery's look: `newer`, the run of a newer generation that stands (this
    delivery is older: drop it), else `replaced`, the run of an older generation this one replaces ("" : none)."""

    newer: str = ""
    replaced: str = ""


def newer_than(store: BlobStore, results_uri: str, bucket: str, name: str, generation: int) -> str:
    """The run of a generation of the object newer than `generation` that stands ("" : none)."""
    try:
        current = records.decode(store.read(pointer_uri(results_uri, bucket, name)).data)
    except BlobNotFoundError:
        return ""
    return str(current.get("run_key")) if int(current.get("generation") or 0) > generation else ""


def take(store: BlobStore, results_uri: str, bucket: str, name: str, generation: int, run_key: str) -> Standing:
    """Move the object's pointer to `generation` and its run `run_key`, unless a newer generation holds it."""
    uri = pointer_uri(results_uri, bucket, name)
    while True:
        try:
            blob = store.read(uri)
        except BlobNotFoundError:
            mine = {"bucket": bucket, "name": name, "generation": generation, "run_key": run_key, "replaces": ""}
            with contextlib.suppress(PreconditionFailedError):
                store.write(uri, records.encode(mine), if_generation_match=0)
                return Standing()
            continue  # another delivery made it first: look again
        current = records.decode(blob.data)
        standing = int(current.get("generation") or 0)
        if standing > generation:
            return Standing(newer=str(current.get("run_key")))
        if standing == generation:
            return Standing(replaced=str(current.get("replaces") or ""))
        moved = {**current, "generation": generation, "run_key": run_key, "replaces": current.get("run_key")}
        with contextlib.suppress(PreconditionFailedError):
            store.write(uri, records.encode(moved), if_generation_match=blob.generation)
            return Standing(replaced=str(current.get("run_key") or ""))


def stop(
    store: BlobStore,
    backend: PipelineBackend,
    notifier: Notifier | None,
    results_uri: str,
    older: str,
    newer: str,
    now: Callable[[], datetime],
    lease: float,
) -> str:
    """Stop run `older`, superseded by run `newer`, and record it so; the queue place it held ("" : none).
    Idempotent: a run already ended (superseded or not) is left as it is. ClaimHeldError while the older run is
    being launched, or being stopped by another delivery (for at most `lease` seconds): the newer's redelivery
    supersedes it then."""
    uri = naming.launch_record(results_uri, older)
    message = f"superseded by {newer}, the run of a newer generation of the same object"
    while True:
        try:
            blob = store.read(uri)
        except BlobNotFoundError:
            # Not claimed yet: closed now, so that its own delivery finds it ended and launches nothing.
            closed = {"run_key": older, "state": records.CANCELLED, "message": message, "superseded_by": newer}
            with contextlib.suppress(PreconditionFailedError):
                store.write(uri, records.encode(closed), if_generation_match=0)
                _record(store, notifier, results_uri, closed, message, newer, now)
                return ""
            continue
        launch = records.decode(blob.data)
        if _ended(store, results_uri, older):
            return ""
        state = launch.get("state")
        if state == records.LAUNCHING:
            raise ClaimHeldError(f"{older} is being launched; {newer} supersedes it once it is")
        held = launch.get("superseding_until")
        if launch.get("superseded_by") and held and now() < records.parse_timestamp(str(held)):
            raise ClaimHeldError(f"{older} is being superseded by another delivery until {held}")
        # Marked first, generation-matched and with a lease: of deliveries at once one stops it; if that one dies
        # before the record, the lease runs out and a redelivery takes over.
        until = records.timestamp(now() + timedelta(seconds=lease))
        marked = {**launch, "superseded_by": newer, "superseding_until": until}
        if state == records.QUEUED:
            marked = {**marked, "state": records.CANCELLED, "message": message}
        try:
            store.write(uri, records.encode(marked), if_generation_match=blob.generation)
        except PreconditionFailedError:
            continue  # a drain claimed it, or another delivery marked it: look again
        if state == records.QUEUED:
            _record(store, notifier, results_uri, marked, message, newer, now)
            place = str(launch.get("place") or "")
            with contextlib.suppress(BlobNotFoundError):
                queue.remove_entry(store, results_uri, str(launch.get("tenant") or ""), place)
            return place
        if state in (records.LAUNCHED, records.RUNNING) and launch.get("backend") == backend.name:
            state_now = backend.run_state(older, str(launch["run_id"]))
            if not state_now.terminal:
                backend.terminate(older, str(launch["run_id"]))
            _record(store, notifier, results_uri, marked, message, newer, now)
        return ""


def _ended(store: BlobStore, results_uri: str, run_key: str) -> bool:
    try:
        store.read(naming.result_record(results_uri, run_key))
    except BlobNotFoundError:
        return False
    return True


def _record(
    store: BlobStore,
    notifier: Notifier | None,
    results_uri: str,
    launch: Mapping[str, Any],
    message: str,
    newer: str,
    now: Callable[[], datetime],
) -> None:
    ended = records.ended_record(
        launch=launch, state=records.CANCELLED, message=message, started=None, finished=now(), recorded_by=BY
    )
    record_result(store, notifier, results_uri, {**ended, "superseded_by": newer}, launch)


def settle(store: BlobStore, results_uri: str, bucket: str, name: str, generation: int) -> None:
    """The older run is stopped: the pointer need not name it any more (a failed write leaves a harmless look)."""
    uri = pointer_uri(results_uri, bucket, name)
    with contextlib.suppress(BlobNotFoundError, PreconditionFailedError):
        blob = store.read(uri)
        current = records.decode(blob.data)
        if int(current.get("generation") or 0) == generation and current.get("replaces"):
            store.write(uri, records.encode({**current, "replaces": ""}), if_generation_match=blob.generation)
