"""The committed catalog is exactly what the pipeline definitions compile to."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.compile import CATALOG, COMPILED, compile_catalog
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
    assert spec.declares_reserved == ("run_key", "results_uri")
