"""The push pipeline: send data from storage to an AI/ML platform, with its result recorded whatever happens."""

# No `from __future__ import annotations`: KFP reads the annotations at decoration time.
from typing import Any

from kfp import dsl

from pipelines.components import component
from pipelines.components.finish import finish_push
from pipelines.components.push import push_objects
from pipelines.steps.launch import DEFAULTS

DEFAULT = DEFAULTS["push"]  # what the backend fills in for a parameter the launch left out


def build() -> Any:
    """The pipeline, in the steps image; the deployment's settings are stamped into the compiled spec."""
    push_op = component(push_objects)
    finish_op = component(finish_push)

    @dsl.pipeline(
        name="push",
        description="Send objects from gs://, s3:// or file:// to a bucket, S3, an HTTP API, "
        "Kaggle or Hugging Face; credentials are secret:// references resolved inside the step.",
    )
    def push(
        sources: list,
        destination: dict,
        select: str = DEFAULT["select"],
        overwrite: bool = DEFAULT["overwrite"],
        run_key: str = DEFAULT["run_key"],
        results_uri: str = DEFAULT["results_uri"],
        tenant: str = DEFAULT["tenant"],
    ) -> None:
        # The exit task gets what the step gets: it records only for a run it verifies as the step does.
        arguments = {
            "sources": sources,
            "destination": destination,
            "select": select,
            "overwrite": overwrite,
            "run_key": run_key,
            "results_uri": results_uri,
            "run_id": dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            "tenant": tenant,
        }
        recorded = finish_op(**arguments)
        with dsl.ExitHandler(recorded, name="push-and-record"):
            push_op(**arguments)

    return push
