"""Every command the docs' shell blocks show, run as a reader runs it: in one bash shell after another, from a
scratch folder laid out as the clone (examples/, devstack/), against one `make up` (the real `python -m devstack.up`,
emulators on free ports), page after page in the order a reader goes (README, quickstart, own pipeline,
operations). The own-pipeline guide's compile and policy edit run first, and the stack serves their catalog and
policy (its `make up CATALOG=build/catalog POLICY=build/policy.yaml`), so one stack start serves every page. A
command that cannot run here is in SHOWN_NOT_RUN with the test that covers it; a new command in a page fails
test_every_shell_line_is_run_or_shown_not_run_with_a_reason until it is one or the other.

The prose's inline commands are shapes (`relay rerun RUN_KEY [--force]`) or names (`relay sync`):
tests/docs/test_docs.py parses each, and tests/cli/test_main.py runs `relay --help` and each command's `--help`.

RUN_KEY is the run the reader just started (its key as `relay trigger` and `relay publish` print it; for `relay
report`, the ratchet's, the one run with a report), for `relay logs` and `relay report` once that run ended; every
run the pages start must succeed, as they say."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devstack.gcs import fake_gcs_available
from devstack.pubsub import emulator_available
from relay.adapters.gcs import GcsBlobStore
from relay.adapters.tokens import NoTokenSource
from relay.status import RunRecords, read_run
from tests.devstack.support import Up
from tests.docs.test_docs import ROOT, Line, shell_lines

# The pages whose commands run, in the order a reader meets them; the other pages' lines are all shown, not run.
ORDER = ("README.md", "docs/quickstart.md", "docs/own-pipeline.md", "docs/operations.md")
# What the stack is started with: run first, as the own-pipeline guide has the reader do before `make up`.
BEFORE_THE_STACK = (
    "relay compile examples/hello/hello.py --out build/catalog",
    "sed 's/pipelines: \\[push, ratchet\\]/pipelines: [push, ratchet, hello]/' devstack/policy.yaml"
    " > build/policy.yaml",
)
_DRY_RUN = "a real deploy; tests/docs/test_docs.py::test_each_deploy_command_the_docs_show_plans_a_deploy runs it"
_MUTATION = "minutes of mutation testing; tests/docs/test_docs.py::test_each_python_module_the_docs_run_exists"
SHOWN_NOT_RUN = {
    "make demo": "its own test: tests/integration/test_demo.py runs the demo",
    "make test": "runs every test, this one among them",
    "infra/deploy.sh --project my-project --region europe-west1 --policy policy.yaml": _DRY_RUN,
    "infra/deploy.sh --project my-project --backend kfp --policy policy.yaml --env RELAY_KFP_HOST="
    "https://kfp.example.com --env RELAY_AUTH=static --secret RELAY_STATIC_TOKEN=kfp-token": _DRY_RUN,
    "infra/deploy.sh --project my-project --policy policy.yaml --dry-run": _DRY_RUN,
    "infra/deploy.sh --project my-project --policy policy.yaml --lock-audit-retention": _DRY_RUN,
    "make mutate MODULE=naming": _MUTATION,
    ".venv/bin/python -m mutation.run naming --survivors": _MUTATION,
    ".venv/bin/python -m mutation.run service --integration": _MUTATION,
    "gcloud pubsub topics publish relay-triggers --attribute=action=cancel,run_key=nightly-2026-11-21": (
        "the real gcloud against the emulator: tests/devstack/test_up.py::"
        "test_the_readmes_gcloud_cancel_reaches_the_emulator_with_the_printed_exports"
    ),
}
# A command that ends as its line shows it, not with 0: its exit status and what it must say.
EXITS = {
    # The id shows a message id's shape: the stack's dead-letter subscription is empty, so it is not found.
    "relay dead-letters replay 4921061845123456": (1, "1 not found"),
    # The local backend, like KFP, cannot rerun only a run's failed tasks: a usage error saying so.
    "relay rerun RUN_KEY --from-failure": (2, "--from-failure: "),
}
RUN_KEY = "RUN_KEY"
_PRINTED_KEY = re.compile(r"^run key\s+(\S+)$", re.MULTILINE)
_ENDED = ("succeeded", "failed", "cancelled", "rejected", "skipped")
_AFTER_THE_END = ("relay logs ", "relay report ")
_RUN_TIMEOUT = 120.0


def command(line: Line) -> str:
    """The line without its comment: what a reader pastes."""
    return re.split(r"\s+#\s", line.text, maxsplit=1)[0].strip()


def key(line: Line) -> str:
    """The command, its words one space apart: how the tables here name it."""
    return " ".join(command(line).split())


def _page(line: Line) -> str:
    return str(line.page.relative_to(ROOT))


def runnable() -> list[Line]:
    """The lines the session runs, in its order: those the stack needs, then each page's in ORDER."""
    lines = [line for line in shell_lines() if key(line) not in SHOWN_NOT_RUN]
    first = [line for line in lines if key(line) in BEFORE_THE_STACK]
    rest = sorted((line for line in lines if line not in first), key=lambda line: ORDER.index(_page(line)))
    return first + rest


