"""Workflow files shaped like the seed's own, run by the ratchet step on the local destination.

The seed read each data file from wherever `data_files` named it and uploaded it into a collection named after the
algorithm (`data://<user>/<algo>/<file name>`), which payloads and code name as `data://.my/<algo>/<file>`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipelines.steps.contract import StepContext, StepResult, run_step, spec_for
from pipelines.steps.ratchet.step import ratchet
from relay.secrets import LocalSecrets
from tests.pipelines.ratchet.support import VARIANTS, read_json
from tests.policies import TrustingGate

SEED = VARIANTS / "seed"
WITH_DATA = ("SmartImageDownloader", "BoundingBoxOnImage", "DeepFashion")


def run(tmp_path: Path, workflow: Path, **parameters: object) -> StepResult:
    defaults = {
        "workflow": {"uri": workflow.as_uri()},
        "destination": {"kind": "local", "root": str(tmp_path / "cluster")},
        "results_uri": str(tmp_path / "results"),
        "run_key": "seed",
    }
    spec = spec_for(inputs={}, outputs={}, parameters={**defaults, **parameters})
    return run_step(ratchet, spec, StepContext(resolver=LocalSecrets(env={}), gate=TrustingGate()))


@pytest.mark.parametrize("workflow", ["image_benchmark.json", "image_parallel_pipelining.json"])
def test_the_seed_readmes_examples_land_each_data_file_in_its_algorithms_collection(tmp_path: Path, workflow: str):
    result = run(tmp_path, SEED / workflow)
    name = workflow.removesuffix(".json")
    assert result.status == 200, result.message
    # 4 code files and 1 + 1 + 4 data files, every one sent.
    assert re.match(
        rf"ratchet {name} on local: sent 10 file\(s\), [\d,]+ bytes, for 4 of 4 algorithm\(s\); "
        r"4 of 4 algorithm\(s\) validated, 2 of 2 test\(s\) passed; bar set for ",
        result.message,
    ), result.message
    data = tmp_path / "cluster" / "data"
    assert sorted(p.name for p in data.iterdir()) == sorted(WITH_DATA)  # no `artifacts` collection
    assert {p.name for p in (data / "DeepFashion").iterdir()} == {
        "ssd_v1.1.pb",
        "frozen_inference_graph.pb",
        "label_map.pbtxt",
        "willow_example.jpeg",
    }
    deep_fashion = (tmp_path / "cluster" / "algorithms" / "DeepFashion" / "src" / "DeepFashion.py").read_text()
    assert 'LABEL_FILE = "data://local/DeepFashion/label_map.pbtxt"' in deep_fashion
    assert 'MODEL_FILE = "data://local/DeepFashion/ssd_v1.1.pb"' in deep_fashion  # its listed name, where it landed

    report = read_json(Path(result.outputs["report_json"]))
    algorithms = {a["name"]: a for a in report["algorithms"]}
    assert algorithms["BoundingBoxOnImage"]["output"].startswith('{"output": "data://.algo/temp/willow.jpeg"')
    assert algorithms["ParallelPipelining"]["depends_on"] == ["DeepFashion"]  # its code calls algo://.my/DeepFashion
    received = [f for f in algorithms["SmartImageDownloader"]["files"] if f["kind"] == "data"]
    assert [(Path(f["source"]).parts[-3:], f["destination"]) for f in received] == [
        (("data", "artifacts", "willow_example.jpeg"), "data://local/SmartImageDownloader/willow_example.jpeg")
    ]


def test_the_2021_environment_key_is_accepted_and_recorded(tmp_path: Path):
    result = run(tmp_path, SEED / "hello.json")
    assert result.status == 200, result.message
    (hello,) = read_json(Path(result.outputs["report_json"]))["algorithms"]
    assert hello["output"] == '"hello Algorithmia"'
    assert hello["environment"] == {"environment": "python3", "language": "python-pip-old"}


def test_run_only_says_nothing_was_sent(tmp_path: Path):
    assert run(tmp_path, SEED / "hello.json").status == 200  # deploys it
    run_only = tmp_path / "run-only" / "hello.json"
    run_only.parent.mkdir()
    run_only.write_text((SEED / "hello.json").read_text().replace('"run_only": false', '"run_only": true'))
    # A ledger of its own: against the first run's bar, a loaded machine's slower call would be a violation, and
    # this test is about what the message says was sent, not about timing.
    again = run(tmp_path, run_only, run_key="again", results_uri=str(tmp_path / "results-again"))
    assert again.status == 200, again.message
    assert again.message.startswith(
        "ratchet hello on local: nothing sent (run_only: the algorithms are there already); "
        "1 of 1 algorithm(s) validated, 1 of 1 test(s) passed"
    )
