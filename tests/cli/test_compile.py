"""`relay compile`: Relay's pipelines and a user's (module, .py file or compiled spec), every task stamped with the
deployment's image, task ceilings and locations, into the folder given; the committed catalog never touched."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.compile import COMPILED
from tests.cli.support import run

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "examples" / "hello" / "hello.py"
LOCATIONS = {"RELAY_POLICY_URI": "gs://c/v1/policy.yaml", "RELAY_RESULTS_URI": "gs://r"}
DEPLOYED = ["--image", "img:7", "--policy-uri", LOCATIONS["RELAY_POLICY_URI"], "--results-uri", "gs://r"]

# A pipeline compiled elsewhere whose task names its own records location and policy, and asks for more than the
# policy allows: the deployment's stamp replaces all of it.
FOREIGN = """
from kfp import dsl

@dsl.component(base_image="python:3.11-slim")
def work(n: int) -> int:
    return n

@dsl.pipeline(name="{name}")
def foreign(n: int = 1) -> None:
    task = work(n=n).set_env_variable("RELAY_RESULTS_URI", "gs://elsewhere").set_env_variable("LANG", "C")
    task.set_env_variable("RELAY_POLICY_URI", "gs://elsewhere/all.yaml").set_env_variable("RELAY_TASK_TIMEOUT", "0")
    task.set_cpu_request("64").set_cpu_limit("64").set_memory_request("512M")
