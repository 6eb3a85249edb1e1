"""relay preflight's core: what a deployment is about to create, against its policy, before any side effect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relaycli.main import main
from relaycli.next_steps import next_steps
from relaycli.preflight import Deployment, preflight

PROJECT = "demo-project"
ENV = {
    "RELAY_BACKEND": "kfp",
    "RELAY_KFP_HOST": "https://kfp.example.com",
    "RELAY_RESULTS_URI": "gs://demo-project-relay-results",
    "RELAY_POLICY_URI": "gs://demo-project-relay-catalog/v1/policy.yaml",
}
DEPLOYMENT = Deployment(
    env=ENV,
    trigger_bucket="demo-project-relay-triggers",
    trigger_topic=f"projects/{PROJECT}/topics/relay-triggers",
    step_secrets=("hf-token",),
    pipelines_account="relay-pipelines@demo-project.iam.gserviceaccount.com",
)
POLICY = b"""
version: 1
tenants:
  - name: assay
    triggers: [gs://demo-project-relay-triggers/assay/]
    topics: [projects/demo-project/topics/relay-triggers]
    sources: [gs://lab-data/assay/]
    destinations:
      - {id: out, kind: gcs, bucket: ml-data, prefix: assay}
      - {id: hf, kind: huggingface, namespace: lab}
    secrets:
      - {secret: secret://hf-token, to: hf, field: token}
notifications:
  - {topic: projects/demo-project/topics/relay-triggers, buckets: [lab-data]}
"""


def _spec(policy_uri: str) -> bytes:
    return f"""deploymentSpec:
  executors:
    exec-push:
      container:
        env:
        - {{name: RELAY_POLICY_URI, value: "{policy_uri}"}}
        - {{name: RELAY_RESULTS_URI, value: gs://demo-project-relay-results}}
""".encode()


def test_a_good_deployment_passes_and_lists_the_grants_it_leaves_to_the_operator():
    report = preflight(DEPLOYMENT, (POLICY, "policy.yaml"), {"push.yaml": _spec(ENV["RELAY_POLICY_URI"])})
    assert report.ok and not report.warnings, report
    member = "--member=serviceAccount:relay-pipelines@demo-project.iam.gserviceaccount.com"
    assert [line.split("  #")[0] for line in report.todo] == [
        f"gcloud storage buckets add-iam-policy-binding gs://lab-data {member} --role=roles/storage.objectViewer",
        f"gcloud storage buckets add-iam-policy-binding gs://ml-data {member} --role=roles/storage.objectUser",
    ]


def test_an_invalid_policy_lists_every_problem_without_a_traceback():
    report = preflight(DEPLOYMENT, (b"version: 2\ntenants: [{name: Bad}]\nextra: 1\n", "policy.yaml"))
    assert len(report.problems) == 3
    assert all(p.startswith("policy.yaml: ") for p in report.problems)


def test_the_settings_are_the_functions_own_check_and_secrets_stand_in_by_name():
    env = {**ENV, "RELAY_AUTH": "static"}
    del env["RELAY_KFP_HOST"]
    report = preflight(Deployment(env=env), None)
    assert report.problems == (
        "settings: RELAY_KFP_HOST: expected a value (the KFP API URL) when RELAY_BACKEND=kfp, found nothing",
        "settings: RELAY_STATIC_TOKEN: expected a value when RELAY_AUTH=static, found nothing",
    )
    given = preflight(
        Deployment(env={**ENV, "RELAY_AUTH": "static"}, secrets={"RELAY_STATIC_TOKEN": "kfp-token"}), None
    )
    assert given.ok


def test_a_spec_compiled_for_another_policy_or_by_kfp_alone_is_a_problem():
    catalog = {"push.yaml": _spec("gs://demo-project-relay-catalog/v0/policy.yaml"), "hello.yaml": b"{}\n"}
    problems = preflight(DEPLOYMENT, (POLICY, "policy.yaml"), catalog).problems
    assert problems[0].startswith("hello.yaml: expected a compiled pipeline spec")
    assert problems[1].startswith(f"push.yaml: does not name {ENV['RELAY_POLICY_URI']}: compile it with --policy-uri")


def test_a_bound_secret_must_be_granted_and_a_granted_one_bound():
    report = preflight(
        Deployment(env=ENV, trigger_bucket=DEPLOYMENT.trigger_bucket, step_secrets=("kaggle-key",)),
        (POLICY, "policy.yaml"),
    )
    [problem] = report.problems
    assert "the secret hf-token is bound (tenants assay) but not granted" in problem
    assert any("--step-secret kaggle-key: granted to the steps, but no tenant binds it" in w for w in report.warnings)


def test_origins_no_tenant_covers_warn_alone_and_stop_the_deploy_together():
    one = preflight(
        Deployment(env=ENV, trigger_bucket="other", trigger_topic=DEPLOYMENT.trigger_topic, step_secrets=("hf-token",)),
        (POLICY, "p"),
    )
    assert one.ok and [w.split(":")[0] for w in one.warnings] == ["gs"]
    both = preflight(
        Deployment(
            env=ENV, trigger_bucket="other", trigger_topic="projects/proj-p/topics/tee", step_secrets=("hf-token",)
        ),
        (POLICY, "p"),
    )
    [problem] = both.problems
    assert problem.startswith("p: no tenant takes triggers from this deployment")


def test_a_notify_bucket_must_be_wired_to_the_trigger_topic():
    listed = preflight(Deployment(**{**DEPLOYMENT.__dict__, "notify_buckets": ("lab-data",)}), (POLICY, "p"))
    assert listed.ok
    unlisted = preflight(Deployment(**{**DEPLOYMENT.__dict__, "notify_buckets": ("other-data",)}), (POLICY, "p"))
    [problem] = unlisted.problems
    assert problem.startswith("--notify-bucket other-data: expected under notifications for projects/demo-project")


def test_the_next_steps_export_the_functions_settings_and_send_a_first_trigger_where_a_tenant_takes_it():
    report = preflight(DEPLOYMENT, (POLICY, "policy.yaml"))
    steps = next_steps(DEPLOYMENT, report.policy, report.todo)
    assert "   export RELAY_POLICY_URI=gs://demo-project-relay-catalog/v1/policy.yaml" in steps
    assert "   export GOOGLE_CLOUD_PROJECT=demo-project" in steps
    name = "--bucket demo-project-relay-triggers --name assay/push.json"
    assert f"   relay validate examples/push.json {name}" in steps
    assert f"   relay trigger examples/push.json {name}" in steps
    topic_only = Deployment(env=ENV, trigger_bucket="other", trigger_topic=DEPLOYMENT.trigger_topic)
    sent = next_steps(topic_only, report.policy, ())
    assert f"   relay publish examples/push.json --topic {DEPLOYMENT.trigger_topic}" in sent
    assert '   relay validate --policy "$RELAY_POLICY_URI"' in next_steps(DEPLOYMENT, None, ())


def test_relay_preflight_exits_2_with_every_problem_and_answers_json(tmp_path: Path, capsys: pytest.CaptureFixture):
    policy = tmp_path / "policy.yaml"
    policy.write_bytes(POLICY)
    args = ["preflight", f"--policy={policy}", "--backend=kfp", "--trigger-bucket=demo-project-relay-triggers"]
    args += [f"--env={name}={value}" for name, value in ENV.items() if name != "RELAY_KFP_HOST"]
    assert main([*args, "--json"], env={}) == 2
    answer = json.loads(capsys.readouterr().out)
    assert answer["ok"] is False and len(answer["problems"]) == 2  # the host, the secret not granted
    assert main([*args, "--env=RELAY_KFP_HOST=https://kfp.example.com", "--step-secret=hf-token"], env={}) == 0
    assert capsys.readouterr().out.startswith("preflight: ok (0 problems, 0 warnings)")
