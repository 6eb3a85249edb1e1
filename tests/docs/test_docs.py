"""The docs' commands, held to what runs them: each `relay` line through the real CLI's parser, each `make` target
in the Makefile, each `infra/deploy.sh` line through the script's dry run (the preflight included), each `sed` run
on the file it edits, each `python -m` module importable, each file and test the docs name present, each link
between the pages resolving. A renamed flag, a removed command or a moved test fails here, naming the page and line
that still shows it."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from relaycli.main import COMMANDS, build_parser
from tests.infra.support import run_script

ROOT = Path(__file__).resolve().parents[2]
PAGES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
SHELL = frozenset({"bash", "sh", "shell", "console"})
FENCE = re.compile(r"^([ \t]*)(```+)(\S*)[^\n]*\n(.*?)^\1\2[ \t]*$", re.MULTILINE | re.DOTALL)  # in a list item too
SPAN = re.compile(r"`([^`]+)`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# Shell lines with nothing of Relay's to check.
NOT_RELAYS = frozenset({"echo", "source"})
# The one gcloud line, which tests/devstack/test_up.py runs against the emulator
# (::test_the_readmes_gcloud_cancel_reaches_the_emulator_with_the_printed_exports).
GCLOUD = ("docs/operations.md", "gcloud pubsub topics publish ")


@dataclass(frozen=True)
class Line:
    """A command as a page shows it: where, and its words (comments and line continuations gone)."""

    page: Path
    number: int
    text: str
    fenced: bool

    @property
    def where(self) -> str:  # also the test id: page and line
        return f"{self.page.relative_to(ROOT)}:{self.number}"

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.text, comments=True)

    @property
    def flags(self) -> set[str]:
        return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", self.text.partition(" #")[0]))


def _number(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _fences(page: Path) -> Iterator[tuple[str, int, str]]:
    """Each fenced block: its language, the line number of its first content line, its content."""
    text = page.read_text()
    for match in FENCE.finditer(text):
        body = "".join(line.removeprefix(match.group(1)) for line in match.group(4).splitlines(keepends=True))
        yield match.group(3), _number(text, match.start(4)), body


def _prose(page: Path) -> str:
    """The page without its fenced blocks (blanked line for line, so numbers still point at the page)."""
    return FENCE.sub(lambda match: "\n" * match.group(0).count("\n"), page.read_text())


def shell_lines() -> list[Line]:
    found: list[Line] = []
    for page in PAGES:
        for language, first, body in _fences(page):
            if language not in SHELL:
                continue
            pending, start = "", first
            for offset, raw in enumerate(body.splitlines()):
                if not pending:
                    start = first + offset
                pending += raw.removesuffix("\\") + " "
                if raw.endswith("\\"):
                    continue
                if pending.strip() and not pending.lstrip().startswith("#"):
                    found.append(Line(page, start, pending.strip(), fenced=True))
                pending = ""
    return found


def inline_commands() -> list[Line]:
    """Inline spans that name a command: a whole one (`relay runs --limit 50`), a part of one (`relay status
    --wait`) or its shape (`relay rerun RUN_KEY [--force]`)."""
    found: list[Line] = []
    for page in PAGES:
        text = _prose(page)
        for match in SPAN.finditer(text):
            span = " ".join(match.group(1).split())
            if span.startswith(("relay ", "make ", "infra/deploy.sh ")):
                found.append(Line(page, _number(text, match.start()), span, fenced=False))
    return found


def commands(program: str) -> list[Line]:
    return [line for line in [*shell_lines(), *inline_commands()] if line.argv[:1] == [program]]


def _ids(lines: list[Line]) -> list[str]:
    return [line.where for line in lines]


RELAY_LINES = commands("relay")
MAKE_LINES = commands("make")
DEPLOY_LINES = commands("infra/deploy.sh")


RELAY_BLOCKS = [line for line in RELAY_LINES if line.fenced]
RELAY_SPANS = [line for line in RELAY_LINES if not line.fenced]


def test_the_docs_show_commands_to_check():
    # An extraction that finds nothing would let every test below pass by checking nothing.
    assert len(RELAY_BLOCKS) >= 20, _ids(RELAY_BLOCKS)
    assert len(RELAY_SPANS) >= 20, _ids(RELAY_SPANS)
    assert {line.argv[1] for line in MAKE_LINES} >= {"demo", "test", "up"}
    assert len([line for line in DEPLOY_LINES if line.fenced]) >= 3, _ids(DEPLOY_LINES)


def test_every_shell_line_is_one_these_tests_check():
    """A new kind of command in a page gets a check here before it ships."""
    checked = {"relay", "make", "infra/deploy.sh", "sed", *NOT_RELAYS}
    unchecked = [
        f"{line.where}: {line.text}"
        for line in shell_lines()
        if line.argv[0] not in checked
        and not _python_module(line.argv)
        and not (str(line.page.relative_to(ROOT)) == GCLOUD[0] and line.text.startswith(GCLOUD[1]))
    ]
    assert unchecked == []


@pytest.mark.parametrize("line", RELAY_BLOCKS, ids=_ids(RELAY_BLOCKS))
def test_each_relay_command_the_docs_show_is_one_the_cli_accepts(line: Line):
    """A command in a shell block, whole, through the parser `relay` itself runs."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            args = build_parser().parse_args(line.argv[1:])
        except SystemExit as stop:
            assert stop.code == 0, f"{line.where}: `{line.text}`: {stderr.getvalue().strip()}"
            return
    assert isinstance(args, argparse.Namespace) and args.command, f"{line.where}: `{line.text}` names no command"
    # argparse takes `--out` for `--output`: the docs show an option's whole name.
    assert line.flags - _options(_subcommands()[args.command]) == set(), f"{line.where}: `{line.text}`"


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    [choices] = [action.choices for action in build_parser()._actions if isinstance(action.choices, dict)]
    return dict(choices)


