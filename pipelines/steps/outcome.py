"""Where a step's result ends up inside a pipeline: `runs/<run_key>/result.json`, published when configured."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from pipelines.steps.contract import StepResult
from relay import records
from relay.config import Settings
from relay.results import record_result
from relay.runtime import notifier_for, results_store


def record_step_result(
    *,
    pipeline: str,
    run_key: str,
    results_uri: str,
    run_id: str,
    result: StepResult,
    started: datetime,
    finished: datetime,
) -> bool:
    """Write the run's result record (once) and publish it; False when one was there already."""
    record = records.result_record(
        run_key=run_key,
        pipeline=pipeline,
        backend=os.environ.get("RELAY_BACKEND", ""),
        run_id=run_id,
        succeeded=result.succeeded,
        message=result.message,
        outputs=result.outputs,
        metrics=result.metrics,
        status=result.status,
        started=started,
        finished=finished,
    )
    # The task inherits RELAY_LOCAL_ROOT and RELAY_NOTIFY_TOPIC from its runner's environment, when set.
    store = results_store(results_uri, os.environ.get("RELAY_LOCAL_ROOT", Settings.local_root))
    return record_result(store, notifier_for(os.environ.get("RELAY_NOTIFY_TOPIC", "")), results_uri, record)


def record_final_status(*, pipeline: str, run_key: str, results_uri: str, state: str, error: str, job: str) -> bool:
    """The exit handler's part: a result record for a run whose step could not write its own (killed, crashed)."""
    if not run_key or not results_uri:
        return False
    now = datetime.now(UTC)
    succeeded = state == "SUCCEEDED"
    message = f"the {pipeline} pipeline ended {state}" + (f": {error}" if error else "")
    result = StepResult(message=message, status=200 if succeeded else 500)
    return record_step_result(
        pipeline=pipeline,
        run_key=run_key,
        results_uri=results_uri,
        run_id=job,
        result=result,
        started=now,
        finished=now,
    )
