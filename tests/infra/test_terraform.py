"""infra/terraform: it parses, it declares what infra/deploy.sh creates, and checkov finds nothing unexplained."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import hcl2
import pytest

from tests.infra.hcl import HclError, Module, labelled, parse
from tests.infra.support import (
    EXAMPLE_ENV,
    POLICY,
    TERRAFORM,
    Binding,
    Inputs,
    System,
    compiled_spec,
    dry_run,
    from_script,
    from_terraform,
    terraform_module,
)
from tests.infra.tools import checkov

VARIANTS = {
    "vertex": Inputs(),
    "vertex with secrets and a notification": Inputs(
        function_secrets={"RELAY_STATIC_TOKEN": ("kfp-token", "latest"), "RELAY_OTHER": ("other", "3")},
        step_secrets=("hf-token", "kaggle-key"),
        notify_bucket="demo-lab-data",
        notify_prefix="incoming/",
        records_retention_days=30,
        audit_retention_days=2555,
        lock_audit_retention=True,
    ),
    "kfp, another prefix and region": Inputs(
        prefix="relay-dev",
        region="us-central1",
        backend="kfp",
        settings={"RELAY_KFP_HOST": "https://kfp.example.com", "RELAY_MAX_EVENT_AGE": "2h"},
        notify_bucket="demo-lab-data",
    ),
}
TF_FILES = sorted([*TERRAFORM.glob("*.tf"), *EXAMPLE_ENV.glob("*.tf")])


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    (tmp_path / "push.yaml").write_text("{}\n")
    return tmp_path


@pytest.mark.parametrize("path", TF_FILES, ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_every_file_parses(path: Path):
    with path.open() as handle:
        assert hcl2.load(handle)


def test_every_variable_is_described_and_typed():
    for name, _, body in labelled(
        Module(TERRAFORM, {"project_id": "p-123456", "catalog_dir": "/x"}).blocks["variable"]
    ):
        assert body.get("description", '""') != '""', f"variable {name} has no description"
        assert "type" in body, f"variable {name} has no type"


def test_the_providers_are_pinned_to_a_major_version():
    module = Module(TERRAFORM, {"project_id": "p-123456", "catalog_dir": "/x"})
    [terraform] = module.blocks["terraform"]
    [providers] = terraform["required_providers"]
    for name in ("google", "archive", "external"):
        version = module.value(providers[name]["version"])
        assert re.fullmatch(r"~> \d+\.\d+", version), f"{name}: {version} admits the next major version"
    assert module.value(terraform["required_version"]).startswith(">=")


def _validations(module: Module) -> dict[str, bool]:
    results = {}
    for name, body in module.declared.items():
        for index, validation in enumerate(body.get("validation", [])):
            results[f"{name}[{index}]"] = bool(module.value(validation["condition"]))
    return results


@pytest.mark.parametrize("inputs", VARIANTS.values(), ids=VARIANTS.keys())
def test_the_validations_accept_what_the_script_accepts(inputs: Inputs, catalog: Path):
    results = _validations(terraform_module(inputs, catalog))
    assert results and all(results.values()), results


@pytest.mark.parametrize(
    ("variables", "failing"),
    [
        ({"prefix": "Relay"}, "prefix[0]"),
        ({"prefix": "a-prefix-that-is-too-long"}, "prefix[0]"),
        ({"project_id": "123456"}, "project_id[0]"),
        ({"backend": "local"}, "backend[0]"),
        ({"relay_settings": {"RELAY_STATIC_TOKEN": "x"}}, "relay_settings[0]"),
        ({"relay_settings": {"RELAY_RESULTS_URI": "gs://x"}}, "relay_settings[0]"),
        ({"function_secrets": {"token": {"secret": "s", "version": "latest"}}}, "function_secrets[0]"),
        ({"timeout_seconds": 600}, "timeout_seconds[0]"),
        ({"max_delivery_attempts": 3}, "max_delivery_attempts[0]"),
        ({"notify_prefix": "x/"}, "notify_prefix[0]"),
        ({"catalog_version": "a/b"}, "catalog_version[0]"),
        ({"catalog_version": ""}, "catalog_version[0]"),
        ({"records_retention_days": 5}, "records_retention_days[0]"),
        ({"records_retention_days": 91}, "records_retention_days[0]"),
    ],
)
def test_the_validations_refuse_what_the_script_refuses(variables: dict[str, Any], failing: str, catalog: Path):
    required = {"project_id": "demo-project", "catalog_dir": str(catalog), "catalog_version": "v1"}
    module = Module(TERRAFORM, {**required, "policy_file": str(POLICY), **variables})
    results = _validations(module)
    assert [name for name, ok in results.items() if not ok] == [failing]


@pytest.mark.parametrize("inputs", VARIANTS.values(), ids=VARIANTS.keys())
def test_terraform_declares_what_the_script_deploys(inputs: Inputs, catalog: Path):
    script = from_script(dry_run(*inputs.script_args()))
    # Eventarc creates the functions' subscriptions: both paths reach them through deploy.sh's dead-letter step,
    # compared separately below.
    eventarc = {b for b in script.bindings if b.resource.startswith("SUBSCRIPTION_OF_")}
    script.bindings -= eventarc
    assert {b.role for b in eventarc} == {"roles/pubsub.subscriber"}
    declared = from_terraform(terraform_module(inputs, catalog), f"{inputs.project}-{inputs.prefix}")
    # The script takes back what earlier versions of itself granted; Terraform drops what it stops declaring.
    for part in dataclasses.fields(System):
        if part.name != "revoked":
            assert getattr(declared, part.name) == getattr(script, part.name), f"{part.name} differ"


def test_the_comparison_sees_a_difference(catalog: Path):
    """A role the script grants and Terraform does not (or a changed trigger) must fail the comparison."""
    inputs = VARIANTS["vertex"]
    declared = from_terraform(terraform_module(inputs, catalog), f"{inputs.project}-{inputs.prefix}")
    script = from_script(dry_run(*inputs.script_args()))
    script.bindings = {b for b in script.bindings if not b.resource.startswith("SUBSCRIPTION_OF_")}
    assert declared.bindings == script.bindings
    extra = Binding(
        "project", "demo-project", "serviceAccount:relay-functions@demo-project.iam.gserviceaccount.com", "roles/owner"
    )
    assert declared.bindings != script.bindings | {extra}
    function = declared.functions["relay-on-object-finalized"]
    assert function["trigger"] == ("google.cloud.storage.object.v1.finalized", "demo-project-relay-triggers")
    assert function["retry"] is True and function["timeout"] == 540


def test_the_dead_letter_step_is_the_scripts_own(catalog: Path):
    """Terraform runs deploy.sh --dead-letter-only with its names: the dry run of that equals the full deploy's."""
    inputs = VARIANTS["vertex with secrets and a notification"]
    module = terraform_module(inputs, catalog)
    [(_, step, body)] = list(module.instances("terraform_data"))
    [provisioner] = body["provisioner"]
    local_exec = module.value(provisioner['"local-exec"'])
    assert local_exec["command"] == f"bash {TERRAFORM}/../deploy.sh --dead-letter-only"
    env = {name: str(value) for name, value in local_exec["environment"].items()}
    only = dry_run("--dead-letter-only", env=env)
    full = dry_run(*inputs.script_args())
    dead_letter_lines = [line for line in only.splitlines() if "SUBSCRIPTION_OF_" in line or "EVENTARC_TRIGGER" in line]
    assert dead_letter_lines and all(line in full.splitlines() for line in dead_letter_lines)
    # It runs again whenever a function's Eventarc trigger (and with it the subscription) is replaced.
    triggers = step["triggers_replace"]
    assert any("on-object-finalized" in str(t) for t in triggers) and any(
        "on-message-published" in str(t) for t in triggers
    )