def test_every_shell_line_is_run_or_shown_not_run_with_a_reason():
    lines = shell_lines()
    commands = {key(line) for line in lines}
    assert set(SHOWN_NOT_RUN) - commands == set(), "SHOWN_NOT_RUN names a command no page shows any more"
    assert set(BEFORE_THE_STACK) | set(EXITS) <= commands
    unrun = [
        f"{line.where}: {line.text}" for line in lines if _page(line) not in ORDER and key(line) not in SHOWN_NOT_RUN
    ]
    assert unrun == [], "a page outside ORDER shows a command: add the page to ORDER, or the command to SHOWN_NOT_RUN"
    assert len(runnable()) >= 25, [line.where for line in runnable()]


@dataclass
class Session:
    """One reader's shell: its folder, its variables (what `source` set), and the runs it started."""

    folder: Path
    env: dict[str, str]
    keys: list[str] = field(default_factory=list)

    def run(self, line: Line) -> subprocess.CompletedProcess[str]:
        text = command(line)
        if line.argv[0] == "source":  # its variables outlive the line, as in the reader's shell
            shown = self._bash(f"{text} && env -0", line)
            self.env = dict(item.split("=", 1) for item in shown.stdout.split("\0") if "=" in item)
            return shown
        if RUN_KEY in text:
            text = text.replace(RUN_KEY, self._key_for(text))
        ran = self._bash(text, line)
        self.keys += _PRINTED_KEY.findall(ran.stdout)
        return ran

    def _bash(self, text: str, line: Line) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "--norc", "-c", text],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=_RUN_TIMEOUT,
        )

    def _key_for(self, text: str) -> str:
        """The run the line means; for what only an ended run has (its whole log, its report), once it ended."""
        wanted = "ratchet-" if text.startswith("relay report ") else ""
        candidates = [key for key in self.keys if key.startswith(wanted)]
        assert candidates, f"`{text}`: no run started before it on the pages"
        key = candidates[-1]
        if text.startswith(_AFTER_THE_END):
            self.wait(key)
        return key

    def wait(self, key: str) -> RunRecords:
        store = GcsBlobStore(endpoint=self.env["STORAGE_EMULATOR_HOST"], tokens=NoTokenSource())
        deadline = time.monotonic() + _RUN_TIMEOUT
        while True:
            run = read_run(store, self.env["RELAY_RESULTS_URI"], key)
            if run is not None and run.state in _ENDED:
                return run
            assert time.monotonic() < deadline, f"{key}: not ended within {_RUN_TIMEOUT:g} s: {run}"
            time.sleep(0.2)


def _clean_env(base: Mapping[str, str]) -> dict[str, str]:
    """The test's environment without anything of a stack or a deployment a developer's shell may hold."""
    kept = {
        name: value
        for name, value in base.items()
        if not name.startswith(("RELAY_", "STORAGE_EMULATOR", "PUBSUB_", "CLOUDSDK_"))
    }
    path = f"{Path(sys.executable).parent}{os.pathsep}{kept.get('PATH', '')}"  # `relay` on PATH, as env.sh puts it
    return {**kept, "PATH": path, "NO_COLOR": "1", "BROWSER": "true"}  # `relay report --open` opens `true`


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    missing = emulator_available() or fake_gcs_available()
    if missing:
        pytest.fail(f"the integration tests need the real emulators: {missing}")
    folder = tmp_path_factory.mktemp("docs") / "clone"
    folder.mkdir()
    for name in ("examples", "devstack"):  # what the pages' commands read, as in the clone
        (folder / name).symlink_to(ROOT / name)
    (folder / ".relay").mkdir()
    yield Session(folder, _clean_env(os.environ))


@pytest.mark.integration
def test_every_command_the_docs_show_runs_on_one_local_stack(session: Session):
    lines = runnable()
    before = [line for line in lines if key(line) in BEFORE_THE_STACK]
    failures: list[str] = []
    for line in before:
        _check(session, line, failures)
    assert not failures, "\n".join(failures)
    up = Up(
        session.folder / ".relay" / "up", session.folder / "build" / "catalog", session.folder / "build" / "policy.yaml"
    )
    try:
        up.start()
        for line in lines[len(before) :]:
            _check(session, line, failures)
        ended = {key: _how_it_ended(session.wait(key)) for key in session.keys}
        up.down()
    finally:
        up.kill()
    assert not failures, "\n".join(failures)
    assert len(ended) >= 6 and set(ended.values()) == {"succeeded"}, ended


def _how_it_ended(run: RunRecords) -> str:
    """The run's state; "succeeded" too for one a newer generation superseded, as the README's Supersede shows."""
    superseded = run.state == "cancelled" and (run.result or {}).get("superseded_by")
    return "succeeded" if superseded else run.state


def _check(session: Session, line: Line, failures: list[str]) -> None:
    """Run the line; what went wrong is added to `failures`, and the next line still runs."""
    try:
        ran = session.run(line)
    except AssertionError as unrunnable:  # its run key names no run, or that run never ended
        failures.append(f"{line.where}: `{line.text}`: {unrunnable}")
        return
    code, said = EXITS.get(key(line), (0, ""))
    if ran.returncode != code or said not in ran.stdout + ran.stderr:
        failures.append(f"{line.where}: `{line.text}` exited {ran.returncode}: {ran.stderr.strip() or ran.stdout}")
