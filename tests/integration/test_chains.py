"""A chain on the real chain: a trigger file on fake-gcs-server, the real on_object_finalized, the local backend's
kfp.local runner; the first run's end starts the second with a parameter from its output, and the policy's
ceiling ends the chain with a record naming it."""

from __future__ import annotations

import json

import pytest

from relay import naming
from tests.integration.conftest import TRIGGERS, relay_stack
from tests.integration.support import eventually, read_record, wait_for_record

pytestmark = pytest.mark.integration
POLICY = f"""
tenants:
  - name: lab
    triggers: [gs://{TRIGGERS}/chain/]
    max_chain: 1
"""
TRIGGER = {
    "pipeline": "echo",
    "parameters": {"message": "plate 7"},
    # `after: echo`: every echo run of the chain starts the next, a cycle only the policy's max_chain ends.
    "chain": [{"pipeline": "echo", "after": "echo", "parameters": {"message": "then: {outputs.Output}", "count": 2}}],
}


def test_a_succeeded_run_chains_to_a_second_with_its_output_and_the_ceiling_ends_the_chain(
    tmp_path_factory: pytest.TempPathFactory,
):
    workdir = tmp_path_factory.mktemp("chains")
    (workdir / "policy.yaml").write_text(POLICY)
    env = {"RELAY_BACKEND": "local", "RELAY_POLICY_URI": str(workdir / "policy.yaml")}
    with relay_stack(workdir, env) as stack:
        storage = stack.storage_client()
        blob = storage.bucket(TRIGGERS).blob("chain/plate.json")
        blob.upload_from_string(json.dumps(TRIGGER).encode(), content_type="application/json")
        first = naming.derive_run_key("echo", naming.object_identity(TRIGGERS, "chain/plate.json", blob.generation))
        second = f"{first}-then-1"
        ended = wait_for_record(storage, f"runs/{first}/result.json", "succeeded", timeout=90)
        launched = wait_for_record(storage, f"runs/{second}/launch.json", "launched", timeout=60)
        assert launched["parameters"]["message"] == f"then: {ended['outputs']['Output']}"
        assert launched["parameters"]["count"] == 2
        assert (launched["trigger"]["chained_from"], launched["trigger"]["chain_depth"]) == (first, 1)
        chained = eventually(lambda: read_record(storage, f"runs/{first}/chained.json"), what="chained.json")
        assert [link["run_key"] for link in chained["chained"]] == [second]
        done = wait_for_record(storage, f"runs/{second}/result.json", "succeeded", timeout=90)
        assert done["outputs"]["Output"].startswith(f"{second}: then: {first}: plate 7")
        # The second's end would start a third: one past tenants.lab.max_chain, recorded, never launched.
        third = eventually(lambda: read_record(storage, f"rejected/{second}-then-1.json"), timeout=30, what="refusal")
        assert third["error"]["code"] == "chain_failed"
        assert "tenants.lab.max_chain" in third["error"]["problems"][0]["expected"]
        assert read_record(storage, f"runs/{second}-then-1/launch.json") is None