def test_the_catalog_and_policy_are_published_where_the_functions_look(catalog: Path):
    inputs = VARIANTS["vertex"]
    (catalog / "policy.yaml").write_text("a stale copy: policy_file is published instead\n")
    module = terraform_module(inputs, catalog)
    objects = {
        (o["bucket"], o["name"], o["source"])
        for _, o, _ in module.instances("google_storage_bucket_object")
        if o["bucket"] != "demo-project-relay-sources"
    }
    assert objects == {
        ("demo-project-relay-catalog", "abc123def456/push.yaml", f"{catalog}/push.yaml"),
        ("demo-project-relay-catalog", "abc123def456/policy.yaml", str(POLICY)),
    }
    env = module.local("function_env")
    assert env["RELAY_CATALOG_URI"] == "gs://demo-project-relay-catalog/abc123def456"
    assert env["RELAY_POLICY_URI"] == inputs.policy_uri() == "gs://demo-project-relay-catalog/abc123def456/policy.yaml"


def test_a_catalog_compiled_for_another_policy_is_refused(catalog: Path):
    """The catalog objects' precondition: each spec names this version's policy (deploy.sh checks the same)."""
    inputs = VARIANTS["vertex"]

    def preconditions() -> list[bool]:
        module = terraform_module(inputs, catalog)
        found = []
        for _, _, body, scope in module.scoped_instances("google_storage_bucket_object"):
            for lifecycle in body.get("lifecycle", []):
                found += [module.value(p["condition"], scope) for p in lifecycle.get("precondition", [])]
        return found

    (catalog / "push.yaml").write_text(f"env:\n- name: RELAY_POLICY_URI\n  value: {inputs.policy_uri()}\n")
    assert preconditions() == [True]
    (catalog / "push.yaml").write_text("value: gs://demo-project-relay-catalog/older/policy.yaml\n")
    assert preconditions() == [False]


