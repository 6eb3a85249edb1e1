"""The ratchet pipeline: export algorithms, validate them, benchmark them against a bar that only rises."""

# No `from __future__ import annotations`: KFP reads the annotations at decoration time.
from typing import Any

from kfp import dsl

from pipelines.components import Deployment, component, configure
from pipelines.components.finish import finish
from pipelines.components.ratchet import ratchet_algorithms


def build(deployment: Deployment) -> Any:
    image = deployment.image
    ratchet_op = component(ratchet_algorithms, image)
    finish_op = component(finish, image)

    @dsl.pipeline(
        name="ratchet",
        description="Export a workflow's algorithms to a destination (local, http or kfp), validate each, run its "
        "benchmark tests with their timeouts, and hold each test to a latency bar that only tightens.",
    )
    def ratchet(
        workflow: dict,
        source: str = "",
        destination: dict = {},  # noqa: B006 - KFP takes pipeline defaults as literals; {} is the local destination
        tolerance: float = 0.1,
        reset_baseline: bool = False,
        reason: str = "",
        run_key: str = "",
        results_uri: str = "",
        tenant: str = "",
    ) -> None:
        recorded = configure(finish_op(pipeline="ratchet", run_key=run_key, results_uri=results_uri), deployment)
        with dsl.ExitHandler(recorded, name="ratchet-and-record"):
            configure(
                ratchet_op(
                    workflow=workflow,
                    source=source,
                    destination=destination,
                    tolerance=tolerance,
                    reset_baseline=reset_baseline,
                    reason=reason,
                    run_key=run_key,
                    results_uri=results_uri,
                    run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                    tenant=tenant,
                ),
                deployment,
            )

    return ratchet
