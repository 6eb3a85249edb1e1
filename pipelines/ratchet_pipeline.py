"""The ratchet pipeline: export algorithms, validate them, benchmark them against a bar that only rises."""

# No `from __future__ import annotations`: KFP reads the annotations at decoration time.
from typing import Any

from kfp import dsl

from pipelines.components import component
from pipelines.components.finish import finish_ratchet
from pipelines.components.ratchet import ratchet_algorithms
from pipelines.steps.launch import DEFAULTS

DEFAULT = DEFAULTS["ratchet"]  # what the backend fills in for a parameter the launch left out


def build() -> Any:
    """The pipeline, in the steps image; the deployment's settings are stamped into the compiled spec."""
    ratchet_op = component(ratchet_algorithms)
    finish_op = component(finish_ratchet)

    @dsl.pipeline(
        name="ratchet",
        description="Export a workflow's algorithms to a destination (local, http or kfp), validate each, run its "
        "benchmark tests with their timeouts, and hold each test to a latency bar that only tightens.",
    )
    def ratchet(
        workflow: dict,
        source: str = DEFAULT["source"],
        destination: dict = DEFAULT["destination"],  # {} is the local destination
        tolerance: float = DEFAULT["tolerance"],
        reset_baseline: bool = DEFAULT["reset_baseline"],
        reason: str = DEFAULT["reason"],
        run_key: str = DEFAULT["run_key"],
        results_uri: str = DEFAULT["results_uri"],
        tenant: str = DEFAULT["tenant"],
    ) -> None:
        # The exit task gets what the step gets: it records only for a run it verifies as the step does.
        arguments = {
            "workflow": workflow,
            "source": source,
            "destination": destination,
            "tolerance": tolerance,
            "reset_baseline": reset_baseline,
            "reason": reason,
            "run_key": run_key,
            "results_uri": results_uri,
            "run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            "tenant": tenant,
        }
        recorded = finish_op(**arguments)
        with dsl.ExitHandler(recorded, name="ratchet-and-record"):
            ratchet_op(**arguments)

    return ratchet
