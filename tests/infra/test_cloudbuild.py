"""cloudbuild.yaml (and the steps-image build infra/deploy.sh submits): what its steps name exists, its
substitutions add up, and its compile and deploy steps do here what they would do on Cloud Build."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.compile import CATALOG
from tests.infra.gcloud import sdk_root
from tests.infra.support import (
    POLICY,
    ROOT,
    Inputs,
    compiled_spec,
    dry_run,
    from_script,
    gcloud_commands,
    script_env,
    split_command,
)

CLOUDBUILD = ROOT / "cloudbuild.yaml"
STEPS_IMAGE = ROOT / "infra" / "steps-image.cloudbuild.yaml"
# Substitutions every build has (build/docs/configuring-builds/substitute-variable-values).
BUILT_IN = {"PROJECT_ID", "BUILD_ID", "PROJECT_NUMBER", "LOCATION", "COMMIT_SHA", "SHORT_SHA", "REVISION_ID"}
BUILT_IN |= {"REPO_NAME", "REPO_FULL_NAME", "BRANCH_NAME", "TAG_NAME", "TRIGGER_NAME", "TRIGGER_BUILD_CONFIG_PATH"}
VALUES = {
    "PROJECT_ID": "demo-project",
    "SHORT_SHA": "abc1234",
    "_REGION": "europe-west1",
    "_PREFIX": "relay",
    "_BACKEND": "vertex",
    "_DEPLOY_ARGS": "",
    "_POLICY": str(POLICY),
}
IMAGE = "europe-west1-docker.pkg.dev/demo-project/relay/steps:abc1234"
CATALOG_URI = "gs://demo-project-relay-catalog/abc1234"
POLICY_URI = f"{CATALOG_URI}/policy.yaml"
_REFERENCE = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def load(path: Path) -> dict[str, Any]:
    config = yaml.safe_load(path.read_text())
    assert isinstance(config, dict)
    return config


def strings(value: Any) -> list[str]:
    """Every string Cloud Build substitutes into (comments are not among them)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in strings(item)]
    if isinstance(value, dict):
        return [s for item in value.values() for s in strings(item)]
    return []


def references(config: dict[str, Any]) -> set[str]:
    used = set()
    for text in strings({k: v for k, v in config.items() if k != "substitutions"}):
        for match in _REFERENCE.finditer(text.replace("$$", "")):
            used.add(match.group("braced") or match.group("bare"))
    return used


def substitute(text: str, values: dict[str, str]) -> str:
    """What Cloud Build makes of a string: $$ is a literal $, $NAME and ${NAME} are substituted."""
    parts = text.split("$$")
    done = [_REFERENCE.sub(lambda m: values[m.group("braced") or m.group("bare")], part) for part in parts]
    return "$".join(done)


def step(config: dict[str, Any], step_id: str) -> dict[str, Any]:
    [found] = [s for s in config["steps"] if s.get("id") == step_id]
    return found


def script_of(config: dict[str, Any], step_id: str, values: dict[str, str] = VALUES) -> str:
    found = step(config, step_id)
    assert found.get("entrypoint") == "bash" and found["args"][0] == "-c"
    return substitute(found["args"][1], values)


@pytest.mark.parametrize("path", [CLOUDBUILD, STEPS_IMAGE], ids=lambda p: p.name)
def test_substitutions_are_declared_used_and_escaped(path: Path):
    config = load(path)
    declared = set(config.get("substitutions", {}))
    used = references(config)
    assert all(name.startswith("_") for name in declared), "user substitutions start with _"
    assert used - BUILT_IN <= declared, f"used but not declared: {used - BUILT_IN - declared}"
    # Cloud Build refuses a build whose declared substitutions are not all used.
    assert declared <= used, f"declared but not used: {declared - used}"
    for text in strings(config.get("steps", [])):
        for dollar in re.finditer(r"\$(?!\$)", text.replace("$$", "")):
            assert _REFERENCE.match(text.replace("$$", ""), dollar.start()), f"an unescaped shell $ in {text!r}"
    assert config["options"]["logging"] == "CLOUD_LOGGING_ONLY"
    assert re.fullmatch(r"\d+s", config["timeout"])


