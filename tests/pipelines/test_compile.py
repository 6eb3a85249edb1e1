"""The committed catalog is exactly what the pipeline definitions compile to."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines.compile import CATALOG, COMPILED, compile_catalog, main
from relay.catalog import parse_pipeline_package


def test_the_committed_specs_match_a_fresh_compile(tmp_path: Path):
    for fresh in compile_catalog(tmp_path):
        committed = COMPILED / fresh.name
        assert committed.exists(), f"{committed} is missing: run python -m pipelines.compile"
        assert fresh.read_text() == committed.read_text(), f"{committed} is stale: run python -m pipelines.compile"


def test_the_image_is_a_compile_option(tmp_path: Path):
    [*_] = compile_catalog(tmp_path, image="europe-docker.pkg.dev/p/relay/steps:abc123")
    assert "image: europe-docker.pkg.dev/p/relay/steps:abc123" in (tmp_path / "push.yaml").read_text()


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_every_pipeline_declares_the_reserved_parameters(name: str):
    spec = parse_pipeline_package(name, name, (COMPILED / f"{name}.yaml").read_bytes())
    assert spec.declares_reserved == ("run_key", "results_uri", "tenant")


def test_a_deployment_compiles_in_its_policy_resources_and_locations(tmp_path: Path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("pipelines: {task_timeout: 2h, cpu: '2', memory: 4G}\n")
    main(["--out", str(tmp_path / "out"), "--policy", str(policy), "--policy-uri", "gs://c/v1/policy.yaml",
          "--results-uri", "gs://r"])  # fmt: skip
    documents = [d for d in yaml.safe_load_all((tmp_path / "out" / "push.yaml").read_text()) if d]
    executors = documents[0]["deploymentSpec"]["executors"]
    for executor in executors.values():
        container = executor["container"]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env == {"RELAY_TASK_TIMEOUT": "7200", "RELAY_POLICY_URI": "gs://c/v1/policy.yaml",
                       "RELAY_RESULTS_URI": "gs://r"}  # fmt: skip
        assert (container["resources"]["resourceCpuLimit"], container["resources"]["resourceMemoryLimit"]) == (
            "2",
            "4G",
        )
    assert len(executors) == 2  # the step and the exit handler
