"""A results location with a realistic mix of records for the runs board: two tenants' runs in every state, queued
runs, rejections (one with a hostile reason), an absence, and a rejection older than its tenant field."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from relay import naming, queue, records
from relay.errors import InvalidTriggerError, Problem
from relay.ports import BlobStore

HOSTILE = '</td></tr></table><script>alert("board")</script><img src=x onerror=alert(1)>'
TENANTS = ("assay", "imaging")
# Per tenant: how many runs end in each state (queued ones wait in the queue too).
MIX: dict[str, dict[str, int]] = {
    "assay": {"queued": 2, "launched": 1, "running": 3, "succeeded": 14, "failed": 2, "cancelled": 1, "rejected": 3},
    "imaging": {"running": 1, "succeeded": 6, "failed": 1, "skipped": 2, "rejected": 1},
}


def seed(store: BlobStore, results: str, now: datetime) -> dict[str, list[str]]:
    """Write the mix's records under `results`, each run a minute older than the last; its run keys by tenant."""
    keys: dict[str, list[str]] = {}
    age = 0
    for tenant, states in MIX.items():
        for state, count in states.items():
            for n in range(count):
                age += 1
                key = f"{tenant}-{state}-{n}-5f0c2a9be41d7733c6a8e1f0"
                _write(store, results, tenant, state, key, now - timedelta(minutes=age))
                keys.setdefault(tenant, []).append(key)
    # Written before rejections named their tenant: the operator's board only.
    legacy = _rejection("legacy-0", "assay", now - timedelta(days=2), "old")
    legacy.pop("tenant")
    store.write(naming.rejection_record(results, "legacy-0"), records.encode(legacy))
    absence = {
        "tenant": "imaging",  # what it says is not what decides: the folder does
        "message": f"nothing arrived under gs://plates/nightly/ by 06:00 UTC {HOSTILE}",
        "recorded_at": records.timestamp(now - timedelta(hours=3)),
    }
    store.write(naming.join(results, "absences", "assay", "nightly-plates", "2026-11-21.json"), records.encode(absence))
    return keys


def _write(store: BlobStore, results: str, tenant: str, state: str, key: str, at: datetime) -> None:
    if state == "rejected":
        store.write(naming.rejection_record(results, key), records.encode(_rejection(key, tenant, at, key)))
        return
    trigger = {"uri": f"gs://triggers/{tenant}/{key}.json", "event_id": key}
    if state == "skipped":
        skip = records.skip_record(
            run_key=key, tenant=tenant, pipeline=None, trigger=trigger, code="not_a_trigger",
            message="not a trigger file: the name does not end in .json, .yaml or .yml", now=at,
        )  # fmt: skip
        store.write(naming.skip_record(results, key), records.encode(skip))
        return
    claim = records.claim_record(
        run_key=key, pipeline="plate-qc", backend="vertex", trigger=trigger, parameters={"plate": key},
        labels={}, now=at, lease_seconds=600, tenant=tenant,
    )  # fmt: skip
    launch: dict[str, Any]
    if state == "queued":
        place = queue.place_for(at, key)
        launch = records.queued_record(claim, place=place, reason="assay holds 4 of 4 runs in flight", now=at)
        queue.add_entry(store, results, tenant, place)
    else:
        launch = records.launched_record(claim, run_id=f"run-{key}", run_url="", now=at)
        if state == "running":
            launch["state"] = records.RUNNING
    store.write(naming.launch_record(results, key), records.encode(launch))
    if state in records.ENDED:
        ended = records.ended_record(
            launch=launch, state=state, message=f"{state} on vertex", started=at, finished=at + timedelta(minutes=9),
            recorded_by="reconcile",
        )  # fmt: skip
        store.write(naming.result_record(results, key), records.encode(ended))


def _rejection(key: str, tenant: str, at: datetime, found: str) -> dict[str, Any]:
    hostile = key.startswith(f"{tenant}-rejected-0-")  # each tenant's first rejection
    problems = [Problem("parameters.plate", "a plate id like P-0001", HOSTILE if hostile else found)]
    if key.startswith("imaging"):
        problems.append(Problem("pipeline", "a pipeline of the catalog", "plate-qc-v9"))
    error = InvalidTriggerError(f"gs://triggers/{tenant}/{key}.json", problems)
    trigger = {"uri": f"gs://triggers/{tenant}/{key}.json", "event_id": key}
    return records.rejection_record(
        run_key=key, pipeline="plate-qc", trigger=trigger, error=error, now=at, tenant=tenant
    )
