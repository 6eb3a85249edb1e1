"""Runs started on the backend directly, tried as an attacker would: with the real step command and the real task
code, a two-tenant policy (assay and imaging, each with its own data, LIMS and secret), and the deployment's
environment. A run does only what a launch record of the functions says; anything else is refused and recorded
apart, and sends, resolves and writes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pipelines.steps.contract import StepContext, run_step, spec_for
from pipelines.steps.gate import gate_from_env
from pipelines.steps.push import push
from tests.launches import launch
from tests.pipelines.ratchet.support import EXAMPLE
from tests.servers.lims import LimsServer

REPO = Path(__file__).resolve().parents[2]
TOKENS = {"assay": "Bearer assay-canary-3f9a1c", "imaging": "Bearer imaging-canary-8d2e47"}
# A task's function, called as KFP's executor calls it; an exit task also gets the run's final status.
TASK = (
    "import json, sys; from kfp import dsl; from {module} import {function} as task; a = json.load(sys.stdin); "
    "s = a.pop('status', None); task(**a, **({{'status': dsl.PipelineTaskFinalStatus(**s)}} if s else {{}}))"
)


@dataclass
class Deployment:
    """A deployment as its steps see it: the policy beside the catalog, the results location, two tenants."""

    root: Path
    lims: Mapping[str, LimsServer]
    direct_runs: str = ""
    env: dict[str, str] = field(default_factory=dict)

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def catalog(self) -> Path:
        return self.root / "catalog"

    def data(self, tenant: str) -> str:
        return f"{self.root / tenant}/"

    def destination(self, tenant: str) -> dict[str, Any]:
        url = f"{self.lims[tenant].url}/samples/{{name}}"
        return {"kind": "http", "url": url, "headers": {"Authorization": f"secret://{tenant}-token"}}

    def push(self, tenant: str) -> dict[str, Any]:
        """A tenant's own push, as its trigger would ask for it."""
        return {"sources": [self.data(tenant)], "destination": self.destination(tenant)}

    def write_policy(self) -> None:
        tenants = []
        for name in ("assay", "imaging"):
            tenants.append(
                {
                    "name": name,
                    "triggers": [f"gs://triggers/{name}/"],
                    "sources": [Path(self.data(name)).as_uri() + "/"],
                    "destinations": [{"id": "lims", "kind": "http", "url": f"{self.lims[name].url}/samples/"}],
                    "secrets": [{"secret": f"secret://{name}-token", "to": "lims", "field": "headers.Authorization"}],
                    "clusters": [{"id": "local", "kind": "local", "root": (self.root / f"cluster-{name}").as_uri()}],
                    "code": [EXAMPLE.as_uri() + "/"],
                }
            )
        policy: dict[str, Any] = {"version": 1, "tenants": tenants}
        if self.direct_runs:
            policy["direct_runs"] = {"tenant": self.direct_runs}
        self.catalog.mkdir(parents=True, exist_ok=True)
        (self.catalog / "policy.yaml").write_text(json.dumps(policy))
        self.env = {
            **os.environ,
            "RELAY_BACKEND": "local",
            "RELAY_POLICY_URI": str(self.catalog / "policy.yaml"),
            "RELAY_CATALOG_URI": str(self.catalog),
            "RELAY_RESULTS_URI": str(self.results),  # as compiled into the catalog
            "RELAY_LOCAL_ROOT": str(self.root / "local"),
            "RELAY_SECRET_ASSAY_TOKEN": TOKENS["assay"],
            "RELAY_SECRET_IMAGING_TOKEN": TOKENS["imaging"],
        }
        self.env.pop("RELAY_NOTIFY_TOPIC", None)

    def step(self, name: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
        """`python -m pipelines.steps.<name> spec.json result.json`, as someone with the steps' image runs it (a
        push's sources are its spec's inputs)."""
        given = dict(parameters)
        inputs = {"sources": given.pop("sources")} if "sources" in given else {}
        spec = spec_for(inputs=inputs, outputs={}, parameters=given)
        spec_path, result_path = self.root / "spec.json", self.root / "result.json"
        spec_path.write_text(json.dumps(spec.to_json()))
        done = subprocess.run(
            [sys.executable, "-m", f"pipelines.steps.{name}", str(spec_path), str(result_path)],
            cwd=REPO, env=self.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode in (0, 1), done.stderr
        result: dict[str, Any] = json.loads(result_path.read_text())
        return result

    def task(self, function: str, arguments: Mapping[str, Any], module: str = "pipelines.components.push") -> int:
        """A pipeline task's own code (the component function KFP calls), with the arguments a run passes it."""
        done = subprocess.run(
            [sys.executable, "-c", TASK.format(module=module, function=function)],
            input=json.dumps(arguments), cwd=REPO, env=self.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        return done.returncode

    def push_task(self, parameters: Mapping[str, Any], *, run_key: str, tenant: str, run_id: str) -> int:
        arguments = {"select": "", "overwrite": False, **parameters}
        arguments |= {"run_key": run_key, "results_uri": str(self.results), "run_id": run_id, "tenant": tenant}
        return self.task("push_objects", arguments)

    def sent(self) -> dict[str, list[str | None]]:
        """The Authorization each LIMS received, per tenant."""
        return {name: [u.request.header("Authorization") for u in server.uploads] for name, server in self.lims.items()}


@pytest.fixture
def lims() -> Iterator[dict[str, LimsServer]]:
    with LimsServer(TOKENS["assay"]) as assay, LimsServer(TOKENS["imaging"]) as imaging:
        yield {"assay": assay, "imaging": imaging}


def deployment(tmp_path: Path, lims: Mapping[str, LimsServer], direct_runs: str = "") -> Deployment:
    made = Deployment(tmp_path, lims, direct_runs)
    for tenant in ("assay", "imaging"):
        (tmp_path / tenant).mkdir()
        (tmp_path / tenant / f"{tenant}-1.json").write_text(json.dumps({"tenant": tenant}))
    made.write_policy()
    return made


def run_record(deployed: Deployment, run_key: str) -> Path:
    return deployed.results / "runs" / run_key / "result.json"


class RecordingResolver:
    """Resolves every reference, and remembers which were asked for."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def resolve(self, reference: str) -> str:
        self.asked.append(reference)
        return "resolved-" + reference


def test_a_run_that_names_another_tenant_sends_nothing_and_resolves_no_secret(
    tmp_path: Path, lims: dict[str, LimsServer]
):
    deployed = deployment(tmp_path, lims)
    launch(deployed.results, "push", deployed.push("assay"), run_key="assay--nightly", tenant="assay")
    # A genuine key, and a fresh one, each with imaging's tenant, data, LIMS and secret.
    for run_key in ("assay--nightly", "imaging--forged"):
        result = deployed.step("push", {**deployed.push("imaging"), "run_key": run_key, "tenant": "imaging"})
        assert result["status"] == 403 and "policy_denied" in result["message"], result
    assert deployed.sent() == {"assay": [], "imaging": []}
    # In process, with the gate as the step command builds it and a resolver that remembers: never asked.
    resolver = RecordingResolver()
    context = StepContext(resolver=resolver, gate=gate_from_env(deployed.env))
    parameters = {"destination": deployed.destination("imaging"), "run_key": "imaging--forged", "tenant": "imaging"}
    spec = spec_for(inputs={"sources": [deployed.data("imaging")]}, outputs={}, parameters=parameters)
    result = run_step(push, spec, context)
    assert result.status == 403 and resolver.asked == [] and deployed.sent() == {"assay": [], "imaging": []}


def test_a_ratchet_cannot_send_its_baseline_history_and_report_into_the_catalog(
    tmp_path: Path, lims: dict[str, LimsServer]
):
    deployed = deployment(tmp_path, lims)
    given = {"workflow": {"uri": (EXAMPLE / "workflow.json").as_uri()}, "destination": {"kind": "local",
             "root": (tmp_path / "cluster-assay").as_uri()}}  # fmt: skip
    launch(deployed.results, "ratchet", given, run_key="assay--bench", tenant="assay")
    before = sorted(p.relative_to(deployed.catalog) for p in deployed.catalog.rglob("*"))
    for elsewhere in (deployed.catalog, tmp_path / "anywhere"):
        asked = {**given, "run_key": "assay--bench", "tenant": "assay", "results_uri": str(elsewhere)}
        result = deployed.step("ratchet", asked)
        assert result["status"] == 403 and "parameters.results_uri: expected the deployment's" in result["message"]
    assert sorted(p.relative_to(deployed.catalog) for p in deployed.catalog.rglob("*")) == before
    assert not (tmp_path / "anywhere").exists() and not (deployed.results / "ratchet").exists()


def test_a_run_that_takes_another_tenants_key_first_never_keeps_that_run_from_recording_its_result(
    tmp_path: Path, lims: dict[str, LimsServer]
):
    deployed = deployment(tmp_path, lims)
    # Started on the backend before imaging's trigger arrives, with imaging's future run key: refused, its own
    # refusal recorded apart, and its exit task (which runs as the run fails) records nothing in imaging's name.
    forged = deployed.push("assay")
    assert deployed.push_task(forged, run_key="imaging--nightly", tenant="assay", run_id="forged-1") != 0
    status = {"state": "FAILED", "pipeline_job_resource_name": "forged-1", "pipeline_task_name": "push",
              "error_code": 1, "error_message": "push failed"}  # fmt: skip
    finish = {"select": "", "overwrite": False, **forged, "run_key": "imaging--nightly", "tenant": "assay",
              "results_uri": str(deployed.results), "run_id": "forged-1"}  # fmt: skip
    deployed.task("finish_push", {**finish, "status": status}, module="pipelines.components.finish")
    assert not run_record(deployed, "imaging--nightly").exists()
    refusal = json.loads((deployed.results / "refused" / "imaging--nightly" / "forged-1.json").read_text())
    assert refusal["state"] == "refused" and "expected a launch record at" in refusal["message"]
    assert deployed.sent() == {"assay": [], "imaging": []}
    # Imaging's trigger arrives: the functions launch the key, and its run records its own result.
    launch(deployed.results, "push", deployed.push("imaging"), run_key="imaging--nightly", tenant="imaging")
    assert deployed.push_task(deployed.push("imaging"), run_key="imaging--nightly", tenant="imaging", run_id="r-1") == 0
    result = json.loads(run_record(deployed, "imaging--nightly").read_text())
    assert result["state"] == "succeeded" and result["run_id"] == "r-1" and result["metrics"]["files"] == 1
    assert deployed.sent() == {"assay": [], "imaging": [TOKENS["imaging"]]}


@pytest.mark.parametrize(
    "changed",
    [
        {"overwrite": True},
        {"select": "/tenant"},
        {"sources": "both"},
        {"destination": "imaging"},
        {"tenant": "imaging"},
        {"tenant": ""},
        {"unknown": 1},
    ],
)
def test_a_launched_run_with_one_parameter_changed_is_refused_and_the_launched_one_runs(
    tmp_path: Path, lims: dict[str, LimsServer], changed: dict[str, Any]
):
    deployed = deployment(tmp_path, lims)
    launched = deployed.push("assay")
    launch(deployed.results, "push", launched, run_key="assay--nightly", tenant="assay", state="launching")
    genuine = {**launched, "run_key": "assay--nightly", "tenant": "assay"}
    if changed.get("sources") == "both":
        changed = {"sources": [deployed.data("assay"), deployed.data("imaging")]}
    if changed.get("destination") == "imaging":
        changed = {"destination": deployed.destination("imaging")}
    refused = deployed.step("push", {**genuine, **changed})
    assert refused["status"] == 403 and "is not what the functions launched" in refused["message"], refused
    assert deployed.sent() == {"assay": [], "imaging": []}
    done = deployed.step("push", genuine)
    assert done["status"] == 200, done
    assert deployed.sent() == {"assay": [TOKENS["assay"]], "imaging": []}


def test_with_direct_runs_an_operator_acts_as_that_tenant_only_and_records_apart(
    tmp_path: Path, lims: dict[str, LimsServer]
):
    deployed = deployment(tmp_path, lims, direct_runs="assay")
    assert deployed.push_task(deployed.push("assay"), run_key="assay--debug", tenant="assay", run_id="debug-1") == 0
    direct = json.loads((deployed.results / "direct" / "debug-1.json").read_text())
    assert direct["state"] == "succeeded" and direct["run_key"] == "assay--debug"
    assert not run_record(deployed, "assay--debug").exists()  # the key stays free for a real run
    assert deployed.sent() == {"assay": [TOKENS["assay"]], "imaging": []}
    # As imaging: refused, by the task and by the step command alike, and nothing sent.
    assert deployed.push_task(deployed.push("imaging"), run_key="imaging--x", tenant="imaging", run_id="d-2") != 0
    refusal = json.loads((deployed.results / "refused" / "imaging--x" / "d-2.json").read_text())
    assert "parameters.tenant: expected 'assay', the one tenant direct runs act as" in refusal["message"]
    result = deployed.step("push", {**deployed.push("imaging"), "run_key": "imaging--x", "tenant": "imaging"})
    assert result["status"] == 403 and "the one tenant direct runs act as" in result["message"]
    # A direct run cannot take a key the functions launched for another tenant, even with that tenant's name.
    launch(deployed.results, "push", deployed.push("imaging"), run_key="imaging--nightly", tenant="imaging")
    taken = deployed.step("push", {**deployed.push("assay"), "run_key": "imaging--nightly", "tenant": "assay"})
    assert taken["status"] == 403 and "is not what the functions launched" in taken["message"]
    assert deployed.sent() == {"assay": [TOKENS["assay"]], "imaging": []}


def test_without_direct_runs_a_run_with_no_launch_record_only_records_its_refusal(
    tmp_path: Path, lims: dict[str, LimsServer]
):
    deployed = deployment(tmp_path, lims)
    assert deployed.push_task(deployed.push("assay"), run_key="assay--debug", tenant="assay", run_id="debug-1") != 0
    refusal = json.loads((deployed.results / "refused" / "assay--debug" / "debug-1.json").read_text())
    assert refusal["status"] == 403 and "the policy allows no direct runs" in refusal["message"]
    # The refusal, and its entry in the audit trail (relay.audit), which names it and holds nothing else.
    assert [p.name for p in deployed.results.iterdir() if not p.name.startswith(".")] == ["audit", "refused"]
    entries = [json.loads(p.read_bytes()) for p in (deployed.results / "audit").glob("*/*/*.json")]
    assert [(e["op"], e["object"]) for e in entries] == [("write", "refused/assay--debug/debug-1.json")]
    assert deployed.sent() == {"assay": [], "imaging": []}


def test_a_ratchet_that_names_another_tenant_cannot_reset_its_baseline(tmp_path: Path, lims: dict[str, LimsServer]):
    deployed = deployment(tmp_path, lims)
    workflow = {"uri": (EXAMPLE / "workflow.json").as_uri()}
    imaging = {"workflow": workflow, "destination": {"kind": "local", "root": (tmp_path / "cluster-imaging").as_uri()}}
    for run_key in ("imaging--reset", "assay--bench"):
        if run_key == "assay--bench":  # a genuine key of assay's
            launch(deployed.results, "ratchet", {"workflow": workflow}, run_key=run_key, tenant="assay")
        asked = {**imaging, "reset_baseline": True, "reason": "mine now", "run_key": run_key, "tenant": "imaging",
                 "results_uri": str(deployed.results)}  # fmt: skip
        result = deployed.step("ratchet", asked)
        assert result["status"] == 403 and "policy_denied" in result["message"], result
    assert not (deployed.results / "ratchet").exists() and not (tmp_path / "cluster-imaging").exists()
