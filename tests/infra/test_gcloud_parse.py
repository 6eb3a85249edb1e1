"""Every gcloud command infra/deploy.sh can print goes through the installed Google Cloud CLI's own parser.

gcloud runs with an empty configuration (a project, no account) and no way out to the network, so a command that
parses stops at "no active account" (exit 1) and one that does not stops in the parser (exit 2). The commands run
in one gcloud process through the CLI object `gcloud` itself builds (tests/infra/gcloud_driver.py); a few are also
run through the `gcloud` executable to show both judge alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.infra.gcloud import Verdict, parse_all, run_binary, upload_of
from tests.infra.support import POLICY, ROOT, Inputs, compiled_spec, dry_run, gcloud_commands, run_script

pytestmark = pytest.mark.integration

VARIANTS = {
    "vertex with every option": Inputs(
        function_secrets={"RELAY_STATIC_TOKEN": ("kfp-token", "latest")},
        step_secrets=("hf-token",),
        notify_bucket="demo-lab-data",
        notify_prefix="incoming/",
        records_retention_days=30,
        audit_retention_days=2555,
        lock_audit_retention=True,
    ),
    "kfp": Inputs(
        backend="kfp",
        settings={"RELAY_KFP_HOST": "https://kfp.example.com", "RELAY_AUTH": "iap", "RELAY_KFP_AUDIENCE": "x.apps"},
    ),
}


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real staging folder: some gcloud commands look at their local paths before they authenticate."""
    folder = tmp_path_factory.mktemp("stage")
    result = run_script("--stage-only", str(folder / "functions"))
    assert result.returncode == 0, result.stderr
    (folder / "catalog").mkdir()
    # The Cloud Build path's catalog below: compiled for its policy, as the preflight checks.
    spec = compiled_spec("gs://demo-project-relay-catalog/v1/policy.yaml", "gs://demo-project-relay-results")
    (folder / "catalog" / "push.yaml").write_text(spec)
    return folder


def every_command(stage: Path) -> Iterator[list[str]]:
    for inputs in VARIANTS.values():
        args = [*inputs.script_args(), f"--stage={stage}"]
        yield from gcloud_commands(dry_run(*args))
        yield from gcloud_commands(dry_run("--teardown", "--delete-buckets", *args))
        yield from gcloud_commands(dry_run("--dead-letter-only", *args))
    # The look-ups a run makes without --project-number, and the Cloud Build path (image and catalog given).
    yield from gcloud_commands(
        dry_run(
            "--project=demo-project",
            "--version=v1",
            "--image=europe-west1-docker.pkg.dev/demo-project/relay/steps:v1",
            f"--catalog-dir={stage / 'catalog'}",
            f"--policy={POLICY}",
            "--build-service-account=builder@demo-project.iam.gserviceaccount.com",
            f"--stage={stage}",
        )
    )


@pytest.fixture(scope="module")
def verdicts(stage: Path) -> list[Verdict]:
    unique = list(dict.fromkeys(tuple(argv) for argv in every_command(stage)))
    return parse_all(unique)


def test_there_is_something_to_check(verdicts: list[Verdict]):
    paths = {" ".join(v.argv[:3]) for v in verdicts}
    assert len(verdicts) > 80
    assert {"functions deploy relay-on-object-finalized", "builds submit " + str(ROOT)} <= paths
    # The record bindings' IAM conditions, the policy's upload and the records' soft delete are among them.
    assert any(v.argv[:3] == ("storage", "cp", str(POLICY)) for v in verdicts)
    assert any(a.startswith("--condition=expression=") for v in verdicts for a in v.argv)
    assert any(a.startswith("--soft-delete-duration=") for v in verdicts for a in v.argv)


def test_every_command_the_script_prints_parses(verdicts: list[Verdict]):
    refused = [str(v) for v in verdicts if not v.parsed]
    assert not refused, "\n".join(refused)


def _mutants(verdicts: list[Verdict]) -> dict[str, list[str]]:
    deploy = next(list(v.argv[:-1]) for v in verdicts if v.argv[:2] == ("functions", "deploy"))
    binding = next(list(v.argv[:-1]) for v in verdicts if v.argv[:2] == ("projects", "add-iam-policy-binding"))
    notification = next(list(v.argv[:-1]) for v in verdicts if v.argv[3:4] == ("create",) and "notifications" in v.argv)
    return {
        "misspelled flag": [arg.replace("--memory=", "--memroy=") for arg in deploy],
        "invalid choice": [
            arg.replace("--ingress-settings=internal-only", "--ingress-settings=internal") for arg in deploy
        ],
        "flag of another command": [*binding, "--retry"],
        "invalid payload format": [
            arg.replace("--payload-format=json", "--payload-format=JSON_API_V1") for arg in notification
        ],
    }


def test_a_wrong_flag_is_caught_by_the_same_check(verdicts: list[Verdict]):
    mutants = _mutants(verdicts)
    for name, verdict in zip(mutants, parse_all(list(mutants.values())), strict=True):
        assert verdict.argument_error and not verdict.parsed, f"{name} went unnoticed:\n{verdict}"


def test_the_gcloud_executable_judges_as_the_driver_does(verdicts: list[Verdict]):
    mutant = _mutants(verdicts)["misspelled flag"]
    valid = next(list(v.argv[:-1]) for v in verdicts if v.argv[:2] == ("functions", "deploy"))
    with ThreadPoolExecutor(2) as pool:
        bad, good = pool.map(run_binary, [mutant, valid])
    assert bad.argument_error, str(bad)
    assert "unrecognized arguments: --memroy=512Mi" in bad.output
    assert good.parsed, str(good)


def test_the_staged_upload_passes_gclouds_own_checks(stage: Path):
    """gcloud refuses a python --source without main.py and requirements.txt on top; this is what it would zip."""
    result = upload_of(stage / "functions", "python311")
    assert result.returncode == 0, result.stderr[-2000:]
    uploaded = set(json.loads(result.stdout))
    source = ROOT / "functions"
    assert {"main.py", "requirements.txt"} <= uploaded
    assert {f"relay/{p.relative_to(source / 'relay')}" for p in (source / "relay").rglob("*.py")} <= uploaded
    assert not [name for name in uploaded if "__pycache__" in name or ".egg-info" in name]


def test_a_source_without_requirements_is_refused_by_gcloud(tmp_path: Path):
    (tmp_path / "main.py").write_text("")
    result = upload_of(tmp_path, "python311")
    assert result.returncode != 0
    assert "does not have file [requirements.txt]" in result.stderr
