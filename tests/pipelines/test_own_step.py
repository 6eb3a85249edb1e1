"""relay_step, the helper a component of one's own pipeline calls: the launch checked before the work, the result
recorded in Relay's shape under the deployment's results location, and a run nobody launched doing nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.steps.errors import StepError
from pipelines.steps.in_pipeline import StepFailedError
from pipelines.steps.launch import launch_records, verify_launch
from pipelines.steps.own import relay_step
from tests.launches import launch


def parameters(results: Path, **given: Any) -> dict[str, Any]:
    """What a hello task gets: the trigger's inputs, the defaults the backend filled in, and Relay's own."""
    return {"greeting": "hi", "times": 2, "run_key": "k", "results_uri": str(results), "tenant": "lab", **given}


def result(results: Path, run_key: str = "k") -> dict[str, Any]:
    return json.loads((results / "runs" / run_key / "result.json").read_text())


def test_a_launched_run_records_its_result_in_relays_shape(tmp_path: Path):
    launch(tmp_path, "hello", {"greeting": "hi"}, run_key="k", tenant="lab")  # times left out: its default
    environ = {"RELAY_RESULTS_URI": str(tmp_path)}
    with relay_step("hello", parameters(tmp_path), run_id="r", defaults={"times": 2}, environ=environ) as step:
        step.result("said hi twice", outputs={"text": "hi hi"}, metrics={"words": 2})
    saved = result(tmp_path)
    assert (saved["state"], saved["status"], saved["message"]) == ("succeeded", 200, "said hi twice")
    assert (saved["outputs"], saved["metrics"], saved["pipeline"]) == ({"text": "hi hi"}, {"words": 2}, "hello")


@pytest.mark.parametrize(
    ("given", "differs"),
    [
        ({"greeting": "rm -rf"}, "parameters.greeting: expected string 'hi', found string 'rm -rf'"),
        (
            {"times": 9},
            "parameters.times: expected number 2, found number 9",
        ),  # the default stands in for what the launch left out
        ({"tenant": "other"}, "tenant: expected 'lab', found 'other'"),
    ],
)
def test_a_run_started_with_a_real_runs_key_and_other_inputs_does_nothing(
    given: dict[str, Any], differs: str, tmp_path: Path
):
    launch(tmp_path, "hello", {"greeting": "hi"}, run_key="k", tenant="lab")
    worked: list[bool] = []
    environ = {"RELAY_RESULTS_URI": str(tmp_path)}
    asked = parameters(tmp_path, **given)
    with (
        pytest.raises(StepFailedError, match="403"),
        relay_step("hello", asked, run_id="r", defaults={"times": 2}, environ=environ),
    ):
        worked.append(True)
    assert worked == [] and not (tmp_path / "runs" / "k" / "result.json").exists()
    refusal = json.loads((tmp_path / "refused" / "k" / "r.json").read_text())
    assert refusal["state"] == "refused" and differs in refusal["message"]


def test_without_a_results_location_nothing_runs(tmp_path: Path):
    launch(tmp_path, "hello", {"greeting": "hi"}, run_key="k", tenant="lab")
    with (
        pytest.raises(StepFailedError, match="RELAY_RESULTS_URI"),
        relay_step("hello", parameters(tmp_path), run_id="r", defaults={"times": 2}, environ={}),
    ):
        pytest.fail("the work ran unverified")


@pytest.mark.parametrize(
    ("failure", "status", "message"),
    [(RuntimeError("disk full"), 500, "RuntimeError: disk full"), (StepError(422, "no greeting"), 422, "no greeting")],
)
def test_the_works_failure_is_recorded_and_fails_the_task(
    failure: Exception, status: int, message: str, tmp_path: Path
):
    launch(tmp_path, "hello", {"greeting": "hi", "times": 2}, run_key="k", tenant="lab")
    environ = {"RELAY_RESULTS_URI": str(tmp_path)}
    with (
        pytest.raises(StepFailedError, match=str(status)),
        relay_step("hello", parameters(tmp_path), run_id="r", environ=environ),
    ):
        raise failure
    saved = result(tmp_path)
    assert (saved["state"], saved["status"], saved["message"]) == ("failed", status, message)


def test_a_components_defaults_never_replace_relays_own(tmp_path: Path):
    """A pipeline's defaults count only for a pipeline of one's own: push's stay those the backend fills in."""
    launch(tmp_path, "push", {"sources": ["gs://lab/a"], "destination": {"kind": "gcs", "bucket": "b"}}, run_key="k")
    asked = {"sources": ["gs://lab/a"], "destination": {"kind": "gcs", "bucket": "b"}, "select": "*", "run_key": "k"}
    records = launch_records({"RELAY_RESULTS_URI": str(tmp_path)})
    with pytest.raises(StepError, match=r"parameters\.select: expected string '', found string '\*'"):
        verify_launch(records, "push", asked, defaults={"select": "*"})