def test_the_steps_run_in_order_checks_first():
    config = load(CLOUDBUILD)
    ids = [s["id"] for s in config["steps"]]
    assert len(ids) == len(set(ids))
    expected = ["lint", "typecheck", "test", "compile-check", "compile", "image", "push", "deploy"]
    assert [i for i in ids if i in expected] == expected
    for each in config["steps"]:
        assert set(each.get("waitFor", [])) <= set(ids[: ids.index(each["id"])]), each["id"]
    # The deploy step waits, directly or not, for every check.
    waits: dict[str, set[str]] = {}
    for index, each in enumerate(config["steps"]):
        direct = set(each.get("waitFor", ids[:index]))
        waits[each["id"]] = direct | {w for d in direct for w in waits[d]}
    assert {"lint", "typecheck", "test", "compile-check", "compile", "push"} <= waits["deploy"]


def test_what_the_steps_name_exists():
    config = load(CLOUDBUILD)
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    for text in strings(config["steps"]):
        for match in re.finditer(r"\bmake ((?:[a-z-]+ ?)+)", text):
            assert set(match.group(1).split()) <= targets, text
        for module in re.findall(r"-m ([\w.]+)", text):
            assert (ROOT / (module.replace(".", "/") + ".py")).exists(), module
        for path in re.findall(r"(?<![\w./-])((?:infra|pipelines|functions)/[\w./-]+)", text):
            assert (ROOT / path).exists(), f"{path} (in {text!r})"
    assert step(config, "image")["args"][1] == "--file=pipelines/Dockerfile"


def test_the_image_built_is_the_one_pushed_listed_and_deployed():
    config = load(CLOUDBUILD)
    [tag] = [arg.removeprefix("--tag=") for arg in step(config, "image")["args"] if arg.startswith("--tag=")]
    assert step(config, "push")["args"] == ["push", tag]
    assert config["images"] == [tag]
    assert substitute(tag, VALUES) in script_of(config, "compile")
    assert (
        "--image=$$image" in step(config, "deploy")["args"][1]
        or '--image="$$image"' in step(config, "deploy")["args"][1]
    )


def test_the_python_version_is_the_one_the_project_is_checked_with():
    config = load(CLOUDBUILD)
    pyproject = (ROOT / "pyproject.toml").read_text()
    [version] = re.findall(r'^python_version = "(\d+\.\d+)"', pyproject, re.M)
    python_steps = {s["name"] for s in config["steps"] if s["name"].startswith("python:")}
    assert python_steps == {f"python:{version}"}
    escaped = re.escape(version)
    assert re.search(rf"^FROM python:{escaped}(\.\d+)?-slim@", (ROOT / "pipelines" / "Dockerfile").read_text(), re.M)
    for function in from_script(dry_run(*Inputs().script_args())).functions.values():
        assert function["runtime"] == "python" + version.replace(".", "")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """/workspace as Cloud Build's steps see it: the repository (here by links) with .venv made by `make venv`."""
    for name in ("pipelines", "functions", "Makefile"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])
    return tmp_path


def run_step(config: dict[str, Any], step_id: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script_of(config, step_id)], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_compile_check_step_passes_on_the_committed_catalog(workspace: Path):
    result = run_step(load(CLOUDBUILD), "compile-check", workspace)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compile_step_compiles_the_catalog_with_this_builds_image_and_policy(workspace: Path):
    if "--policy-uri" not in (ROOT / "pipelines" / "compile.py").read_text():
        pytest.skip("pipelines.compile has no --policy-uri yet (it bakes RELAY_POLICY_URI into the components)")
    result = run_step(load(CLOUDBUILD), "compile", workspace)
    assert result.returncode == 0, result.stderr
    built = workspace / "build" / "catalog"
    assert sorted(p.name for p in built.iterdir()) == sorted(f"{name}.yaml" for name in CATALOG)
    for spec in built.iterdir():
        assert f"image: {IMAGE}" in spec.read_text(), spec.name
        assert POLICY_URI in spec.read_text(), f"{spec.name} does not name the policy its steps enforce"
        assert "gs://demo-project-relay-results" in spec.read_text(), f"{spec.name} does not name the records"