"""


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text("pipelines: {task_timeout: 2h, cpu: '2', memory: 4G}\n")
    return path


@pytest.fixture
def committed() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in COMPILED.iterdir()}


def containers(spec: Path) -> list[dict[str, Any]]:
    executors = yaml.safe_load(spec.read_text())["deploymentSpec"]["executors"]
    return [executor["container"] for executor in executors.values()]


def foreign(tmp_path: Path, name: str = "foreign") -> Path:
    module = tmp_path / f"{name.replace('-', '_')}_pipeline.py"
    module.write_text(FOREIGN.format(name=name))
    return module


@pytest.mark.parametrize("source", [str(HELLO), "examples.hello.hello", "examples.hello.hello:hello"])
def test_a_module_of_ones_own_is_stamped_as_relays_pipelines_are(
    source: str, tmp_path: Path, policy: Path, committed: dict[str, bytes], capsys: pytest.CaptureFixture[str]
):
    out = tmp_path / "catalog"
    ran = run(capsys, ["compile", source, "--out", str(out), "--policy", str(policy), *DEPLOYED], env={})
    assert ran.code == 0, ran.err
    assert ran.out.splitlines() == [str(out / name) for name in ("push.yaml", "ratchet.yaml", "hello.yaml")]
    for name in ("push.yaml", "ratchet.yaml", "hello.yaml"):
        for container in containers(out / name):
            assert {e["name"]: e["value"] for e in container["env"]} == {"RELAY_TASK_TIMEOUT": "7200", **LOCATIONS}
            assert container["image"] == "img:7"
            resources = container["resources"]
            assert (resources["resourceCpuLimit"], resources["resourceMemoryLimit"]) == ("2", "4G")
            assert (resources["cpuLimit"], resources["memoryLimit"]) == (2.0, 4.0)
    assert {p.name: p.read_bytes() for p in COMPILED.iterdir()} == committed


def test_a_spec_compiled_elsewhere_gets_the_deployments_locations_and_ceilings(
    tmp_path: Path, policy: Path, capsys: pytest.CaptureFixture[str]
):
    from kfp import compiler

    spec = tmp_path / "spec.yaml"  # as `kfp dsl compile` writes it
    compiler.Compiler().compile(runpy.run_path(str(foreign(tmp_path)))["foreign"], str(spec))
    assert "gs://elsewhere" in spec.read_text()
    out = tmp_path / "catalog"
    ran = run(capsys, ["compile", str(spec), "--out", str(out), "--policy", str(policy), *DEPLOYED], env={})
    assert ran.code == 0, ran.err
    [container] = containers(out / "foreign.yaml")
    assert container["env"] == [
        {"name": "LANG", "value": "C"},  # the task's own settings stay
        {"name": "RELAY_TASK_TIMEOUT", "value": "7200"},
        {"name": "RELAY_POLICY_URI", "value": "gs://c/v1/policy.yaml"},
        {"name": "RELAY_RESULTS_URI", "value": "gs://r"},
    ]
    assert container["image"] == "python:3.11-slim"  # not the steps image: left as the author chose
    resources = container["resources"]
    assert (resources["resourceCpuLimit"], resources["resourceCpuRequest"]) == ("2", "2")  # 64 asked
    assert (resources["resourceMemoryLimit"], resources["resourceMemoryRequest"]) == ("4G", "512M")  # below: kept
    assert "gs://elsewhere" not in (out / "foreign.yaml").read_text()


def test_without_out_the_catalog_goes_to_a_scratch_folder_never_the_committed_one(
    committed: dict[str, bytes], capsys: pytest.CaptureFixture[str]
):
    ran = run(capsys, ["compile", str(HELLO), *DEPLOYED], env={})
    assert ran.code == 0, ran.err
    [where] = [line.rsplit(" ", 1)[1] for line in ran.err.splitlines() if "no --out: writing to" in line]
    assert ran.out.splitlines() == [f"{where}/{name}" for name in ("push.yaml", "ratchet.yaml", "hello.yaml")]
    assert Path(where).resolve() != COMPILED.resolve()
    assert {p.name: p.read_bytes() for p in COMPILED.iterdir()} == committed


@pytest.mark.parametrize(
    ("name", "found"),
    [
        ("push", "expected a pipeline name of its own, found 'push', which pipelines/push_pipeline.py has already"),
        ("policy", "expected a pipeline name: a lower-case letter"),
    ],
)
def test_a_pipeline_that_would_take_another_entrys_name_is_refused_and_nothing_written(
    name: str, found: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out = tmp_path / "catalog"
    ran = run(capsys, ["compile", str(foreign(tmp_path, name)), "--out", str(out)], env={})
    assert ran.code == 1 and found in ran.err and ran.err.count("\n") == 1, ran.err
    assert not out.exists()


def test_a_folder_holding_another_spec_is_refused_the_deploy_publishes_it_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out = tmp_path / "catalog"
    out.mkdir()
    (out / "old.yaml").write_text("pipelineInfo: {name: old}\nroot: {}\n")
    (out / "policy.yaml").write_text("version: 1\n")  # a deployment's policy beside the catalog is not an entry
    ran = run(capsys, ["compile", "--out", str(out)], env={})
    assert ran.code == 1 and "expected a folder holding no other catalog entry, found old.yaml" in ran.err
    assert sorted(p.name for p in out.iterdir()) == ["old.yaml", "policy.yaml"]


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("{tmp}/none.py", "expected a @dsl.pipeline function, found none"),
        ("{tmp}/none.py:nothing", "expected nothing to be a @dsl.pipeline, found NoneType"),
        ("{tmp}/missing.yaml", "expected a readable compiled spec"),
        ("{tmp}/plain.yaml", "expected a compiled KFP v2 pipeline spec"),
        ("no.such.module", "expected a module with a @dsl.pipeline, found ModuleNotFoundError"),
    ],
)
def test_what_is_no_pipeline_is_named_with_what_was_expected(
    source: str, found: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    (tmp_path / "none.py").write_text("X = 1\n")
    (tmp_path / "plain.yaml").write_text("a: 1\n")
    ran = run(capsys, ["compile", source.format(tmp=tmp_path), "--out", str(tmp_path / "out")], env={})
    assert ran.code == 1 and found in ran.err and "Traceback" not in ran.err, ran.err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("text", "found"),
    [("pipelines: {cpu: lots}\n", "pipelines.cpu: expected a Kubernetes quantity"), (None, "expected a readable")],
)
def test_a_policy_that_cannot_set_the_ceilings_stops_it_before_anything_is_written(
    text: str | None, found: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    policy = tmp_path / "policy.yaml"
    if text is not None:
        policy.write_text(text)
    ran = run(capsys, ["compile", "--out", str(tmp_path / "out"), "--policy", str(policy)], env={})
    assert ran.code == 2 and found in ran.err and "Traceback" not in ran.err, ran.err
    assert not (tmp_path / "out").exists()
