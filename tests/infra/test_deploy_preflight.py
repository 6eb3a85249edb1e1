"""infra/deploy.sh refuses, before its first side effect and in a dry run as well, a setup that cannot work: every
problem at once, exit 2, no gcloud call. A good setup still deploys what its dry run prints, then says what next."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.support import POLICY, Inputs, compiled_spec, gcloud_commands, run_script
from tests.infra.test_deploy_run import FakeCloud

GOOD = Inputs(step_secrets=("hf-token",), notify_bucket="demo-lab-data", notify_prefix="incoming/")


def _hello_spec() -> str:
    """A pipeline compiled by `kfp dsl compile`, as the README's own example is: no deployment stamped in it."""
    return yaml.safe_dump({"deploymentSpec": {"executors": {"exec-hello": {"container": {"image": "python:3.11"}}}}})


@dataclass(frozen=True)
class Setup:
    expected: tuple[str, ...]  # in stderr, each of them
    args: tuple[str, ...] = ()
    policy: Callable[[dict[str, Any]], None] | str = ""  # edits the good policy, or replaces it
    spec: str = ""  # a second catalog entry
    inputs: Inputs = field(default_factory=lambda: GOOD)


def _bind_hf_token(policy: dict[str, Any]) -> None:
    [tenant] = policy["tenants"]
    tenant["destinations"] = [{"id": "hf-lab", "kind": "huggingface", "namespace": "lab"}]
    tenant["secrets"] = [{"secret": "secret://kaggle-key", "to": "hf-lab", "field": "token"}]


def _cover_nothing(policy: dict[str, Any]) -> None:
    [tenant] = policy["tenants"]
    tenant["triggers"] = ["gs://demo-project-relay-triggers-not/x/"]
    tenant["topics"] = ["projects/demo-project/topics/elsewhere"]
    policy["notifications"] = [{"topic": "projects/demo-project/topics/elsewhere", "buckets": ["demo-lab-data"]}]


BROKEN = {
    "invalid policy": Setup(
        ("tenants[0].name: expected a tenant name", "(policy).tenant: unknown key", "version: expected 1"),
        policy="version: 2\ntenant: []\ntenants:\n  - name: Assay\n",
    ),
    "kfp without a host": Setup(
        ("RELAY_KFP_HOST: expected a value (the KFP API URL) when RELAY_BACKEND=kfp",),
        inputs=Inputs(backend="kfp", step_secrets=("hf-token",), notify_bucket="demo-lab-data"),
    ),
    "no tenant covers the trigger bucket or topic": Setup(
        (
            "no tenant takes triggers from this deployment",
            "gs://demo-project-relay-triggers: no tenant takes trigger files",
            "projects/demo-project/topics/relay-triggers: no tenant takes messages",
        ),
        policy=_cover_nothing,
        args=("--notify-bucket=demo-lab-data",),
        inputs=Inputs(step_secrets=("hf-token",)),
    ),
    "a catalog entry compiled without this policy location": Setup(
        ("hello.yaml: does not name gs://demo-project-relay-catalog/abc123def456/policy.yaml",),
        spec=_hello_spec(),
    ),
    "a bound secret not granted to the steps": Setup(
        ("the secret kaggle-key is bound (tenants infra) but not granted to the steps: expected --step-secret",),
        policy=_bind_hf_token,
    ),
    "a notify bucket not in notifications": Setup(
        ("--notify-bucket other-lab-data: expected under notifications for projects/demo-project/topics/relay-trig",),
        inputs=Inputs(step_secrets=("hf-token",), notify_bucket="other-lab-data"),
    ),
}
EVERYTHING_AT_ONCE = Setup(
    tuple(message for name, s in BROKEN.items() if name in ("kfp without a host", "a bound secret not granted to "
          "the steps", "a catalog entry compiled without this policy location") for message in s.expected),
    policy=_bind_hf_token,
    spec=_hello_spec(),
    inputs=Inputs(backend="kfp", step_secrets=("hf-token",), notify_bucket="demo-lab-data"),
)  # fmt: skip


def _deploy(cloud: FakeCloud, setup: Setup, *mode: str) -> tuple[int, str, str]:
    folder = cloud.catalog.parent
    policy_file = folder / "policy.yaml"
    if isinstance(setup.policy, str) and setup.policy:
        policy_file.write_text(setup.policy)
    else:
        document = yaml.safe_load(POLICY.read_text())
        if callable(setup.policy):
            setup.policy(document)
        policy_file.write_text(yaml.safe_dump(document))
    if setup.spec:
        (cloud.catalog / "hello.yaml").write_text(setup.spec)
    inputs = setup.inputs
    (cloud.catalog / "push.yaml").write_text(compiled_spec(inputs.policy_uri(), inputs.results_uri()))
    args = [a for a in inputs.script_args() if not a.startswith(("--policy=", "--project-number"))]
    args += [f"--policy={policy_file}", f"--catalog-dir={cloud.catalog}", f"--stage={folder / 'stage'}"]
    args += ["--image=europe-west1-docker.pkg.dev/demo-project/relay/steps:abc123def456", *setup.args]
    env = {"PATH": f"{cloud.bin}:{os.environ['PATH']}", "FAKE_GCLOUD_STATE": str(cloud.state)}
    result = run_script(*mode, *args, env=env)
    return result.returncode, result.stdout, result.stderr


@pytest.fixture
def cloud(tmp_path: Path) -> FakeCloud:
    return FakeCloud(tmp_path)


@pytest.mark.parametrize("mode", [("--dry-run",), ()], ids=["dry run", "deploy"])
@pytest.mark.parametrize("setup", [*BROKEN.values(), EVERYTHING_AT_ONCE], ids=[*BROKEN, "everything at once"])
def test_a_setup_that_cannot_work_stops_before_the_first_side_effect(cloud: FakeCloud, setup: Setup, mode: tuple):
    code, stdout, stderr = _deploy(cloud, setup, *mode)
    assert code == 2, stderr
    for message in setup.expected:
        assert message in stderr, stderr
    assert "Traceback" not in stderr
    assert "stopped by the preflight before changing anything" in stderr
    assert not cloud.calls(), "gcloud was called"
    assert not gcloud_commands(stdout), "a plan was printed"
    assert not (cloud.catalog.parent / "stage").exists()


def test_a_good_setup_deploys_what_its_dry_run_prints_and_says_what_next(cloud: FakeCloud):
    good = Setup(())
    code, plan, stderr = _deploy(cloud, good, "--dry-run")
    assert code == 0, stderr
    assert not cloud.calls()
    code, _, stderr = _deploy(cloud, good)
    assert code == 0, stderr
    # The preflight adds no command: the deploy runs one gcloud call per line of the plan (test_deploy_run
    # compares them one by one).
    assert len(cloud.calls()) == len(gcloud_commands(plan))
    # What to export for `relay` and what to try first: as comments closing the plan, and after the deploy.
    exports = [
        "export RELAY_RESULTS_URI=gs://demo-project-relay-results",
        "export RELAY_CATALOG_URI=gs://demo-project-relay-catalog/abc123def456",
        "export RELAY_POLICY_URI=gs://demo-project-relay-catalog/abc123def456/policy.yaml",
        "export RELAY_BACKEND=vertex",
        "export GOOGLE_CLOUD_PROJECT=demo-project",
        "relay validate examples/push.json --bucket demo-project-relay-triggers --name push.json",
    ]
    closing = plan.split("# next steps, once this deploy has run:")[1]
    assert all(line.startswith("#") for line in closing.strip().splitlines())
    for line in exports:
        assert line in closing and line in stderr.split("Next steps:")[1]