def _options(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of a parser and of the parsers under it (`relay dead-letters replay --all`)."""
    found = {option for action in parser._actions for option in action.option_strings}
    for action in parser._actions:
        if isinstance(action.choices, dict):
            for sub in action.choices.values():
                found |= _options(sub)
    return found


@pytest.mark.parametrize("line", RELAY_SPANS, ids=_ids(RELAY_SPANS))
def test_each_relay_command_the_prose_names_has_the_options_it_shows(line: Line):
    """A span in the prose may be part of a command (`relay status --wait`) or its shape (`relay rerun RUN_KEY
    [--force]`): its command must exist and take every option it shows."""
    name = line.text.split()[1]
    if name.startswith("-"):
        assert line.flags <= _options(build_parser()), f"{line.where}: `{line.text}`"
        return
    assert name in _subcommands(), f"{line.where}: `{line.text}`: relay has {sorted(_subcommands())}"
    assert line.flags - _options(_subcommands()[name]) == set(), f"{line.where}: `{line.text}`"


def test_every_relay_command_is_in_the_docs():
    shown = {line.text.split()[1] for line in RELAY_LINES}
    assert {command.name for command in COMMANDS} - shown == set()


@cache
def make_targets() -> frozenset[str]:
    rule = re.compile(r"^([A-Za-z0-9_.-]+(?:[ \t]+[A-Za-z0-9_.-]+)*)[ \t]*::?(?!=)")
    targets: set[str] = set()
    for text in (ROOT / "Makefile").read_text().splitlines():
        match = rule.match(text)
        if match:
            targets.update(match.group(1).split())
    return frozenset(targets)


@pytest.mark.parametrize("line", MAKE_LINES, ids=_ids(MAKE_LINES))
def test_each_make_target_the_docs_name_is_in_the_makefile(line: Line):
    named = [word for word in line.argv[1:] if "=" not in word and not word.startswith("-")]
    assert named, f"{line.where}: `{line.text}` names no target"
    assert set(named) <= make_targets(), f"{line.where}: `{line.text}`: the Makefile has {sorted(make_targets())}"


@cache
def deploy_flags() -> frozenset[str]:
    shown = run_script("--help")
    assert shown.returncode == 0, shown.stderr
    return frozenset(re.findall(r"(?<![\w-])--[a-z][a-z-]*", shown.stdout)) | {"--help"}  # what printed it


@pytest.mark.parametrize("line", DEPLOY_LINES, ids=_ids(DEPLOY_LINES))
def test_each_deploy_flag_the_docs_show_is_one_deploy_sh_takes(line: Line):
    assert line.flags - deploy_flags() == set(), f"{line.where}: `{line.text}`"


# Options the prose names that belong to tools outside Relay.
OUTSIDE_OPTIONS = {"--require-hashes": "pip", "--set-secrets": "gcloud functions deploy", "--pdeathsig": "setpriv"}


def test_each_option_the_prose_names_alone_is_one_relay_or_deploy_sh_takes():
    """`--records-retention 30d` in a sentence about deploy.sh, `--interval` in one about relay status."""
    known = _options(build_parser()) | deploy_flags() | set(OUTSIDE_OPTIONS)
    named: list[tuple[str, str]] = []
    for page in PAGES:
        text = _prose(page)
        for match in SPAN.finditer(text):
            option = re.match(r"--[a-z][a-z-]*", match.group(1))
            if option:
                named.append((f"{page.relative_to(ROOT)}:{_number(text, match.start())}", option.group(0)))
    assert len(named) >= 20, named
    assert [f"{where}: {option}" for where, option in named if option not in known] == []


DEPLOY_BLOCKS = [line for line in DEPLOY_LINES if line.fenced]
OWN_POLICY = """\
tenants:
  - name: lab
    triggers: [gs://my-project-relay-triggers/]
    topics: [projects/my-project/topics/relay-triggers]
"""


@pytest.mark.parametrize("line", DEPLOY_BLOCKS, ids=_ids(DEPLOY_BLOCKS))
def test_each_deploy_command_the_docs_show_plans_a_deploy(line: Line, tmp_path: Path):
    """Run as written (a dry run: it prints every command and runs none), `policy.yaml` being a reader's own that the
    preflight accepts: one tenant taking the deployed bucket's and topic's triggers. (docs/policy.md's example binds
    secrets, which a deploy must grant with --step-secret; tests/unit/test_policy_parsing.py reads it.)"""
    (tmp_path / "policy.yaml").write_text(OWN_POLICY)
    args = line.argv[1:] if "--dry-run" in line.argv else [*line.argv[1:], "--dry-run"]
    planned = run_script(*args, cwd=tmp_path)
    assert planned.returncode == 0, f"{line.where}: `{line.text}`: {planned.stderr}"
    assert "gcloud functions deploy" in planned.stdout


SED_LINES = [line for line in shell_lines() if line.argv[0] == "sed"]


@pytest.mark.parametrize("line", SED_LINES, ids=_ids(SED_LINES))
def test_each_edit_the_docs_show_changes_the_file_it_reads(line: Line, tmp_path: Path):
    """`sed 's/pipelines: [push, ratchet]/.../' devstack/policy.yaml > build/policy.yaml` keeps working only while
    the file still says what the pattern looks for; a sed that matches nothing copies the file and says nothing."""
    [read] = [word for word in line.argv[2:] if (ROOT / word).is_file()]
    [_, written] = line.text.split(" > ")
    (tmp_path / read).parent.mkdir(parents=True)
    (tmp_path / read).write_text((ROOT / read).read_text())
    (tmp_path / written).parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["bash", "-c", line.text], cwd=tmp_path, check=True, timeout=30)
    assert (tmp_path / written).read_text() != (ROOT / read).read_text(), f"{line.where}: `{line.text}` changed nothing"


def _python_module(argv: list[str]) -> str:
    """The module of `python -m MODULE ...` (any python: .venv/bin/python too), else ""."""
    if len(argv) > 2 and Path(argv[0]).name.startswith("python") and argv[1] == "-m":
        return argv[2]
    return ""


def python_modules() -> list[tuple[str, str]]:
    found = [(line.where, _python_module(line.argv)) for line in shell_lines()]
    for page in PAGES:
        text = _prose(page)
        for match in SPAN.finditer(text):
            module = re.match(r"python -m ([\w.]+)", " ".join(match.group(1).split()))
            if module:
                found.append((f"{page.relative_to(ROOT)}:{_number(text, match.start())}", module.group(1)))
    return [(where, module) for where, module in found if module]


def test_each_python_module_the_docs_run_exists():
    modules = python_modules()
    assert len(modules) >= 5, modules
    missing = [f"{where}: {module}" for where, module in modules if importlib.util.find_spec(module) is None]
    assert missing == []


REPO_PATH = re.compile(r"(?<![\w./-])(?:examples|devstack|pipelines|infra|functions|relaycli|bench|mutation)/[\w./-]*")


def test_every_file_of_the_repository_the_docs_name_exists():
    """`relay trigger examples/push.json` parses whatever the file is called; it runs only while the file is there.
    The prose and the shell lines count; the layout's tree names its paths relative to its own lines."""
    named = [(line.where, path) for line in shell_lines() for path in REPO_PATH.findall(line.text)]
    for page in PAGES:
        text = _prose(page)
        for match in REPO_PATH.finditer(text):
            named.append((f"{page.relative_to(ROOT)}:{_number(text, match.start())}", match.group(0)))
    named = [(where, path.rstrip(".")) for where, path in named]
    assert len(named) >= 30, named
    assert [f"{where}: {path}" for where, path in named if not (ROOT / path).exists()] == []


TEST_FILE = re.compile(r"^(?:tests/[\w/]+/)?test_\w+\.py$")
TEST_NAME = re.compile(r"^test(_[a-z0-9]+){3,}$")  # a test's name is a sentence; `test_info` is a workflow key


def cited_tests() -> list[tuple[str, str, str]]:
    """(where, file, test) for every test a page cites: `tests/x/test_y.py::test_z`, `test_y.py`, `::test_z` (of the
    file cited last), a bare `test_z`; file or test may be empty."""
    found: list[tuple[str, str, str]] = []
    for page in PAGES:
        text = _prose(page)
        last = ""
        for match in SPAN.finditer(text):
            span = "".join(match.group(1).split())
            where = f"{page.relative_to(ROOT)}:{_number(text, match.start())}"
            path, _, name = span.partition("::")
            if path and TEST_FILE.match(path):
                last = path
                found.append((where, path, name))
            elif not path and name and TEST_NAME.match(name):
                found.append((where, last, name))
            elif TEST_NAME.match(span):
                found.append((where, "", span))
    return found


def _test_files(cited: str) -> list[Path]:
    if not cited:
        return sorted((ROOT / "tests").rglob("test_*.py"))
    if "/" in cited:
        return [ROOT / cited] if (ROOT / cited).is_file() else []
    return sorted((ROOT / "tests").rglob(cited))


def test_every_test_the_docs_cite_exists():
    citations = cited_tests()
    assert len(citations) >= 30, citations
    missing: list[str] = []
    for where, cited, name in citations:
        files = _test_files(cited)
        if not files:
            missing.append(f"{where}: no file {cited}")
        elif name and not any(re.search(rf"^\s*def {name}\(", f.read_text(), re.MULTILINE) for f in files):
            missing.append(f"{where}: no test {name} in {cited or 'tests/'}")
    assert missing == []


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but - and _ dropped, spaces as -."""
    headings = re.findall(r"^#+ (.+)$", _prose(page), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_every_link_between_the_pages_resolves():
    links = [(page, target) for page in PAGES for target in LINK.findall(_prose(page))]
    local = [(page, target) for page, target in links if not re.match(r"[a-z]+:", target)]
    assert len(local) >= 10, local
    broken: list[str] = []
    for page, target in local:
        path, _, anchor = target.partition("#")
        goal = (page.parent / path).resolve() if path else page
        if not goal.exists():
            broken.append(f"{page.relative_to(ROOT)}: {target}: no such file")
        elif anchor and goal.suffix == ".md" and anchor not in _anchors(goal):
            broken.append(f"{page.relative_to(ROOT)}: {target}: no such heading")
    assert broken == []


def test_every_page_is_linked_from_the_readme():
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in LINK.findall(_prose(ROOT / "README.md"))}
    assert {page.resolve() for page in PAGES[1:]} - linked == set()
