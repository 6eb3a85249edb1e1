"""Relay's result for a component of a pipeline of one's own: docs/own-pipeline.md.

    with relay_step("hello", parameters, run_id=run_id, defaults={"times": 2}) as step:
        ...  # the work
        step.result("said hello 3 times", outputs={"text": text}, metrics={"words": 3})

On entering, the run is checked as Relay's own steps check theirs (pipelines.steps.launch: the launch record the
functions wrote, the same pipeline, run key, tenant and parameters); a run nobody launched records a refusal and
the task fails before the work starts. On leaving, the result `{message, outputs, metrics, status}` is recorded
once under the deployment's results location (`runs/<run_key>/result.json`, published as Relay's are); an exception
in the work is recorded as a 500 (a StepError as its status), and any failed result fails the task. The policy's
task time limit (RELAY_TASK_TIMEOUT, compiled in by `relay compile`) ends the work as a 504.

The component runs in the steps image (base_image relay/steps:latest, which `relay compile --image` retargets) and
declares run_key, results_uri and tenant, which Relay fills; it passes them in `parameters` with its own inputs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipelines.steps.contract import StepResult
from pipelines.steps.errors import StepError
from pipelines.steps.gate import task_launch
from pipelines.steps.in_pipeline import StepFailedError, task_time_limit
from pipelines.steps.outcome import record_refusal, record_step_result


@dataclass
class OwnStep:
    """The result the work sets; a step that sets none succeeded with the message "finished"."""

    message: str = "finished"
    status: int = 200
    outputs: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)

    def result(
        self,
        message: str,
        *,
        outputs: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        status: int = 200,
    ) -> None:
        """What the run's result record says: 2xx succeeded, anything else failed (HTTP-like, as Relay's steps)."""
        self.message, self.status = message, status
        self.outputs, self.metrics = dict(outputs or {}), dict(metrics or {})


@contextmanager
def relay_step(
    pipeline: str,
    parameters: Mapping[str, Any],
    *,
    run_id: str,
    defaults: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Iterator[OwnStep]:
    """Check the run's launch, let the work set its result, record it; StepFailedError fails the task.

    `parameters`: every input the run was started with, run_key, results_uri and tenant among them. `defaults`: the
    pipeline's signature defaults, for the inputs a trigger may leave out. `run_id`: dsl.PIPELINE_JOB_ID_PLACEHOLDER.
    """
    environ = os.environ if environ is None else environ
    started = datetime.now(UTC)
    try:
        launch = task_launch(environ, pipeline, parameters, defaults=defaults)
    except StepError as refusal:
        refused = StepResult(message=str(refusal), status=refusal.status)
        record_refusal(
            pipeline=pipeline, parameters=parameters, run_id=run_id, result=refused, started=started, environ=environ
        )
        raise StepFailedError(f"{pipeline} refused with status {refused.status}: {refused.message}") from None
    step = OwnStep()
    try:
        with task_time_limit(environ):
            yield step
    except StepError as error:
        result = StepResult(message=str(error), status=error.status)
    except Exception as error:  # the work's own failure ends as a recorded 500, as a Relay step's does
        result = StepResult(message=f"{type(error).__name__}: {error}", status=500)
    else:
        result = StepResult(step.message, step.status, outputs=step.outputs, metrics=step.metrics)
    record_step_result(
        pipeline=pipeline, launch=launch, run_id=run_id, result=result, started=started, finished=datetime.now(UTC)
    )
    if not result.succeeded:
        raise StepFailedError(f"{pipeline} failed with status {result.status}: {result.message}")
