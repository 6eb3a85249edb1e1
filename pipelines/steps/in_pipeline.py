"""Running a step as a pipeline task: build its spec, run it, record the result, fail the task if it failed."""

from __future__ import annotations

import signal
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from pipelines.steps.contract import Step, StepResult, run_step, spec_for, step_context
from pipelines.steps.errors import StepError
from pipelines.steps.gate import task_launch
from pipelines.steps.outcome import log, record_refusal, record_step_result
from relay.config import setting
from relay.logs import lines_in_trace
from relay.trace import log_fields, span_for


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
    # Everything the run was started with, as the functions record a launch: checked before anything runs.
    asked = {**inputs, **parameters, "run_key": run_key, "results_uri": results_uri}
    try:
        launch = task_launch(environ, pipeline, asked)
    except StepError as refusal:
        refused = StepResult(message=str(refusal), status=refusal.status)
        record_refusal(
            pipeline=pipeline, parameters=asked, run_id=run_id, result=refused, started=started, environ=environ
        )
        raise StepFailedError(f"{pipeline} refused with status {refused.status}: {refused.message}") from None
    if "results_uri" in parameters:  # the deployment's location: the one the launch names, or left empty
        parameters = {**parameters, "results_uri": launch.results_uri}
    spec = spec_for(inputs=inputs, outputs={}, parameters=parameters)
    # The step's span of the run's trace (a new trace for a direct run): its lines and its result carry it.
    span = span_for(launch.parent)
    with lines_in_trace(log.name, log_fields(span, trace_project(environ))):
        log.info("%s run %s: step started (run id %s)", pipeline, launch.run_key or "(direct)", run_id)
        try:
            context = step_context(environ)
        except StepError as error:  # the deployment's policy cannot be read: nothing may run
            result = StepResult(message=str(error), status=error.status)
        else:
            with task_time_limit(environ):
                result = run_step(step, spec, context)
        log.info("%s run %s: step ended with status %s", pipeline, launch.run_key or "(direct)", result.status)
    record_step_result(
        pipeline=pipeline,
        launch=launch,
        run_id=run_id,
        result=result,
        started=started,
        finished=datetime.now(UTC),
        span=span,
    )
    if not result.succeeded:
        raise StepFailedError(f"{pipeline} failed with status {result.status}: {result.message}")
    return result.to_json()


def trace_project(environ: Mapping[str, str]) -> str:
    """The project whose Cloud Trace the step's lines join: RELAY_VERTEX_PROJECT, else the one Vertex AI runs it in."""
    return setting(environ, "VERTEX_PROJECT") or environ.get("CLOUD_ML_PROJECT_ID", "")


def task_time_limit(environ: Mapping[str, str]) -> AbstractContextManager[None]:
    """time_limit of the policy's task timeout, which `relay compile` sets in the task's RELAY_TASK_TIMEOUT."""
    return time_limit(float(setting(environ, "TASK_TIMEOUT", "0")))


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Ends the step with a 504 result once `seconds` have passed (the policy's task timeout); 0 means none.

    KFP v2 and Vertex have no per-task timeout of their own to compile in, so the step keeps it: the timer's
    signal interrupts the step wherever it waits, and its result is recorded like any other failure.
    """

    def expire(_signum: int, _frame: FrameType | None) -> None:
        raise StepError(504, f"the task ran past its time limit of {seconds:g} s (policy pipelines.task_timeout)")

    if seconds <= 0:
        yield
        return
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
