"""The ratchet step in process: the example workflow on the local destination, its variants, secrets, parameters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.steps.contract import StepContext, StepResult, run_step, spec_for
from pipelines.steps.ratchet.step import ratchet
from relay.secrets import LocalSecrets
from tests.pipelines.ratchet.support import (
    EXAMPLE,
    TESTS,
    assert_self_contained,
    history,
    ledger_folder,
    read_json,
    run_example_step,
    variant_source,
)
from tests.policies import TrustingGate
from tests.servers.oip import OipServer, bytes_model


def run(tmp_path: Path, run_key: str, secrets: dict[str, str] | None = None, **parameters: Any) -> StepResult:
    defaults: dict[str, Any] = {
        "workflow": {"uri": (EXAMPLE / "workflow.json").as_uri()},
        "destination": {"kind": "local", "root": str(tmp_path / "cluster")},
        "results_uri": str(tmp_path / "results"),
        "run_key": run_key,
    }
    spec = spec_for(inputs={}, outputs={}, parameters={**defaults, **parameters})
    return run_step(ratchet, spec, StepContext(resolver=LocalSecrets(env=secrets or {}), gate=TrustingGate()))


def test_the_first_run_sets_the_bar_and_the_second_holds_or_tightens_it(tmp_path: Path):
    first = run(tmp_path, "first")
    assert first.status == 200, first.message
    assert first.message.endswith("bar set for short text, document")
    folder = ledger_folder(tmp_path / "results")
    baseline = read_json(folder / "baseline.json")
    assert baseline["workflow"] == "text-summary" and baseline["destination"] == "local"
    bars = {name: test["bar_seconds"] for name, test in baseline["tests"].items()}
    assert set(bars) == set(TESTS) and all(bar > 0 for bar in bars.values())
    assert first.outputs["report_html"] == str(folder / "report.html")
    assert {first.outputs[k] for k in ("report_json", "baseline", "history")} == {
        str(folder / name) for name in ("report.json", "baseline.json", "history.jsonl")
    }
    assert first.metrics["calls"] == 5 and first.metrics["validated"] == 4  # 3 + 2 repeats

    second = run(tmp_path, "second")
    assert second.status == 200, second.message
    for name in TESTS:
        verdict = second.outputs["tests"][name]
        assert verdict["verdict"] in ("ok", "tightened") and verdict["bar_seconds"] <= bars[name]
    entries = history(folder)
    assert [e["run_key"] for e in entries] == ["first", "second"]
    assert entries[0]["tests"]["short text"]["verdict"] == "set"
    report = read_json(folder / "report.json")
    assert report["run_key"] == "second" and len(report["tests"][0]["calls"]) == 3
    assert report["algorithms"][1]["depends_on"] == ["tokenize"]  # count_words calls algo://.my/tokenize
    assert report["algorithms"][3]["depends_on"] == ["count_words", "first_sentence"]
    html = (folder / "report.html").read_text()
    assert_self_contained(html)
    assert html.count('<svg class="chart"') == 2 and "second" in html


def test_placeholders_become_the_destinations_names(tmp_path: Path):
    assert run(tmp_path, "names").status == 200
    cluster = tmp_path / "cluster"
    tokenize = (cluster / "algorithms" / "tokenize" / "tokenize.py").read_text()
    assert 'STOPWORDS = "data://local/tokenize/stopwords.txt"' in tokenize and ".my" not in tokenize
    count_words = (cluster / "algorithms" / "count_words" / "count_words.py").read_text()
    assert 'algo("algo://local/tokenize")' in count_words
    assert (cluster / "data" / "summarize" / "report.txt").read_text().startswith("Platform health report.")
    report = read_json(ledger_folder(tmp_path / "results") / "report.json")
    summarize = report["algorithms"][3]
    assert {"kind": "data", "destination": "data://local/summarize/report.txt"}.items() <= summarize["files"][
        -1
    ].items()
    assert summarize["output"].startswith('{"headline": "Benchmarks need a bar."')


def test_a_broken_algorithm_is_reported_and_what_does_not_depend_on_it_still_runs(tmp_path: Path):
    assert run(tmp_path, "good").status == 200
    broken = run(tmp_path, "broken", source=variant_source(tmp_path, "broken").as_uri() + "/")
    assert broken.status == 502, broken.message
    algorithms = broken.outputs["algorithms"]
    assert {name: a["state"] for name, a in algorithms.items()} == {
        "tokenize": "validated",
        "count_words": "validated",
        "first_sentence": "failed",
        "summarize": "skipped",
    }
    assert "4 of 4 algorithm(s); 2 of 4 algorithm(s) validated (1 skipped: a dependency did not validate)" in (
        broken.message
    )
    assert algorithms["first_sentence"] == {
        "state": "failed",
        "stage": "validate",
        "error": "ValueError: broken on purpose",
    }
    assert "depends on first_sentence" in algorithms["summarize"]["error"]
    for name in TESTS:  # never run against a skipped entrypoint: a test that passed before now fails
        assert broken.outputs["tests"][name]["verdict"] == "violated"
        assert broken.outputs["tests"][name]["reason"] == "failed-that-passed-before"
    assert "algorithm first_sentence failed at validate: ValueError: broken on purpose" in broken.message
    assert broken.outputs["failed"][0].startswith("algorithm first_sentence failed")
    baseline = read_json(ledger_folder(tmp_path / "results") / "baseline.json")
    assert baseline["updated_by"] == "broken" and all(t["set_by"] == "good" for t in baseline["tests"].values())


def test_a_reset_needs_a_reason_and_is_recorded(tmp_path: Path):
    assert run(tmp_path, "before").status == 200
    refused = run(tmp_path, "no-reason", reset_baseline=True)
    assert refused.status == 400 and "a baseline reset needs a reason" in refused.message
    reset = run(tmp_path, "reset", reset_baseline=True, reason="moved to the new cluster")
    assert reset.status == 200 and all(t["verdict"] == "set" for t in reset.outputs["tests"].values())
    folder = ledger_folder(tmp_path / "results")
    (event,) = read_json(folder / "baseline.json")["history"]
    assert (event["run_key"], event["reason"]) == ("reset", "moved to the new cluster")
    assert set(event["previous"]) == set(TESTS)
    assert history(folder)[-1]["reset_reason"] == "moved to the new cluster"
    assert "moved to the new cluster" in (folder / "report.html").read_text()


def test_an_inline_workflow_needs_a_source_and_is_named_after_its_entrypoint(tmp_path: Path):
    inline = read_json(EXAMPLE / "workflow.json")
    del inline["name"]
    missing = run(tmp_path, "inline", workflow=inline)
    assert missing.status == 400 and "parameters.source" in missing.message
    done = run(tmp_path, "inline", workflow=inline, source=str(EXAMPLE))
    assert done.status == 200, done.message
    assert done.outputs["workflow"] == "summarize"
    assert (tmp_path / "results" / "ratchet" / "summarize" / "local" / "baseline.json").exists()


@pytest.mark.parametrize(
    ("parameters", "status", "fragment"),
    [
        ({"workflow": None}, 400, "parameters.workflow: expected {uri: ...} or the workflow itself"),
        ({"workflow": {"uri": "file:///no/such/workflow.json"}}, 404, "no such file or folder"),
        ({"workflow": {"algorithms": []}}, 400, "invalid workflow: algorithms: expected a non-empty list"),
        ({"results_uri": ""}, 400, "parameters.results_uri"),
        ({"tolerance": -1}, 400, "parameters.tolerance"),
        ({"destination": {"kind": "ftp"}}, 400, "destination.kind: expected one of local, http, kfp"),
        ({"destination": {"kind": "local", "rooot": "/x"}}, 400, "expected only kind, name, root; found rooot"),
        (
            {"destination": {"kind": "http", "preset": "oip", "url": "https://x", "token": "secret://t"}},
            424,
            "secret://t: no such secret",
        ),
    ],
)
def test_bad_parameters_fail_before_anything_runs(
    tmp_path: Path, parameters: dict[str, Any], status: int, fragment: str
):
    result = run(tmp_path, "bad", **parameters)
    assert result.status == status and fragment in result.message, result.message
    assert not (tmp_path / "cluster").exists() and not (tmp_path / "results" / "ratchet").exists()


def test_secrets_never_reach_the_result_or_the_files(tmp_path: Path):
    token = "s3cr3t-oip-t0ken"
    workflow = {
        "name": "remote",
        "run_only": True,
        "test_info": {"entrypoint": "count", "tests": [{"name": "t", "payload": {"text": "a b"}, "timeout": 5}]},
        "algorithms": [{"name": "count", "language": "python3", "test_payload": {"text": "x"}}],
    }
    echo = bytes_model(lambda text: text)
    with OipServer({"count": echo}, token_check=lambda t: t == token, preloaded=True) as server:
        # The server echoes the token back in an error: the step must scrub it wherever it writes.
        server.fail_next(1, 500, body={"error": f"upstream refused Bearer {token}"}, path_prefix="/v2/models/count")
        destination = {"kind": "http", "preset": "oip", "url": server.url, "token": "secret://oip-token"}
        port = server.port
        result = run(tmp_path, "remote", {"RELAY_SECRET_OIP_TOKEN": token}, workflow=workflow, destination=destination)
    # The error answer reaches the result only as its status line: neither the echoed token nor any of the body.
    assert result.status == 502 and "HTTP 500 Internal Server Error" in result.message and token not in result.message
    assert token not in json.dumps(result.outputs)
    folder = tmp_path / "results" / "ratchet" / "remote" / f"http-127.0.0.1-{port}"
    for path in folder.iterdir():
        assert token not in path.read_text(), path
    report = read_json(folder / "report.json")
    assert report["destination"]["kind"] == "http" and "token" not in report["destination"]
    assert "upstream refused" not in json.dumps(report) and "HTTP 500" in report["algorithms"][0]["error"]


def test_the_cli_runs_the_step_from_a_spec_file(tmp_path: Path):
    done, result_file = run_example_step(tmp_path, "lab--cli", timeout=60)
    assert done.returncode == 0, done.stderr
    result = read_json(result_file)
    assert result["status"] == 200 and result["outputs"]["destination"] == "local"
    assert history(ledger_folder(tmp_path / "results", tenant="lab"))[0]["run_key"] == "lab--cli"
