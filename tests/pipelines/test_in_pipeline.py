"""A step as a pipeline task: its policy and records come from the deployment's environment, and its time is limited."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pipelines.steps.contract import StepContext, StepResult, StepSpec
from pipelines.steps.in_pipeline import StepFailedError, run_in_pipeline
from tests.launches import launch


def record(results: Path, run_key: str) -> dict[str, object]:
    return json.loads((results / "runs" / run_key / "result.json").read_text())


def test_a_task_past_its_time_limit_ends_as_a_recorded_504(tmp_path: Path):
    def slow(spec: StepSpec, context: StepContext) -> StepResult:
        time.sleep(30)
        return StepResult("unreachable", 200)

    launch(tmp_path, "echo", {}, run_key="k")
    started = time.monotonic()
    with pytest.raises(StepFailedError, match="504"):
        run_in_pipeline(slow, pipeline="echo", run_key="k", results_uri=str(tmp_path), run_id="r", inputs={},
                        parameters={}, environ={"RELAY_TASK_TIMEOUT": "0.5",
                                                "RELAY_RESULTS_URI": str(tmp_path)})  # fmt: skip
    assert time.monotonic() - started < 10
    saved = record(tmp_path, "k")
    assert saved["status"] == 504 and "time limit of 0.5 s" in str(saved["message"])


def test_records_go_where_the_deployment_says_and_a_run_that_asks_elsewhere_is_refused(tmp_path: Path):
    seen: list[object] = []

    def step(spec: StepSpec, context: StepContext) -> StepResult:
        seen.append(spec.parameters["results_uri"])
        return StepResult("done", 200)

    deployed, asked = tmp_path / "deployed", tmp_path / "elsewhere"
    launch(deployed, "echo", {"results_uri": str(deployed)}, run_key="k")
    environ = {"RELAY_RESULTS_URI": str(deployed)}
    with pytest.raises(StepFailedError, match="403"):
        run_in_pipeline(step, pipeline="echo", run_key="k", results_uri=str(asked), run_id="r", inputs={},
                        parameters={"results_uri": str(asked)}, environ=environ)  # fmt: skip
    assert seen == [] and not asked.exists() and not (deployed / "runs" / "k" / "result.json").exists()
    refusal = json.loads((deployed / "refused" / "k" / "r.json").read_text())
    assert refusal["state"] == "refused" and "parameters.results_uri: expected the deployment's" in refusal["message"]
    run_in_pipeline(step, pipeline="echo", run_key="k", results_uri=str(deployed), run_id="r", inputs={},
                    parameters={"results_uri": str(deployed)}, environ=environ)  # fmt: skip
    assert seen == [str(deployed)] and record(deployed, "k")["status"] == 200


def test_an_unreadable_policy_runs_nothing(tmp_path: Path):
    ran: list[bool] = []

    def step(spec: StepSpec, context: StepContext) -> StepResult:
        ran.append(True)
        return StepResult("done", 200)

    launch(tmp_path, "echo", {}, run_key="k")
    environ = {"RELAY_POLICY_URI": str(tmp_path / "missing.yaml"), "RELAY_RESULTS_URI": str(tmp_path)}
    with pytest.raises(StepFailedError, match="503"):
        run_in_pipeline(step, pipeline="echo", run_key="k", results_uri=str(tmp_path), run_id="r", inputs={},
                        parameters={}, environ=environ)  # fmt: skip
    assert ran == [] and "expected a policy file, found no object" in str(record(tmp_path, "k")["message"])
