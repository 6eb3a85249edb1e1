"""infra/deploy.sh without a cloud: what its dry run prints, what it refuses, what it stages."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from relay.config import Settings, parse_duration
from relaycli.monitoring import alerts, values_for
from tests.infra.support import (
    DEPLOY,
    POLICY,
    ROOT,
    Binding,
    Inputs,
    command_lines,
    compiled_spec,
    dry_run,
    from_script,
    gcloud_commands,
    run_script,
    split_command,
)
from tests.infra.tools import shellcheck

FULL = Inputs(
    function_secrets={"RELAY_STATIC_TOKEN": ("kfp-token", "latest")},
    step_secrets=("hf-token", "kaggle-key"),
    notify_bucket="demo-lab-data",
    notify_prefix="incoming/",
)
KFP = Inputs(
    backend="kfp",
    settings={"RELAY_KFP_HOST": "https://kfp.example.com", "RELAY_KFP_AUDIENCE": "123-abc.apps.googleusercontent.com"},
)


def test_the_script_is_shellcheck_clean():
    result = subprocess.run([shellcheck(), "--severity=style", str(DEPLOY)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_the_script_is_executable_and_strict():
    assert DEPLOY.stat().st_mode & stat.S_IXUSR
    assert "\nset -euo pipefail\n" in DEPLOY.read_text()


def test_a_dry_run_runs_nothing(tmp_path: Path):
    # Every command the script could run is on PATH as a recorder: none may be called, but for the preflight,
    # which only reads files, and the monitoring renderer, which without a staging folder only names its files
    # (python3 runs them for real; anything else it is asked to run is recorded and fails).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    for name in ("gcloud", "gsutil", "python3", "git", "cp", "find", "mktemp", "rm"):
        tool = bin_dir / name
        preflight = (
            f'case "$*" in "-m relaycli.preflight "*|"-m relaycli.monitoring "*) exec {sys.executable} "$@";; esac\n'
        )
        tool.write_text(f'#!/bin/sh\n{preflight if name == "python3" else ""}echo "{name} $*" >> {calls}\nexit 1\n')
        tool.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHON": str(bin_dir / "python3")}
    for args in (FULL.script_args(), ["--teardown", "--delete-buckets", *FULL.script_args()]):
        result = run_script("--dry-run", *args, env=env)
        assert result.returncode == 0, result.stderr
    assert not calls.exists(), calls.read_text()


@pytest.mark.parametrize("inputs", [FULL, KFP], ids=["vertex", "kfp"])
def test_every_create_is_guarded_by_a_look_first(inputs: Inputs):
    """Re-running changes nothing: creates only run when a describe failed; the rest is idempotent by nature."""
    for line in dry_run(*inputs.script_args()).splitlines():
        if line.startswith("#") or not line.strip():
            continue
        commands = command_lines(line)  # a condition's own || is quoted: only the shell's splits
        if len(commands) == 2:
            probe, action = commands
            assert split_command(probe[1:]).path[-1] == "describe", line
            verb = split_command(action[1:]).path
            assert verb[-1] in ("create", "submit") or verb[-2] == "create", line  # `jobs create pubsub` too
            if action[1:3] != ["builds", "submit"]:  # the image's probe names the tag the build pushes
                assert _resource(probe) == _resource(action), f"the probe looks at another resource: {line}"
        else:
            [argv] = commands
            if argv[0] != "gcloud":
                continue
            path = split_command(argv[1:]).path
            # Notifications and alert policies have no name to describe: a listing before each looks first.
            assert path[-1] != "create" or path[-2] in ("notifications", "policies"), f"an unguarded create: {line}"


def _resource(argv: list[str]) -> str:
    """The resource a command names: a bucket without gs://, a service account by its id."""
    return split_command(argv[1:]).positionals[0].removeprefix("gs://").split("@")[0]


