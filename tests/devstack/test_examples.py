"""examples/: every trigger there passes `make up`'s catalog and policy as it is, from the bucket and the topic."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack import demo
from devstack.policy import write_policy
from devstack.seed import BENCHMARKS, LAB, RATCHET_PREFIX
from relaycli.main import main

EXAMPLES = sorted(p for p in demo.EXAMPLES.iterdir() if p.suffix in (".json", ".yaml"))


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment `make up` prints, as far as `relay validate` reads it."""
    policy_path, _ = write_policy(tmp_path)
    return {
        "RELAY_BACKEND": "local",
        "RELAY_RESULTS_URI": f"gs://{demo.RESULTS}",
        "RELAY_CATALOG_URI": str(demo.REPO / "pipelines" / "compiled"),
        "RELAY_POLICY_URI": str(policy_path),
    }


def test_there_is_an_example_for_every_pipeline_of_the_catalog():
    catalog = {p.stem for p in (demo.REPO / "pipelines" / "compiled").glob("*.yaml")}
    assert catalog and catalog <= {str(demo.example(p.name)["pipeline"]) for p in EXAMPLES}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
@pytest.mark.parametrize("origin", [["--bucket", demo.TRIGGERS], ["--topic", demo.TRIGGER_TOPIC_PATH]])
def test_an_example_is_valid_where_make_up_takes_triggers(
    example: Path, origin: list[str], env: dict[str, str], capsys: pytest.CaptureFixture[str]
):
    code = main(["validate", str(example), *origin], env=env)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "tenant   lab" in out


def test_the_examples_name_data_the_stack_seeds():
    sources = {s for p in EXAMPLES for s in demo.example(p.name)["parameters"].get("sources", [])}
    # mine/ is where docs/quickstart.md has you upload your own files first.
    assert sources <= {f"gs://{LAB}/assay/2026-11-21/", f"gs://{LAB}/reference/", f"gs://{LAB}/mine/"}
    ratchet = demo.example("ratchet.json")["parameters"]["workflow"]["uri"]
    assert ratchet == f"gs://{BENCHMARKS}/{RATCHET_PREFIX}workflow.json"


def test_your_own_pipeline_as_the_readme_adds_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """docs/own-pipeline.md: compile examples/hello into a catalog, name it in the policy, trigger it."""
    catalog = tmp_path / "catalog"
    assert main(["compile", str(demo.EXAMPLES / "hello" / "hello.py"), "--out", str(catalog)], env={}) == 0
    template = tmp_path / "policy.yaml"
    template.write_text(
        (demo.REPO / "devstack" / "policy.yaml").read_text().replace("[push, ratchet]", "[push, ratchet, hello]")
    )
    env, _ = demo.function_env(tmp_path / "stack", notify=False, catalog=catalog, policy_template=template)
    trigger = str(demo.EXAMPLES / "hello" / "hello.json")
    assert main(["validate", trigger, "--bucket", demo.TRIGGERS], env=env) == 0, capsys.readouterr().out
    capsys.readouterr()
    env_before, _ = demo.function_env(tmp_path / "before", notify=False, catalog=catalog)
    assert main(["validate", trigger, "--bucket", demo.TRIGGERS], env=env_before) == 1  # not in the policy yet
    assert "  pipeline: expected a pipeline tenants.lab.pipelines lists (push, ratchet)" in capsys.readouterr().out