def test_the_catalog_names_the_policy_the_deploy_step_publishes(tmp_path: Path):
    """The compile step bakes in the URI that deploy.sh then publishes the policy to and hands the functions."""
    config = load(CLOUDBUILD)
    compiled_for = re.search(r"--policy-uri (\S+)", script_of(config, "compile"))
    assert compiled_for and compiled_for.group(1) == POLICY_URI
    output = _deploy_dry_run(config, VALUES, tmp_path / "catalog")
    [cp] = [c for c in gcloud_commands(output) if c[:2] == ["storage", "cp"]]
    assert split_command(cp).positionals == (str(POLICY), POLICY_URI)
    for function in from_script(output).functions.values():
        assert function["env"]["RELAY_POLICY_URI"] == POLICY_URI


@pytest.mark.parametrize("policy", ["", "no/such/policy.yaml"])
def test_a_missing_policy_stops_the_build_first(policy: str):
    script = script_of(load(CLOUDBUILD), "commit", {**VALUES, "_POLICY": policy})
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1 and "_POLICY names no file" in result.stderr
    ok = subprocess.run(["bash", "-c", script_of(load(CLOUDBUILD), "commit")], capture_output=True, check=False)
    assert ok.returncode == 0


def test_the_deploy_step_runs_the_cloud_sdk_release_these_tests_parse_with():
    [image] = [s["name"] for s in load(CLOUDBUILD)["steps"] if s["id"] == "deploy"]
    release = re.fullmatch(r"gcr\.io/google\.com/cloudsdktool/cloud-sdk:(\d+\.\d+\.\d+)-slim", image)
    assert release, f"{image}: not pinned to a Cloud SDK release"
    assert release.group(1) == (sdk_root() / "VERSION").read_text().strip()


def _deploy_dry_run(config: dict[str, Any], values: dict[str, str], catalog: Path) -> str:
    """The deploy step's dry run, with `catalog` as the build/catalog the compile step makes (the preflight reads it,
    in a dry run too)."""
    script = script_of(config, "deploy", values).replace("bash infra/deploy.sh ", "bash infra/deploy.sh --dry-run ", 1)
    assert "--dry-run" in script and "--catalog-dir=build/catalog " in script
    # The Cloud SDK image's python3 gets PyYAML there; a test installs nothing.
    script = "\n".join(line for line in script.splitlines() if "apt-get" not in line)
    catalog.mkdir(exist_ok=True)
    (catalog / "push.yaml").write_text(compiled_spec(POLICY_URI, "gs://demo-project-relay-results"))
    script = script.replace("--catalog-dir=build/catalog ", f"--catalog-dir={catalog} ")
    result = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, env=script_env(), timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_deploy_step_publishes_that_catalog_and_deploys_with_that_image(tmp_path: Path):
    config = load(CLOUDBUILD)
    values = {**VALUES, "_DEPLOY_ARGS": "--secret=RELAY_STATIC_TOKEN=kfp-token --step-secret=hf-token"}
    output = _deploy_dry_run(config, values, tmp_path / "catalog")
    assert "builds submit" not in output and "pipelines.compile" not in output
    [rsync] = [c for c in gcloud_commands(output) if c[:2] == ["storage", "rsync"]]
    assert split_command(rsync).positionals == (str(tmp_path / "catalog"), CATALOG_URI)
    system = from_script(output)
    for function in system.functions.values():
        assert function["env"]["RELAY_CATALOG_URI"] == CATALOG_URI
        assert function["secrets"] == {"RELAY_STATIC_TOKEN": "kfp-token:latest"}


def test_the_steps_image_build_takes_what_deploy_sh_passes():
    config = load(STEPS_IMAGE)
    [submit] = [c for c in gcloud_commands(dry_run(*Inputs().script_args())) if c[:2] == ["builds", "submit"]]
    passed = {pair.split("=", 1)[0] for pair in str(split_command(submit).flags["substitutions"]).split(",")}
    assert passed == set(config["substitutions"])
    [build] = config["steps"]
    assert "--file=pipelines/Dockerfile" in build["args"] and build["args"][-1] == "."
    assert config["images"] == ["${_IMAGE}"]
