"""The example workflow end to end: trigger files on the local stack, the compiled ratchet pipeline on the local
backend, records in the (fake) results bucket. The bar is set, held or tightened, then a slowed and hanging
entrypoint and a broken algorithm fail it, each reported with what still ran.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from pipelines.compile import COMPILED
from tests.integration.conftest import TRIGGERS, relay_stack
from tests.integration.support import RESULTS, eventually, read_record
from tests.pipelines.ratchet.support import EXAMPLE, TESTS, WORKFLOW_NAME, assert_self_contained, variant_source

pytestmark = pytest.mark.integration

FOLDER = f"ratchet/bench/{WORKFLOW_NAME}/local"


def test_the_example_workflow_ratchets_through_the_local_backend(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("ratchet-chain")
    # The example and its variants may be read, and run on the local cluster under the workdir, by this tenant only.
    (workdir / "policy.yaml").write_text(
        "tenants:\n- name: bench\n"
        f"  triggers: [gs://{TRIGGERS}/ratchet/]\n"
        f"  code: ['{EXAMPLE.as_uri()}/', '{workdir.as_uri()}/']\n"
        f"  clusters: [{{kind: local, root: '{(workdir / 'cluster').as_uri()}'}}]\n"
    )
    env = {
        "RELAY_BACKEND": "local",
        "RELAY_CATALOG_URI": str(COMPILED),
        "RELAY_POLICY_URI": str(workdir / "policy.yaml"),
    }
    with relay_stack(workdir, env) as stack:
        storage = stack.storage_client()

        def ratchet(run_key: str, **parameters: Any) -> dict[str, Any]:
            """Upload a trigger and wait for the run's result record."""
            document = {
                "pipeline": "ratchet",
                "run_key": run_key,
                "parameters": {
                    "workflow": {"uri": (EXAMPLE / "workflow.json").as_uri()},
                    "destination": {"kind": "local", "root": str(workdir / "cluster")},
                    **parameters,
                },
            }
            blob = storage.bucket(TRIGGERS).blob(f"ratchet/{run_key}.json")
            blob.upload_from_string(json.dumps(document).encode(), content_type="application/json")
            key = f"bench--{run_key}"  # the caller's key, in its tenant's namespace
            return eventually(lambda: read_record(storage, f"runs/{key}/result.json"), 60, f"{key} to end")

        def stored(name: str) -> bytes:
            return storage.bucket(RESULTS).blob(f"{FOLDER}/{name}").download_as_bytes()

        first = ratchet("ratchet-first")
        assert (first["state"], first["status"]) == ("succeeded", 200), first["message"]
        assert {first["outputs"]["tests"][t]["verdict"] for t in TESTS} == {"set"}
        bars = {t: first["outputs"]["tests"][t]["bar_seconds"] for t in TESTS}
        assert first["outputs"]["report_html"] == f"gs://{RESULTS}/{FOLDER}/report.html"

        second = ratchet("ratchet-second")
        assert second["state"] == "succeeded", second["message"]
        for name in TESTS:
            verdict = second["outputs"]["tests"][name]
            assert verdict["verdict"] in ("ok", "tightened") and verdict["bar_seconds"] <= bars[name]

        started = time.monotonic()
        slow = ratchet("ratchet-slow", source=variant_source(workdir, "slow").as_uri() + "/")
        assert time.monotonic() - started < 40  # the hanging call (60 s) was killed at its 2 s timeout
        assert (slow["state"], slow["status"]) == ("failed", 502)
        short, document = slow["outputs"]["tests"]["short text"], slow["outputs"]["tests"]["document"]
        assert (short["verdict"], short["reason"], short["failed_calls"]) == ("violated", "slower-than-bar", 0)
        assert short["median_seconds"] > short["limit_seconds"]
        assert (document["verdict"], document["reason"]) == ("violated", "failed-that-passed-before")
        assert (document["calls"], document["timed_out_calls"]) == (1, 1)  # not repeated after its timeout
        assert "test short text violated (slower-than-bar): median" in slow["message"]
        assert (
            "test document violated (failed-that-passed-before): 1 of 1 call(s) failed (timed out after 2 s"
            in (slow["message"])
        )
        assert json.loads(stored("baseline.json"))["tests"]["short text"]["bar_seconds"] <= bars["short text"]

        broken = ratchet("ratchet-broken", source=variant_source(workdir, "broken").as_uri() + "/")
        assert (broken["state"], broken["status"]) == ("failed", 502)
        states = {name: a["state"] for name, a in broken["outputs"]["algorithms"].items()}
        assert states == {
            "tokenize": "validated",
            "count_words": "validated",
            "first_sentence": "failed",
            "summarize": "skipped",
        }
        assert broken["outputs"]["failed"][0] == (
            "algorithm first_sentence failed at validate: ValueError: broken on purpose"
        )

        history = [json.loads(line) for line in stored("history.jsonl").decode().splitlines()]
        keys = ["ratchet-first", "ratchet-second", "ratchet-slow", "ratchet-broken"]
        assert [h["run_key"] for h in history] == [f"bench--{key}" for key in keys]
        assert [h["status"] for h in history] == [200, 200, 502, 502]
        report = json.loads(stored("report.json"))
        assert (
            report["run_key"] == "bench--ratchet-broken"
            and report["links"]["history"] == f"gs://{RESULTS}/{FOLDER}/history.jsonl"
        )
        html = stored("report.html").decode()
        assert_self_contained(html)
        assert html.count('<svg class="chart"') == 2 and "ratchet-first" in html and "broken on purpose" in html
        (workdir / "report.html").write_text(html)  # kept with the test's files, for a look
