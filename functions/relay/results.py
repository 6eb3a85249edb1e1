"""Writing and publishing records, shared by the functions, the local runner and the pipelines' exit steps."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress
from typing import Any

from relay import chains, naming, queue, records
from relay.errors import BlobNotFoundError, PreconditionFailedError
from relay.ports import FAILURE_USER, BlobStore, Notifier


def record_result(
    store: BlobStore,
    notifier: Notifier | None,
    results_uri: str,
    record: Mapping[str, Any],
    launch: Mapping[str, Any] | None = None,
) -> bool:
    """Write `runs/<run_key>/result.json` unless one exists, give back the slots the run held under its caps
    (`launch`, its launch record, is read when not given), then publish it; False if one existed.

    An end a step of the run's chain follows first leaves `chain.json` beside it (relay.chain_runs starts the next
    runs from it), so a crash between the two leaves the marker, never the end without one.

    A failed end first leaves `retry.json` beside it, so the reconciler decides on a retry whoever recorded the
    end (a crash between the two leaves the marker, never the end without one); the decision is the policy's."""
    uri = naming.result_record(results_uri, str(record["run_key"]))
    if launch is None:
        launch = _launch_of(store, results_uri, str(record["run_key"]))
    if launch is not None and chains.following(
        chains.steps_of(launch), str(launch.get("pipeline")), str(record.get("state")), chains.depth_of(launch)
    ):
        # Before the end, as for retries: whoever recorded it, the next runs are started from this marker.
        with suppress(PreconditionFailedError):
            marker = {"run_key": record["run_key"], "state": record["state"]}
            store.write(
                naming.chain_record(results_uri, str(record["run_key"])), records.encode(marker), if_generation_match=0
            )
    if record.get("state") == records.FAILED:
        marker = {"run_key": record["run_key"], "failure": record.get("failure") or FAILURE_USER}
        # Create-only: one left by an earlier try to record this end stands.
        with suppress(PreconditionFailedError):
            store.write(
                naming.retry_record(results_uri, str(record["run_key"])), records.encode(marker), if_generation_match=0
            )
    try:
        store.write(uri, records.encode(record), if_generation_match=0)
    except PreconditionFailedError:
        return False
    if launch is not None:
        queue.release(store, queue.held_by(launch))
    publish_record(notifier, record)
    return True


def _launch_of(store: BlobStore, results_uri: str, run_key: str) -> Mapping[str, Any] | None:
    try:
        return records.decode(store.read(naming.launch_record(results_uri, run_key)).data)
    except (BlobNotFoundError, ValueError):
        return None


def publish_record(notifier: Notifier | None, record: Mapping[str, Any]) -> None:
    """Publish a record with the attributes subscribers filter on."""
    if notifier is None:
        return
    attributes = {
        "run_key": str(record.get("run_key")),
        "pipeline": str(record.get("pipeline") or ""),
        "state": str(record.get("state")),
    }
    notifier.publish(records.encode(record), attributes)