def test_an_alert_policy_is_created_only_after_a_look_for_its_display_name():
    lines = dry_run(*FULL.script_args()).splitlines()
    creates = [i for i, line in enumerate(lines) if "monitoring policies create" in line]
    names = [policy["displayName"] for policy in alerts(values_for(FULL.prefix), [])]
    assert len(creates) == len(names) == 5
    for i, name in zip(creates, names, strict=True):
        [argv] = command_lines(lines[i - 1])
        assert argv[1:5] == ["alpha", "monitoring", "policies", "list"], lines[i - 1]
        assert f'--filter=displayName="{name}"' in argv
        assert (
            split_command(command_lines(lines[i])[0][1:])
            .flags["policy-from-file"]
            .endswith(f"/{creates.index(i) + 1}.json")
        )


def test_a_notification_is_created_only_when_none_like_it_exists():
    lines = dry_run(*FULL.script_args()).splitlines()
    [create] = [i for i, line in enumerate(lines) if "notifications create" in line]
    assert "notifications list gs://demo-lab-data" in lines[create - 1]
    # deploy.sh compares the listing's topic and prefix (columns 2 and 3) with these.
    assert "--topic=projects/demo-project/topics/relay-triggers" in lines[create]
    assert "--object-prefix=incoming/" in lines[create]
    assert "--skip-topic-setup" in lines[create]


def test_the_functions_get_what_relay_needs_and_nothing_else():
    system = from_script(dry_run(*FULL.script_args()))
    finalized = system.functions["relay-on-object-finalized"]
    published = system.functions["relay-on-message-published"]
    assert finalized["trigger"] == ("google.cloud.storage.object.v1.finalized", "demo-project-relay-triggers")
    assert published["trigger"] == (
        "google.cloud.pubsub.topic.v1.messagePublished",
        "projects/demo-project/topics/relay-triggers",
    )
    for function in (finalized, published):
        assert function["retry"] is True
        assert function["timeout"] == 540
        assert function["ingress"] == "ALLOW_INTERNAL_ONLY"
        assert function["service_account"] == "relay-functions@demo-project.iam.gserviceaccount.com"
        assert function["trigger_service_account"] == "relay-trigger@demo-project.iam.gserviceaccount.com"
        assert function["secrets"] == {"RELAY_STATIC_TOKEN": "kfp-token:latest"}
        assert function["env"]["RELAY_CATALOG_URI"] == "gs://demo-project-relay-catalog/abc123def456"
        assert function["env"]["RELAY_POLICY_URI"] == "gs://demo-project-relay-catalog/abc123def456/policy.yaml"
        assert not any("TOKEN" in name for name in function["env"]), "credentials travel as secrets only"


@pytest.mark.parametrize("inputs", [FULL, KFP], ids=["vertex", "kfp"])
def test_the_function_settings_are_ones_relay_accepts(inputs: Inputs):
    [function, *_] = from_script(dry_run(*inputs.script_args())).functions.values()
    env = dict(function["env"])
    env.update(dict.fromkeys(function["secrets"], "a-secret-value"))
    settings = Settings.from_env(env)  # raises ConfigError listing every problem
    assert settings.backend == inputs.backend
    # A crashed claim must outlive the function that holds it, or a redelivery could submit a second run.
    assert settings.claim_lease > function["timeout"]


def test_the_timeout_stays_below_the_default_claim_lease():
    assert parse_duration("10m") == Settings.claim_lease > 540


