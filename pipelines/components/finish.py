"""The exit task: records how the run ended when its step could not (the step normally records itself)."""

# No `from __future__ import annotations`: KFP reads the annotations at decoration time.
from kfp import dsl


def finish(pipeline: str, run_key: str, results_uri: str, status: dsl.PipelineTaskFinalStatus) -> None:
    from pipelines.steps.outcome import record_final_status

    record_final_status(
        pipeline=pipeline,
        run_key=run_key,
        results_uri=results_uri,
        state=status.state,
        error=status.error_message or "",
        job=status.pipeline_job_resource_name,
    )
