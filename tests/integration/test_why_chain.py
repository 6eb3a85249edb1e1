"""One trace per trigger and `relay why`, through devstack's real chain: a trigger file in the fake bucket, the real
functions, the local backend's run and its step's result; then the same object announced again by a message."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack import LocalStack
from pipelines.compile import COMPILED
from relay import naming
from relay.adapters.local_backend import LOG_FILE
from relay.trace import TRACE_FIELD, parse_traceparent
from relaycli.main import main
from relaycli.outcome_log import outcome_lines
from tests.integration.conftest import PROJECT, TOPIC, TRIGGERS, relay_stack
from tests.integration.support import eventually, wait_for_outcome, wait_for_record

pytestmark = pytest.mark.integration
LAB, ML = "lab-data", "ml-data"
TOPIC_PATH = f"projects/{PROJECT}/topics/{TOPIC}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    workdir = tmp_path_factory.mktemp("why-chain")
    policy_file = workdir / "policy.yaml"
    tenant = {
        "name": "lab",
        "triggers": [f"gs://{TRIGGERS}/push/"],
        "topics": [TOPIC_PATH],
        "sources": [f"gs://{LAB}/"],
        "destinations": [{"id": "ml-data", "kind": "gcs", "bucket": ML}],
    }
    policy_file.write_text(yaml.safe_dump({"version": 1, "tenants": [tenant]}))
    env = {"RELAY_BACKEND": "local", "RELAY_CATALOG_URI": str(COMPILED), "RELAY_POLICY_URI": str(policy_file)}
    with relay_stack(workdir, env, buckets=[LAB, ML]) as running:
        yield running


def test_one_trace_from_the_event_to_the_step_and_why_tells_the_whole_story(
    stack: LocalStack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    storage = stack.storage_client()
    storage.bucket(LAB).blob("assay/plate-1.json").upload_from_string(json.dumps({"plate": 1}))
    document = {
        "pipeline": "push",
        "parameters": {"sources": [f"gs://{LAB}/assay/"], "destination": {"kind": "gcs", "bucket": ML}},
    }
    blob = storage.bucket(TRIGGERS).blob("push/traced.json")
    blob.upload_from_string(json.dumps(document), content_type="application/json")
    uri = f"gs://{TRIGGERS}/push/traced.json"
    key = naming.derive_run_key("push", naming.object_identity(TRIGGERS, "push/traced.json", int(blob.generation)))
    launch = wait_for_record(storage, f"runs/{key}/launch.json", "launched")
    result = wait_for_record(storage, f"runs/{key}/result.json", "succeeded", timeout=90)
    line = wait_for_outcome(stack.object_finalized.process.log_path, uri, "launched")

    # One trace id in the function's line, the launch record and the step's result; each its own span.
    launched, stepped = parse_traceparent(launch["trigger"]["traceparent"]), parse_traceparent(result["traceparent"])
    assert launched is not None and stepped is not None
    assert line["trace_id"] == launched.trace_id == stepped.trace_id
    assert line[TRACE_FIELD] == f"projects/{PROJECT}/traces/{launched.trace_id}"  # the notify topic's project
    assert line["logging.googleapis.com/spanId"] == launched.span_id != stepped.span_id
    # The step's own lines, in the runner's log (kfp.local indents a task's output), carry the same trace.
    runner_log = Path(stack.function_env["RELAY_LOCAL_ROOT"]) / key / LOG_FILE
    texts = [text.strip() for text in runner_log.read_text().splitlines()]
    step_lines = [json.loads(text) for text in texts if text.startswith('{"severity"')]
    assert {entry.get("trace_id") for entry in step_lines if "step started" in entry.get("message", "")} == {
        launched.trace_id
    }

    # The same object announced again by a message: a duplicate, answered by the other entry point.
    stack.publish(TOPIC, b"", {"trigger_uri": f"{uri}#{blob.generation}"})
    duplicate = eventually(
        lambda: [e for e in outcome_lines(stack.message_published.process.log_path) if e["run_key"] == key] or None,
        timeout=20,
        what="the message's duplicate line",
    )
    assert duplicate[-1]["outcome"] == "duplicate"

    # `relay why` as a user with the stack's exports runs it (RELAY_LOGS among them: the functions' log files).
    env = stack.env()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", env["STORAGE_EMULATOR_HOST"])  # read by the storage adapter
    code = main(["why", uri, "--json"], env=env)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    story: dict[str, Any] = json.loads(captured.out)
    assert story["run_keys"] == [key] and story["states"] == {key: "succeeded"}
    told = [(step["what"], step["source"]) for step in story["steps"]]
    recorded = ["event", "tenant", "policy", "claim", "launched", "succeeded"]
    assert {(what, "record") for what in recorded} | {("launched", "log"), ("duplicate", "log")} <= set(told)
    assert told.index(("claim", "record")) < told.index(("launched", "record")) < told.index(("succeeded", "record"))
    assert story["traces"][0]["trace_id"] == launched.trace_id
    assert story["traces"][0]["url"].endswith(f"project={PROJECT}&tid={launched.trace_id}")