def test_every_relay_setting_is_settable_derived_or_secret():
    """Each RELAY_* variable relay/config.py reads has a place in the script, and Terraform allows the same ones."""
    read = set(
        re.findall(r'(?:get|required|choice|duration)\("([A-Z_]+)"', (ROOT / "functions/relay/config.py").read_text())
    )
    script = DEPLOY.read_text()
    classified: dict[str, set[str]] = {}
    for group in ("SETTABLE", "DERIVED", "SECRET_ONLY", "LOCAL_ONLY"):
        body = re.search(rf"^{group}=\(([^)]*)\)", script, re.M)
        assert body, group
        classified[group] = set(body.group(1).split())
    # The steps read RELAY_POLICY_URI (compiled into the catalog); the functions' config may not read it yet.
    assert set().union(*classified.values()) - {f"RELAY_{name}" for name in read} <= {"RELAY_POLICY_URI"}
    assert {f"RELAY_{name}" for name in read} <= set().union(*classified.values())
    variables = (ROOT / "infra/terraform/variables.tf").read_text()
    allowed = re.search(r'variable "relay_settings".*?contains\(\[(.*?)\]', variables, re.S)
    assert allowed
    assert set(re.findall(r'"(RELAY_[A-Z_]+)"', allowed.group(1))) == classified["SETTABLE"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prefix=Relay"], "--prefix"),
        (["--prefix=a-prefix-that-is-too-long"], "--prefix"),
        (["--backend=local"], "--backend"),
        (["--env=RELAY_STATIC_TOKEN=abc"], "is a credential"),
        (["--env=RELAY_RESULTS_URI=gs://elsewhere"], "follows from this deployment"),
        (["--env=RELAY_NOT_A_SETTING=1"], "not a Relay function setting"),
        (["--env=RELAY_LOCAL_ROOT=/tmp/x"], "not on Google Cloud"),
        (["--env=RELAY_KFP_HOST=https://a,b"], "comma"),
        (["--secret=token"], "--secret"),
        (["--max-delivery-attempts=3"], "5 to 100"),
        (["--notify-prefix=x/"], "needs --notify-bucket"),
        (["--catalog-dir=x", "--catalog-uri=gs://y"], "not both"),
        (["--catalog-uri=gs://y"], "not both"),
        (["--policy=no/such/policy.yaml"], "--policy: no file"),
        (["--records-retention=6d"], "7d to 90d"),
        (["--records-retention=30"], "7d to 90d"),
        (["--audit-retention=0d"], "1d to 36500d"),
        (["--audit-retention=1y"], "1d to 36500d"),
        (["--unknown"], "unknown option"),
    ],
)
def test_it_refuses_what_cannot_work(args: list[str], message: str):
    result = run_script("--dry-run", "--project=demo-project", "--version=v1", f"--policy={POLICY}", *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_a_published_catalog_needs_a_policy():
    result = run_script("--dry-run", "--project=demo-project", "--version=v1")
    assert result.returncode == 2
    assert "--policy is required" in result.stderr
    # Teardown and the dead-letter step publish nothing.
    for mode in ("--teardown", "--dead-letter-only"):
        assert run_script("--dry-run", "--project=demo-project", mode).returncode == 0


def test_the_records_retention_is_the_results_buckets_soft_delete():
    def soft_delete(inputs: Inputs) -> dict[str, set[str]]:
        buckets = from_script(dry_run(*inputs.script_args())).buckets
        return {bucket: {p for p in props if p.startswith("soft-delete")} for bucket, props in buckets.items()}

    kept = soft_delete(Inputs(records_retention_days=30))
    assert kept.pop("demo-project-relay-results") == {"soft-delete=2592000"}
    assert not any(kept.values()), "records only"
    assert not any(soft_delete(Inputs()).values()), "left alone unless asked"
    # A retention policy or a default event-based hold would refuse the overwrites records need: only the audit
    # trail's bucket, whose entries are never overwritten, has one.
    buckets = from_script(dry_run(*Inputs(records_retention_days=30).script_args())).buckets
    assert [b for b, props in buckets.items() if any(p.startswith("retention") for p in props)] == [
        "demo-project-relay-audit"
    ]
    assert "--default-event-based-hold" not in DEPLOY.read_text()


def test_the_audit_trail_is_only_created_in_and_kept_by_a_retention_policy_locked_only_when_asked():
    audit = "demo-project-relay-audit"
    system = from_script(dry_run(*FULL.script_args()))
    fn = "serviceAccount:relay-functions@demo-project.iam.gserviceaccount.com"
    pipelines = "serviceAccount:relay-pipelines@demo-project.iam.gserviceaccount.com"
    # objectCreator creates and cannot delete, so cannot overwrite; objectViewer reads, to seal.
    assert {(b.member, b.role, b.condition) for b in system.bindings if b.resource == audit} == {
        (fn, "roles/storage.objectCreator", None),
        (fn, "roles/storage.objectViewer", None),
        (pipelines, "roles/storage.objectCreator", None),
        (pipelines, "roles/storage.objectViewer", None),
    }
    assert {p for p in system.buckets[audit] if p.startswith("retention")} == {f"retention={365 * 86400}"}
    locked = from_script(dry_run(*Inputs(audit_retention_days=2555, lock_audit_retention=True).script_args()))
    assert {p for p in locked.buckets[audit] if p.startswith("retention")} == {
        f"retention={2555 * 86400}",
        "retention-locked",
    }
    # The functions and the steps append to it: the functions by their setting, the steps by the image's.
    for function in system.functions.values():
        assert function["env"]["RELAY_AUDIT_URI"] == f"gs://{audit}"
    assert f"_RELAY_AUDIT_URI=gs://{audit}" in dry_run(*Inputs().script_args())
    # A teardown keeps it, even asked to delete the buckets: its retention refuses.
    teardown = dry_run("--teardown", "--delete-buckets", *Inputs().script_args())
    assert f"rm --recursive --all-versions gs://{audit}" not in teardown


def _objects(bucket: str, *prefixes: str) -> str:
    """The condition for these prefixes; one with a * is a name's beginning and end (runs/*/result.json)."""
    names = [
        f'resource.name.startsWith("projects/_/buckets/{bucket}/objects/{p}")'
        if "*" not in p
        else f'(resource.name.startsWith("projects/_/buckets/{bucket}/objects/{p.split("*")[0]}") && '
        f'resource.name.endsWith("{p.split("*")[1]}"))'
        for p in prefixes
    ]
    return " || ".join(names)


def test_the_accounts_write_records_only_under_their_prefixes_and_never_the_catalog():
    system = from_script(dry_run(*FULL.script_args()))
    results, catalog = "demo-project-relay-results", "demo-project-relay-catalog"
    fn = "serviceAccount:relay-functions@demo-project.iam.gserviceaccount.com"
    pipelines = "serviceAccount:relay-pipelines@demo-project.iam.gserviceaccount.com"
    on_results = {b for b in system.bindings if b.resource == results}
    assert on_results == {
        Binding("bucket", results, fn, "roles/storage.objectUser",
                ("Relay functions: runs and rejected records", _objects(results, "runs/", "rejected/"))),
        # The steps create results, refusals and direct runs' results, and only read launch records: they can
        # never write the proof that the functions launched a run.
        Binding("bucket", results, pipelines, "roles/storage.objectCreator",
                ("Relay pipelines: create results and refusals",
                 _objects(results, "runs/*/result.json", "refused/", "direct/"))),
        Binding("bucket", results, pipelines, "roles/storage.objectViewer",
                ("Relay pipelines: read launch records", _objects(results, "runs/*/launch.json"))),
        Binding("bucket", results, pipelines, "roles/storage.objectUser",
                ("Relay pipelines: the ratchet ledger", _objects(results, "ratchet/"))),
    }  # fmt: skip
    assert {(b.member, b.role, b.condition) for b in system.bindings if b.resource == catalog} == {
        (fn, "roles/storage.objectViewer", None),
        (pipelines, "roles/storage.objectViewer", None),
    }
    assert "versioning" in system.buckets[catalog] and "versioning" in system.buckets[results]
    # What earlier deployments granted on the whole results bucket is taken back, and nothing else.
    assert system.revoked == {
        Binding("bucket", results, fn, "roles/storage.objectUser"),
        Binding("bucket", results, pipelines, "roles/storage.objectUser"),
        Binding("bucket", results, pipelines, "roles/storage.objectCreator",
                ("Relay pipelines: create run records", _objects(results, "runs/"))),
    }  # fmt: skip


def test_every_bucket_binding_names_its_condition():
    """gcloud refuses, without a prompt, a binding without --condition on a policy that has conditional ones."""
    for args in (FULL.script_args(), ["--teardown", *FULL.script_args()]):
        for argv in gcloud_commands(dry_run(*args)):
            if argv[:2] == ["storage", "buckets"] and argv[2].endswith("iam-policy-binding"):
                assert split_command(argv).flags.get("condition"), " ".join(argv)


def test_it_needs_a_project():
    result = run_script("--dry-run", "--version=v1")
    assert result.returncode == 2
    assert "--project" in result.stderr


def test_settings_come_from_the_environment_too():
    output = dry_run(
        "--version=v1",
        env={
            "GOOGLE_CLOUD_PROJECT": "env-project",
            "GOOGLE_CLOUD_REGION": "us-central1",
            "DEPLOY_PREFIX": "relay2",
            "RELAY_BACKEND": "kfp",
            "RELAY_KFP_HOST": "https://kfp.example.com",
            "DEPLOY_SECRETS": "RELAY_STATIC_TOKEN=kfp-token",
            "DEPLOY_STEP_SECRETS": "hf-token",
            "DEPLOY_POLICY": str(POLICY),
        },
    )
    function = from_script(output).functions["relay2-on-object-finalized"]
    assert function["region"] == "us-central1"
    assert function["env"]["RELAY_KFP_HOST"] == "https://kfp.example.com"
    assert function["env"]["RELAY_BACKEND"] == "kfp"
    assert function["secrets"] == {"RELAY_STATIC_TOKEN": "kfp-token:latest"}
    assert "gcloud secrets add-iam-policy-binding hf-token --project=env-project" in output
    assert "# settings taken from the environment: RELAY_KFP_HOST" in output


def test_image_and_catalog_from_elsewhere_are_used_as_given():
    image = "europe-west1-docker.pkg.dev/demo-project/relay/steps:abc1234"
    output = dry_run("--project=demo-project", f"--image={image}", "--catalog-uri=gs://elsewhere/catalog/abc1234")
    assert "builds submit" not in output and "relaycli.main compile" not in output and "rsync" not in output
    assert "storage cp" not in output
    [function, *_] = from_script(output).functions.values()
    assert function["env"]["RELAY_CATALOG_URI"] == "gs://elsewhere/catalog/abc1234"
    assert function["env"]["RELAY_POLICY_URI"] == "gs://elsewhere/catalog/abc1234/policy.yaml"


def test_the_catalog_is_compiled_for_the_policy_published_beside_it():
    output = dry_run(*FULL.script_args())
    [compile_line] = [line for line in output.splitlines() if "relaycli.main compile" in line]
    [argv] = command_lines(compile_line)
    assert argv[argv.index("--policy") + 1] == str(POLICY)  # its task resources
    assert argv[argv.index("--policy-uri") + 1] == "gs://demo-project-relay-catalog/abc123def456/policy.yaml"
    assert argv[argv.index("--results-uri") + 1] == "gs://demo-project-relay-results"
    assert argv[argv.index("--out") + 1] == "STAGING_DIR/catalog"
    publish = [c for c in gcloud_commands(output) if c[:2] in (["storage", "rsync"], ["storage", "cp"])]
    assert [split_command(c).positionals for c in publish] == [
        ("STAGING_DIR/catalog", "gs://demo-project-relay-catalog/abc123def456"),
        (str(POLICY), "gs://demo-project-relay-catalog/abc123def456/policy.yaml"),
    ]


def test_pipelines_of_ones_own_are_compiled_into_the_catalog_the_deploy_publishes():
    output = dry_run(*FULL.script_args(), "--pipeline=examples/hello/hello.py", "--pipeline=mine.yaml")
    [compile_line] = [line for line in output.splitlines() if "relaycli.main compile" in line]
    [argv] = command_lines(compile_line)
    assert argv[-2:] == ["examples/hello/hello.py", "mine.yaml"]
    assert argv[argv.index("--out") + 1] == "STAGING_DIR/catalog"


def test_a_built_catalog_is_published_without_compiling(tmp_path: Path):
    # The preflight reads it, in a dry run too: it must be there, compiled for this deployment.
    (tmp_path / "push.yaml").write_text(compiled_spec(FULL.policy_uri(), FULL.results_uri()))
    output = dry_run(*FULL.script_args(), "--image=i:1", f"--catalog-dir={tmp_path}")
    assert "relaycli.main compile" not in output
    assert f"gcloud storage rsync {tmp_path} gs://demo-project-relay-catalog/abc123def456" in output


def test_the_image_is_built_from_the_repository_with_the_steps_config():
    [submit] = [argv for argv in gcloud_commands(dry_run(*FULL.script_args())) if argv[:2] == ["builds", "submit"]]
    command = split_command(submit)
    assert command.positionals == (str(ROOT),)
    assert command.flags["config"] == str(ROOT / "infra/steps-image.cloudbuild.yaml")
    substitutions = dict(pair.split("=", 1) for pair in str(command.flags["substitutions"]).split(","))
    assert substitutions["_IMAGE"] == "europe-west1-docker.pkg.dev/demo-project/relay/steps:abc123def456"
    assert substitutions["_RELAY_SECRETS_PROJECT"] == "demo-project"


def test_teardown_removes_what_deploy_made_and_keeps_data_unless_asked():
    kept = dry_run("--teardown", *FULL.script_args())
    deleted = [argv for argv in gcloud_commands(kept) if argv[-1] == "--quiet" and "delete" in argv]
    names = {split_command(argv).positionals[0] for argv in deleted}
    assert names >= {
        "relay-on-object-finalized",
        "relay-on-message-published",
        "relay-on-schedule",
        "relay-reconcile",
        "relay-triggers",
        "relay-notifications",
        "relay-dead-letter",
        "relay",
        "relay-functions@demo-project.iam.gserviceaccount.com",
        "relay-trigger@demo-project.iam.gserviceaccount.com",
        "relay-pipelines@demo-project.iam.gserviceaccount.com",
    }
    assert "storage rm" not in kept
    assert "notifications delete gs://demo-lab-data/notificationConfigs/NOTIFICATION_ID" in kept
    removed = from_script(kept).revoked
    assert removed, "project, secret and bucket bindings outlive the service accounts: they are removed"
    assert not from_script(kept).bindings
    # Other storage triggers in the project rely on the Cloud Storage agent's publisher role.
    assert not any("gs-project-accounts" in b.member and b.kind == "project" for b in removed)
    gone = dry_run("--teardown", "--delete-buckets", *FULL.script_args())
    for bucket in ("triggers", "results", "pipeline-root", "catalog"):
        assert f"gcloud storage rm --recursive --all-versions gs://demo-project-relay-{bucket}" in gone
    assert "rm --recursive --all-versions gs://demo-lab-data" not in gone  # the data bucket is not ours


def test_teardown_reverses_every_binding_deploy_adds_that_would_otherwise_remain():
    added = from_script(dry_run(*FULL.script_args())).bindings
    removed = from_script(dry_run("--teardown", *FULL.script_args())).revoked
    # Topic, subscription, service-account and run-service bindings go with their resources.
    outliving = {
        b for b in added if b.kind in ("project", "bucket", "secret") and "gs-project-accounts" not in b.member
    }
    assert outliving == removed


def test_staging_holds_exactly_what_cloud_functions_needs(tmp_path: Path):
    stage = tmp_path / "functions"
    result = run_script("--stage-only", str(stage))
    assert result.returncode == 0, result.stderr
    staged = {str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file()}
    source = ROOT / "functions"
    expected = {
        str(p.relative_to(source))
        for p in source.rglob("*")
        if p.is_file()
        and not {"__pycache__"} & set(p.parts)
        and not any(part.endswith(".egg-info") for part in p.parts)
    }
    assert staged == expected
    assert {"main.py", "requirements.txt"} <= {p.name for p in stage.iterdir()}
    assert any(name.startswith("relay/") for name in staged)
