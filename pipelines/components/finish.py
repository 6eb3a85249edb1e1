"""The exit tasks: record how the run ended when its step could not (the step normally records itself).

Each takes the run's parameters, as its step does: it records a result only for a run it verifies as the step does
(pipelines.steps.launch), so a run started with a real run's key never takes that run's result.json.
"""

# No `from __future__ import annotations`: KFP reads the annotations at decoration time.
from kfp import dsl


def finish_push(
    sources: list,
    destination: dict,
    select: str,
    overwrite: bool,
    run_key: str,
    results_uri: str,
    run_id: str,
    tenant: str,
    status: dsl.PipelineTaskFinalStatus,
) -> None:
    from pipelines.steps.outcome import record_final_status

    parameters = {"sources": sources, "destination": destination, "select": select, "overwrite": overwrite}
    record_final_status(
        pipeline="push",
        parameters={**parameters, "run_key": run_key, "results_uri": results_uri, "tenant": tenant},
        run_id=run_id,
        state=status.state,
        error=status.error_message or "",
        job=status.pipeline_job_resource_name,
    )


def finish_ratchet(
    workflow: dict,
    source: str,
    destination: dict,
    tolerance: float,
    reset_baseline: bool,
    reason: str,
    run_key: str,
    results_uri: str,
    run_id: str,
    tenant: str,
    status: dsl.PipelineTaskFinalStatus,
) -> None:
    from pipelines.steps.outcome import record_final_status

    parameters = {"workflow": workflow, "source": source, "destination": destination, "tolerance": tolerance}
    parameters.update(reset_baseline=reset_baseline, reason=reason, run_key=run_key, results_uri=results_uri)
    record_final_status(
        pipeline="ratchet",
        parameters={**parameters, "tenant": tenant},
        run_id=run_id,
        state=status.state,
        error=status.error_message or "",
        job=status.pipeline_job_resource_name,
    )
