"""The ratchet task: a thin wrapper around `pipelines.steps.ratchet`."""

# No `from __future__ import annotations`: KFP reads the annotations at decoration time.


def ratchet_algorithms(
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
) -> dict:
    # Named apart from the pipeline: kfp.local resolves components by name, and a clash runs the wrong one.
    import os

    from pipelines.steps.in_pipeline import run_in_pipeline
    from pipelines.steps.ratchet.step import ratchet as step

    return run_in_pipeline(
        step,
        pipeline="ratchet",
        run_key=run_key,
        results_uri=results_uri,
        run_id=run_id,
        inputs={},
        parameters={
            "workflow": workflow,
            "source": source,
            "destination": destination,
            "tolerance": tolerance,
            "reset_baseline": reset_baseline,
            "reason": reason,
            "run_key": run_key,
            "results_uri": results_uri,
            "tenant": tenant,
        },
        environ=os.environ,
    )
