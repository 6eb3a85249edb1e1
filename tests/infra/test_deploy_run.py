"""infra/deploy.sh run for real against a recording stand-in for gcloud: it runs what its dry run prints, and a
second run creates nothing."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.infra.support import Inputs, compiled_spec, dry_run, gcloud_commands, run_script, split_command

INPUTS = Inputs(
    function_secrets={"RELAY_STATIC_TOKEN": ("kfp-token", "latest")},
    step_secrets=("hf-token",),
    notify_bucket="demo-lab-data",
    notify_prefix="incoming/",
)
NUMBER = "123456789012"


class FakeCloud:
    def __init__(self, folder: Path) -> None:
        self.state = folder / "state.json"
        self.bin = folder / "bin"
        self.bin.mkdir()
        shim = self.bin / "gcloud"
        # -I -S: a stand-in started some sixty times a run should start fast.
        fake = Path(__file__).with_name("fake_gcloud.py")
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -I -S "{fake}" "$@"\n')
        shim.chmod(0o755)
        self.catalog = catalog = folder / "catalog"
        catalog.mkdir()
        # deploy.sh's preflight checks that a prebuilt catalog names the policy it publishes beside it.
        (catalog / "push.yaml").write_text(compiled_spec(INPUTS.policy_uri(), INPUTS.results_uri()))
        self.args = [
            *(a for a in INPUTS.script_args() if not a.startswith("--project-number")),
            "--image=europe-west1-docker.pkg.dev/demo-project/relay/steps:abc123def456",
            f"--catalog-dir={catalog}",
            f"--stage={folder / 'stage'}",
        ]

    def run(self, *extra: str) -> list[list[str]]:
        before = len(self.calls())
        env = {"PATH": f"{self.bin}:{os.environ['PATH']}", "FAKE_GCLOUD_STATE": str(self.state)}
        result = run_script(*self.args, *extra, env=env)
        assert result.returncode == 0, result.stderr
        return self.calls()[before:]

    def calls(self) -> list[list[str]]:
        return json.loads(self.state.read_text())["calls"] if self.state.exists() else []


@pytest.fixture
def cloud(tmp_path: Path) -> FakeCloud:
    return FakeCloud(tmp_path)


def _verbs(calls: list[list[str]]) -> list[str]:
    return [" ".join(split_command(call).path) for call in calls]


def test_a_first_run_does_exactly_what_the_dry_run_printed(cloud: FakeCloud):
    ran = cloud.run()
    printed = gcloud_commands(dry_run(*cloud.args))
    found = {
        "PROJECT_NUMBER": NUMBER,
        "EVENTARC_TRIGGER_OF_relay_on_object_finalized": "relay-on-object-finalized-123456",
        "EVENTARC_TRIGGER_OF_relay_on_message_published": "relay-on-message-published-123456",
        "SUBSCRIPTION_OF_relay_on_object_finalized": "eventarc-europe-west1-relay-on-object-finalized-123456-sub-789",
        "SUBSCRIPTION_OF_relay_on_message_published": "eventarc-europe-west1-relay-on-message-published-123456-sub-789",
    }
    expected = []
    for argv in printed:
        line = " ".join(argv)
        for placeholder in sorted(found, key=len, reverse=True):
            line = line.replace(placeholder, found[placeholder])
        expected.append(line)
    assert [" ".join(call) for call in ran] == expected


def test_a_second_run_creates_nothing(cloud: FakeCloud):
    first = _verbs(cloud.run())
    second = _verbs(cloud.run())
    creates = [verb for verb in first if "create" in verb.split()]  # `scheduler jobs create pubsub` too
    # buckets, topics, subscription, accounts, repository, notification, the reconcile schedule, the log-based
    # metrics and the alert policies (infra/monitoring)
    assert len(creates) == 5 + 4 + 1 + 3 + 1 + 1 + 1 + 6 + 5
    assert not [verb for verb in second if "create" in verb.split()]
    # What is idempotent by nature runs again: it puts back anything changed by hand.
    assert second.count("functions deploy") == 4
    assert second.count("pubsub subscriptions update") == 2
    assert second.count("logging metrics update") == 6 and second.count("alpha monitoring policies update") == 5


def test_teardown_removes_it_all_and_a_second_teardown_finds_nothing_to_remove(cloud: FakeCloud):
    cloud.run()
    first = _verbs(cloud.run("--teardown", "--delete-buckets"))
    assert first.count("functions delete") == 4
    assert first.count("scheduler jobs delete") == 1
    assert first.count("storage rm") == 4
    assert first.count("storage buckets notifications delete") == 1
    assert first.count("logging metrics delete") == 6 and first.count("alpha monitoring policies delete") == 5
    state = json.loads(cloud.state.read_text())
    assert not state["notes"]
    # The audit trail stays: its retention policy holds every entry (docs/operations.md, Audit trail).
    assert [thing for thing in state["exists"] if not thing.startswith("image ")] == [
        "storage buckets gs://demo-project-relay-audit"
    ]
    second = _verbs(cloud.run("--teardown", "--delete-buckets"))
    assert not [verb for verb in second if verb.endswith(("delete", "rm"))]


def test_a_catalog_compiled_for_another_policy_is_refused_before_anything_is_published(cloud: FakeCloud):
    older = "gs://demo-project-relay-catalog/older/policy.yaml"
    (cloud.catalog / "push.yaml").write_text(compiled_spec(older, INPUTS.results_uri()))
    env = {"PATH": f"{cloud.bin}:{os.environ['PATH']}", "FAKE_GCLOUD_STATE": str(cloud.state)}
    result = run_script(*cloud.args, env=env)
    assert result.returncode == 2
    assert f"does not name {INPUTS.policy_uri()}: compile it with --policy-uri" in result.stderr
    assert not [verb for verb in _verbs(cloud.calls()) if verb in ("storage rsync", "storage cp", "functions deploy")]


def test_a_pipeline_of_ones_own_joins_the_catalog_the_deploy_compiles_and_publishes(cloud: FakeCloud):
    hello = Path(__file__).resolve().parents[2] / "examples" / "hello" / "hello.py"
    cloud.args = [a for a in cloud.args if not a.startswith("--catalog-dir")]
    ran = cloud.run(f"--pipeline={hello}")
    staged = Path(next(a for a in cloud.args if a.startswith("--stage=")).split("=", 1)[1]) / "catalog"
    assert sorted(p.name for p in staged.iterdir()) == ["hello.yaml", "push.yaml", "ratchet.yaml"]
    spec = (staged / "hello.yaml").read_text()
    assert f"value: {INPUTS.policy_uri()}" in spec and "value: gs://demo-project-relay-results" in spec
    assert "image: europe-west1-docker.pkg.dev/demo-project/relay/steps:abc123def456" in spec
    published = [call[2:4] for call in ran if call[:2] == ["storage", "rsync"]]
    assert published == [[str(staged), "gs://demo-project-relay-catalog/abc123def456"]]


def test_a_pipeline_of_ones_own_with_a_catalog_compiled_elsewhere_is_refused(cloud: FakeCloud):
    env = {"PATH": f"{cloud.bin}:{os.environ['PATH']}", "FAKE_GCLOUD_STATE": str(cloud.state)}
    result = run_script(*cloud.args, "--pipeline=examples/hello/hello.py", env=env)
    assert result.returncode == 2 and "--pipeline joins the catalog compiled here" in result.stderr
    assert not cloud.calls()
