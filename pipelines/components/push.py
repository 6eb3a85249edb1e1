"""The push task: a thin wrapper around `pipelines.steps.push`."""

# No `from __future__ import annotations`: KFP reads the annotations at decoration time.


def push_objects(
    sources: list,
    destination: dict,
    select: str,
    overwrite: bool,
    run_key: str,
    results_uri: str,
    run_id: str,
    tenant: str,
) -> dict:
    import os

    from pipelines.steps.in_pipeline import run_in_pipeline
    from pipelines.steps.push import push as step

    return run_in_pipeline(
        step,
        pipeline="push",
        run_key=run_key,
        results_uri=results_uri,
        run_id=run_id,
        inputs={"sources": sources},
        parameters={
            "destination": destination,
            "select": select,
            "overwrite": overwrite,
            "run_key": run_key,
            "tenant": tenant,
        },
        environ=os.environ,
    )
