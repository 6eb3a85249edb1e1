"""Running a step as a pipeline task: build its spec, run it, record the result, fail the task if it failed."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pipelines.steps.contract import Step, StepContext, run_step, spec_for
from pipelines.steps.outcome import record_step_result
from relay.secrets import resolver_from_env


class StepFailedError(RuntimeError):
    """Raised so that KFP marks the task failed (and the exit handler runs); the record has the details."""


def run_in_pipeline(
    step: Step,
    *,
    pipeline: str,
    run_key: str,
    results_uri: str,
    run_id: str,
    inputs: Mapping[str, Any],
    parameters: Mapping[str, Any],
    environ: Mapping[str, str],
) -> dict[str, Any]:
    started = datetime.now(UTC)
    spec = spec_for(inputs=inputs, outputs={}, parameters=parameters)
    result = run_step(step, spec, StepContext(resolver=resolver_from_env(environ)))
    if run_key and results_uri:
        record_step_result(
            pipeline=pipeline,
            run_key=run_key,
            results_uri=results_uri,
            run_id=run_id,
            result=result,
            started=started,
            finished=datetime.now(UTC),
        )
    if not result.succeeded:
        raise StepFailedError(f"{pipeline} failed with status {result.status}: {result.message}")
    return result.to_json()
