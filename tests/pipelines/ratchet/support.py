"""Shared by the ratchet tests: the example workflow, its test variants, and reading what a run left behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipelines.steps.contract import spec_for
from tests.launches import launch

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "pipelines" / "examples" / "ratchet"
VARIANTS = REPO / "tests" / "data" / "ratchet"
WORKFLOW_NAME = "text-summary"
TESTS = ("short text", "document")


def run_example_step(tmp: Path, run_key: str, *, timeout: float) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The example workflow through the real step command (`python -m pipelines.steps.ratchet spec result`) as
    the run the functions launched under `run_key` for tenant lab, with the policy, backend and results location in
    the environment the deployment sets, never in the spec. The finished process and the result file's path."""
    given = {
        "workflow": (EXAMPLE / "workflow.json").as_uri(),
        "destination": {"root": str(tmp / "cluster")},  # kind left out: the local destination
    }
    results = str(tmp / "results")
    launch(results, "ratchet", given, run_key=run_key, tenant="lab")  # what the functions launched
    spec = spec_for(
        inputs={}, outputs={}, parameters={**given, "results_uri": results, "tenant": "lab", "run_key": run_key}
    )
    (tmp / "spec.json").write_text(json.dumps(spec.to_json()))
    (tmp / "policy.yaml").write_text(
        "tenants:\n- name: lab\n"
        f"  code: ['{EXAMPLE.as_uri()}/']\n"
        f"  clusters: [{{kind: local, root: '{(tmp / 'cluster').as_uri()}'}}]\n"
    )
    env = {**os.environ, "RELAY_POLICY_URI": str(tmp / "policy.yaml"), "RELAY_BACKEND": "local",
           "RELAY_RESULTS_URI": results}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.steps.ratchet", str(tmp / "spec.json"), str(tmp / "result.json")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    return done, tmp / "result.json"


def variant_source(tmp: Path, variant: str) -> Path:
    """A copy of the example whose algorithms are replaced by those in tests/data/ratchet/<variant>/."""
    source = tmp / f"source-{variant}"
    shutil.copytree(EXAMPLE, source)
    for replacement in (VARIANTS / variant).glob("*.py"):
        shutil.copy(replacement, source / "algorithms" / replacement.stem / replacement.name)
    return source


def ledger_folder(results: Path, destination: str = "local", tenant: str = "") -> Path:
    return results / "ratchet" / tenant / WORKFLOW_NAME / destination


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def history(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]


def assert_self_contained(html: str) -> None:
    """Nothing in the page is fetched from elsewhere: no script, stylesheet, font or image reference."""
    lowered = html.lower()
    for forbidden in ("<script", "<link", "<img", "<iframe", "src=", "@import", "url(", "href="):
        assert forbidden not in lowered, f"report.html references something outside itself: {forbidden}"
    assert lowered.startswith("<!doctype html>") and "<svg" in lowered
