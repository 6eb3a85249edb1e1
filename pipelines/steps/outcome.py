"""Where a step's result ends up inside a pipeline, always under the deployment's results location: a launched
run's at `runs/<run_key>/result.json` (published when configured), an operator's direct run's at
`direct/<run_id>.json`, and a refusal at `refused/<run_key>/<run_id>.json`, where it can never take the name a
real run records its result at."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pipelines.steps.contract import StepResult
from pipelines.steps.errors import StepError
from pipelines.steps.gate import task_launch
from pipelines.steps.launch import Launch, launch_records
from relay import logs, naming, records
from relay.adapters.factory import notifier_for
from relay.adapters.stores import results_store
from relay.config import Settings, setting
from relay.errors import PreconditionFailedError
from relay.ports import BlobStore
from relay.results import record_result
from relay.trace import Trace

log = logging.getLogger("relay.step")
REFUSED = "refused"  # a refusal record's state: the run did nothing


def record_step_result(
    *,
    pipeline: str,
    launch: Launch,
    run_id: str,
    result: StepResult,
    started: datetime,
    finished: datetime,
    span: Trace | None = None,
) -> bool:
    """Write the run's result record (once) and publish it; False when one was there already. `span`: the step's
    span of the run's trace (relay.trace), kept in the record."""
    record = _record(pipeline, launch.run_key, run_id, result, started, finished, span)
    logs.configure()  # the run's `ended` line, as JSON on the step's output, where Cloud Logging reads it
    store = _store(launch.results_uri)
    if launch.direct:
        return _create(store, naming.direct_result(launch.results_uri, run_id), record)
    # The task inherits RELAY_NOTIFY_TOPIC from its runner's environment, when set.
    return record_result(store, notifier_for(setting(os.environ, "NOTIFY_TOPIC")), launch.results_uri, record)


def record_refusal(
    *,
    pipeline: str,
    parameters: Mapping[str, Any],
    run_id: str,
    result: StepResult,
    started: datetime,
    environ: Mapping[str, str],
) -> bool:
    """Log a refused run and record it (once) under the deployment's results location, if it names one."""
    run_key = str(parameters.get("run_key") or "")
    log.warning("refused %s run %r (run id %s): %s", pipeline, run_key, run_id, result.message)
    results_uri = launch_records(environ).results_uri
    if not results_uri:
        return False
    record = {**_record(pipeline, run_key, run_id, result, started, datetime.now(UTC)), "state": REFUSED}
    return _create(_store(results_uri), naming.refusal_record(results_uri, run_key, run_id), record)


def record_final_status(
    *, pipeline: str, parameters: Mapping[str, Any], run_id: str, state: str, error: str, job: str
) -> bool:
    """The exit handler's part: a result record for a run whose step could not write its own (killed, crashed),
    for a run it verifies as its step does; a refusal (the step's own, if it wrote one, stands) otherwise."""
    now = datetime.now(UTC)
    succeeded = state == "SUCCEEDED"
    message = f"the {pipeline} pipeline ended {state}" + (f": {error}" if error else "")
    try:
        launch = task_launch(os.environ, pipeline, parameters)
    except StepError as refusal:
        refused = StepResult(message=str(refusal), status=refusal.status)
        return record_refusal(
            pipeline=pipeline, parameters=parameters, run_id=run_id, result=refused, started=now, environ=os.environ
        )
    result = StepResult(message=message, status=200 if succeeded else 500)
    # A direct run's record is named by the run id its step used: the step's own record, if written, stands.
    recorded_id = run_id if launch.direct else (job or run_id)
    return record_step_result(
        pipeline=pipeline, launch=launch, run_id=recorded_id, result=result, started=now, finished=now
    )


def _record(
    pipeline: str,
    run_key: str,
    run_id: str,
    result: StepResult,
    started: datetime,
    finished: datetime,
    span: Trace | None = None,
) -> dict[str, Any]:
    return records.result_record(
        run_key=run_key,
        pipeline=pipeline,
        backend=setting(os.environ, "BACKEND"),
        run_id=run_id,
        succeeded=result.succeeded,
        message=result.message,
        outputs=result.outputs,
        metrics=result.metrics,
        status=result.status,
        started=started,
        finished=finished,
        traceparent=span.traceparent if span else "",
    )


def _store(results_uri: str) -> BlobStore:
    # The task inherits RELAY_LOCAL_ROOT from its runner's environment, when set.
    return results_store(results_uri, setting(os.environ, "LOCAL_ROOT", Settings.local_root))


def _create(store: BlobStore, uri: str, record: Mapping[str, Any]) -> bool:
    """A record that is no launched run's result, written once at `uri` and not published."""
    try:
        store.write(uri, records.encode(record), if_generation_match=0)
    except PreconditionFailedError:
        return False
    return True