def test_the_function_upload_leaves_out_what_python_leaves_behind(catalog: Path):
    module = terraform_module(VARIANTS["vertex"], catalog)
    files = module.local("source_files")
    assert "main.py" in files and "requirements.txt" in files and "relay/config.py" in files
    assert not [name for name in files if "__pycache__" in name or ".egg-info" in name]
    assert re.fullmatch(r"[0-9a-f]{16}", module.local("source_hash"))


def test_the_example_environment_fits_the_module():
    module_variables = set(Module(TERRAFORM, {"project_id": "p-123456", "catalog_dir": "/x"}).declared)
    example = hcl2.loads((EXAMPLE_ENV / "main.tf").read_text())
    [(_, _, call)] = labelled(example["module"])
    assert call["source"] == '"../.."'
    passed = {name for name in call if not name.startswith("__") and name != "source"}
    assert passed <= module_variables
    required = {
        name
        for name, _, body in labelled(hcl2.loads((TERRAFORM / "variables.tf").read_text())["variable"])
        if "default" not in body
    }
    assert required <= passed
    example_variables = {name for name, _, _ in labelled(example["variable"])}
    tfvars = hcl2.loads((EXAMPLE_ENV / "terraform.tfvars.example").read_text())
    assert {name for name in tfvars if not name.startswith("__")} <= example_variables
    for name in ("project_id", "catalog_dir", "catalog_version", "policy_file"):
        assert name in tfvars


def test_no_secret_values_are_committed():
    for path in [*TF_FILES, EXAMPLE_ENV / "terraform.tfvars.example"]:
        text = path.read_text()
        assert not re.search(r"(?i)(token|password|private_key)\s*=\s*\"[^\"]{8,}\"", text), path


def test_checkov_finds_nothing_unexplained():
    result = subprocess.run(
        [checkov(), "--directory", str(TERRAFORM), "--framework", "terraform", "--skip-download", "--output", "json"],
        capture_output=True,
        text=True,
        # No guideline download, no telemetry: checkov works offline with these.
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
        timeout=120,
        check=False,
    )
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in report["results"].get("failed_checks", [])]
    assert not failed, "\n".join(failed)
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 30
    assert result.returncode == 0, result.stderr[-2000:]


def test_every_skipped_check_says_why():
    for path in TF_FILES:
        for line in path.read_text().splitlines():
            if "checkov:skip" in line:
                assert re.search(r"#checkov:skip=CKV2?_[A-Z]+_\d+:\S.{20,}", line), f"{path.name}: {line.strip()}"


def test_terraform_fmt_is_clean_where_terraform_is_installed():
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not installed (formatting is checked where it is)")
    result = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


def test_the_evaluator_refuses_what_it_cannot_read():
    with pytest.raises(HclError):
        parse("var.a[*].b")


def _preflight(module: Module) -> subprocess.CompletedProcess[str]:
    """The preflight's program as Terraform runs it while planning (an external data source)."""
    [(_, body)] = [(label, body) for kind, label, body in labelled(module.blocks["data"]) if kind == "external"]
    program = [str(arg) for arg in module.value(body["program"])]
    program[program.index("python3")] = sys.executable
    return subprocess.run(program, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("inputs", VARIANTS.values(), ids=VARIANTS.keys())
def test_the_preflight_is_planned_with_the_settings_the_functions_get(inputs: Inputs, catalog: Path):
    module = terraform_module(inputs, catalog)
    assert module.local("planned_env") == module.local("function_env")
    (catalog / "push.yaml").write_text(compiled_spec(inputs.policy_uri(), inputs.results_uri()))
    result = _preflight(module)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert set(answer) == {"warnings", "todo", "next_steps"} and all(isinstance(v, str) for v in answer.values())
    assert f"export RELAY_POLICY_URI={inputs.policy_uri()}" in answer["next_steps"]


def test_the_plan_fails_on_what_the_preflight_refuses(catalog: Path):
    """kfp without a host, and a catalog compiled for another policy: exit 2 (Terraform fails the plan), each listed."""
    inputs = dataclasses.replace(VARIANTS["vertex"], backend="kfp")
    (catalog / "push.yaml").write_text(compiled_spec("gs://elsewhere/policy.yaml", inputs.results_uri()))
    result = _preflight(terraform_module(inputs, catalog))
    assert result.returncode == 2
    assert "RELAY_KFP_HOST: expected a value" in result.stderr
    assert f"push.yaml: does not name {inputs.policy_uri()}" in result.stderr
