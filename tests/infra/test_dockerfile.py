"""pipelines/Dockerfile read, since docker cannot run here: its base is pinned by digest, what it copies exists and
reaches the build context, it installs the hashed lock and nothing else, it runs as a user, and the layout it makes
lets the components import."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.infra.support import ROOT

DOCKERFILE = ROOT / "pipelines" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def instructions(text: str) -> list[Instruction]:
    """Dockerfile instructions, continuation lines joined and comments dropped."""
    logical: list[str] = []
    current = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip().removesuffix("\\") + " " if line.rstrip().endswith("\\") else line.strip()
        if not line.rstrip().endswith("\\"):
            logical.append(current.strip())
            current = ""
    parsed = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        parsed.append(Instruction(keyword.upper(), " ".join(arguments.split())))
    return parsed


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parent folders decides."""
    verdict = False
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in patterns:
        negated = raw.startswith("!")
        pattern = raw.removeprefix("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            verdict = not negated
    return verdict


PARSED = instructions(DOCKERFILE.read_text())
PATTERNS = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")]


def of(keyword: str) -> list[str]:
    return [i.arguments for i in PARSED if i.keyword == keyword]


def copies() -> list[tuple[list[str], str]]:
    found = []
    for arguments in of("COPY"):
        words = [w for w in arguments.split() if not w.startswith("--")]
        found.append((words[:-1], words[-1]))
    return found


def test_the_base_image_is_a_slim_python_pinned_by_digest():
    [base] = of("FROM")
    # The tag says which image it is; the digest is what is pulled.
    assert re.fullmatch(r"python:3\.\d+(\.\d+)?-slim@sha256:[0-9a-f]{64}", base), base
    text = DOCKERFILE.read_text()
    tag = base.split("@")[0]
    assert re.search(rf"^# {re.escape(tag)} by the digest of its multi-architecture index", text, re.M), (
        "a comment above FROM names the tag the digest belongs to"
    )


def test_every_copy_source_exists_and_reaches_the_build_context():
    assert copies()
    for sources, _ in copies():
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"COPY {source}: not in the repository (the context is its root)"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            kept = [f for f in files if not ignored(str(f.relative_to(ROOT)), PATTERNS)]
            assert kept, f"COPY {source}: .dockerignore leaves nothing of it in the context"
            assert not ignored(source, PATTERNS) or path.is_dir(), source


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "functions/relay/__pycache__/config.cpython-311.pyc",
        "README.md",
    ],
)
def test_the_context_leaves_out_what_the_image_does_not_need(path: str):
    assert ignored(path, PATTERNS)


def test_the_context_keeps_what_the_image_needs():
    for path in (
        "functions/relay/config.py",
        "pipelines/requirements.txt",
        "pipelines/steps/push.py",
        "pipelines/steps/ratchet/report.html.jinja",  # package data: the ratchet report's template
    ):
        assert not ignored(path, PATTERNS), path


def test_the_hashed_lock_is_installed_and_nothing_else():
    [install] = [i for i, x in enumerate(PARSED) if x.keyword == "RUN" and "pip install" in x.arguments]
    command = PARSED[install].arguments
    assert set(re.findall(r"-r (\S+)", command)) == {"pipelines/requirements.txt"}
    # Every file checked against the lock's hashes, no dependency beyond it, and nothing missing from it.
    assert "--require-hashes" in command and "--no-deps" in command and "pip check" in command
    assert "--no-cache-dir" in command
    copied_before = {i.arguments.split()[-1] for i in PARSED[:install] if i.keyword == "COPY"}
    assert "pipelines/requirements.txt" in copied_before
    # One complete lock: it includes no other file the image would need too.
    lock = (ROOT / "pipelines" / "requirements.txt").read_text()
    assert not re.search(r"^-[rc] ", lock, re.M)
    assert re.search(r"^functions-framework==", lock, re.M), "the functions' pins are part of the image's lock"
    assert not [i for i in PARSED if i.keyword == "RUN" and "pip install" in i.arguments and i is not PARSED[install]]


def test_it_runs_as_an_unprivileged_user():
    [user] = of("USER")
    assert user.split(":")[0] not in ("0", "root")


def test_its_environment_keeps_telemetry_off_and_the_code_importable():
    env = " ".join(of("ENV"))
    assert "HF_HUB_DISABLE_TELEMETRY=1" in env
    [workdir] = of("WORKDIR")
    assert f"PYTHONPATH={workdir}" in env
    # What the deployment bakes in (cloudbuild.yaml and infra/steps-image.cloudbuild.yaml pass these).
    args = {a.split("=")[0] for a in of("ARG")}
    assert {"RELAY_BACKEND", "RELAY_SECRETS_PROJECT", "RELAY_NOTIFY_TOPIC"} <= args
    for name in ("cloudbuild.yaml", "infra/steps-image.cloudbuild.yaml"):
        passed = set(re.findall(r"--build-arg=(\w+)=", (ROOT / name).read_text()))
        assert passed and passed <= args, name


def test_the_copied_layout_lets_every_component_import(tmp_path: Path):
    """relay and pipelines as the COPY lines place them under WORKDIR, then what the components import."""
    [workdir] = of("WORKDIR")
    app = tmp_path / workdir.strip("/")
    for sources, dest in copies():
        for source in sources:
            if (ROOT / source).is_dir():
                target = app / dest
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(ROOT / source)
    imported = set()
    for component in (ROOT / "pipelines" / "components").glob("*.py"):
        imported |= set(re.findall(r"^\s+from ([\w.]+) import", component.read_text(), re.M))
    assert imported, "the components import their step code inside the function body"
    code = (
        f"import sys; sys.path.insert(0, {str(app)!r})\n"
        f"import relay, pipelines\n"
        f"assert relay.__file__.startswith({str(app)!r}), relay.__file__\n"
        f"assert pipelines.__file__.startswith({str(app)!r}), pipelines.__file__\n"
        + "".join(f"import {module}\n" for module in sorted(imported))
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
