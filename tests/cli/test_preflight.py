"""relay preflight's core: what a deployment is about to create, against its policy, before any side effect."""

from __future__ import annotations

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
        Deployment(env=ENV, trigger_bucket="other", trigger_topic="projects/p/topics/t", step_secrets=("hf-token",)),
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
