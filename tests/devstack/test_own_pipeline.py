"""docs/own-pipeline.md, end to end: `relay compile` examples/hello with Relay's pipelines, deploy that
catalog with infra/deploy.sh and the recording gcloud, and trigger it on the local stack, where its step records
its result through relay_step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from devstack import demo
from tests.infra.test_deploy_run import INPUTS, FakeCloud, _verbs
from tests.integration.conftest import TRIGGERS, relay_stack
from tests.integration.support import eventually, read_record

pytestmark = pytest.mark.integration

HELLO = demo.EXAMPLES / "hello"
IMAGE = "europe-west1-docker.pkg.dev/demo-project/relay/steps:abc123def456"


def relay(capsys: pytest.CaptureFixture[str], *argv: str, env: dict[str, str] | None = None) -> str:
    from relaycli.main import main

    code = main(list(argv), env=env or {})
    out, err = capsys.readouterr()
    assert code == 0, out + err
    return out


def task_env(spec: Path) -> list[dict[str, str]]:
    executors = yaml.safe_load(spec.read_text())["deploymentSpec"]["executors"]
    return [{e["name"]: e["value"] for e in x["container"]["env"]} | {"image": x["container"]["image"]}
            for x in executors.values()]  # fmt: skip


def test_the_guide_compile_deploy_trigger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    # 3. Let a tenant run it (one policy for both: deploy.sh publishes it, the local stack reads it).
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"tenants:\n- name: lab\n  triggers: [gs://{TRIGGERS}/]\n  pipelines: [push, ratchet, hello]\n")

    # 4. On Google Cloud: compile for the deployment, and deploy.sh publishes exactly that folder.
    (tmp_path / "cloud").mkdir()
    cloud = FakeCloud(tmp_path / "cloud")
    catalog = cloud.catalog
    locations = ["--policy-uri", INPUTS.policy_uri(), "--results-uri", "gs://demo-project-relay-results"]
    relay(capsys, "compile", str(HELLO / "hello.py"), "--out", str(catalog), "--image", IMAGE, "--policy", str(policy),
          *locations)  # fmt: skip
    assert sorted(p.name for p in catalog.iterdir()) == ["hello.yaml", "push.yaml", "ratchet.yaml"]
    for env in task_env(catalog / "hello.yaml"):
        assert env["RELAY_POLICY_URI"] == INPUTS.policy_uri() and env["image"] == IMAGE
        assert env["RELAY_RESULTS_URI"] == "gs://demo-project-relay-results"
    ran = cloud.run()  # exits 0: the old way (kfp dsl compile) was refused here, after the buckets and accounts
    published = [call for call in ran if call[:2] == ["storage", "rsync"]]
    assert [c[2:4] for c in published] == [[str(catalog), "gs://demo-project-relay-catalog/abc123def456"]]
    assert _verbs(ran).count("functions deploy") == 4

    # 2 and 4, locally: the same command without the deployment's locations (make up's runner provides them).
    local = tmp_path / "build" / "catalog"
    relay(capsys, "compile", str(HELLO / "hello.py"), "--out", str(local))
    assert all("RELAY_POLICY_URI" not in env for env in task_env(local / "hello.yaml"))

    # 5. Trigger it: the step checks its launch and records its result in Relay's shape.
    env = {"RELAY_BACKEND": "local", "RELAY_CATALOG_URI": str(local), "RELAY_POLICY_URI": str(policy)}
    with relay_stack(tmp_path / "stack", env) as stack:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", stack.storage_url)  # as in the shell with make up's exports
        out = relay(capsys, "trigger", str(HELLO / "hello.json"), "--bucket", TRIGGERS, "--json", env=stack.env())
        run_key = json.loads(out)["run_key"]
        storage = stack.storage_client()
        result = eventually(lambda: read_record(storage, f"runs/{run_key}/result.json"), 90, f"{run_key} to end")
    text = " ".join(["hello from my own pipeline"] * 3)
    assert (result["state"], result["status"]) == ("succeeded", 200), result["message"]
    assert result["message"] == "said 'hello from my own pipeline' 3 times"
    assert (result["outputs"], result["metrics"]) == ({"text": text}, {"words": 15}), json.dumps(result)
