"""Mutation testing of Relay's core with mutmut: `make mutate [MODULE=naming]` (not in CI: minutes per module).

Each module is measured in a scratch tree of its own, .relay/mutate/<module>/, where paths equal import names: mutmut
names a mutant after its file's path, and the tests import `relay.naming`, not `functions.relay.naming`. So the tree
has functions/relay/ at its top as relay/, and everything else as in the work tree (uncommitted edits and new files
included, ignored files left out). Only the module's own file is mutated; the rest is copied as it is. Separate
trees let several modules, or several people, run at once; each run forks at most --max-children test runs.

    .venv/bin/python -m mutation.run naming checksums    # or `make mutate MODULE=naming`; no module: all of them
    .venv/bin/python -m mutation.run naming --survivors  # the last run's survivors of naming, each with its diff
    .venv/bin/python -m mutation.run service --integration  # tests that start servers count too (slow)
    .venv/bin/python -m mutation.run naming --tests tests/unit  # only these tests (say, when others fail to import)

mutmut's own commands work in a module's tree once it has run there, e.g.
`cd .relay/mutate/naming && ../../../.venv/bin/mutmut results` lists the survivors and
`../../../.venv/bin/mutmut show relay.naming.x_run_key__mutmut_3` prints one.

The score is (killed + timed out) / (mutants - equivalent): a mutant that makes a test hang is caught too. The
equivalent mutants, which no test can tell from the original, are listed with their reasons in equivalent.toml beside
this file and reported apart; a listed mutant that no longer survives is reported as stale.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import shutil
import subprocess
import sys
import tomllib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / ".relay" / "mutate"
EQUIVALENT = Path(__file__).with_name("equivalent.toml")
MUTMUT = Path(sys.executable).with_name("mutmut")
# The modules that carry Relay's promises, by the name `make mutate MODULE=...` takes; paths in the scratch tree.
MODULES = {
    "naming": "relay/naming.py",
    "triggers": "relay/triggers.py",
    "catalog": "relay/catalog.py",
    "events": "relay/events.py",
    "service": "relay/service.py",
    "records": "relay/records.py",
    "policy_model": "relay/policy_model.py",
    "policy_reader": "relay/policy_reader.py",
    "policy_decisions": "relay/policy_decisions.py",
    "policy_locations": "relay/policy_locations.py",
    "baseline": "pipelines/steps/ratchet/baseline.py",
    "checksums": "pipelines/steps/checksums.py",
}
# A name that stands for several modules: relay/policy.py only gathers the modules it was split into, so
# `make mutate MODULE=policy` measures those (each in a tree of its own, scored apart).
GROUPS = {"policy": ("policy_model", "policy_reader", "policy_decisions", "policy_locations")}
# Left out: tests/infra and tests/test_architecture.py read the repository's own layout (functions/relay/...), which
# the scratch tree changes, and test the deployment and the imports, not these modules' behaviour; the local
# backend's tests run Relay in a detached process of another working directory, where mutmut's recording of which
# test calls what cannot find its configuration and fails the run.
TESTS = [
    "tests",
    "--ignore=tests/infra",
    "--ignore=tests/test_architecture.py",
    "--ignore=tests/adapters/test_local_backend.py",
]
# mutmut's exit codes by what they mean here (mutmut.stats.status_by_exit_code); any other code is suspicious.
KILLED = {1, 3}
SURVIVED = {0}
NO_TESTS = {5, 33}
TIMEOUT = {36, -24, 24, 152, 255}


# mutmut runs the suite in its own process (to learn which tests reach which function); a thread that a test leaves
# behind keeps that process from exiting after its report. So it exits at once when mutmut is done.
_RUN_MUTMUT = """
import os, sys
from mutmut.__main__ import cli
try:
    cli(sys.argv[1:], prog_name="mutmut")
except SystemExit as done:
    code = done.code if isinstance(done.code, int) else 1
else:
    code = 0
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
"""


@dataclass(frozen=True)
class Score:
    module: str
    mutants: int
    killed: int
    survived: tuple[str, ...]
    equivalent: tuple[str, ...]
    timeout: int
    no_tests: int
    other: int
    stale: tuple[str, ...]

    @property
    def percent(self) -> float:
        counted = self.mutants - len(self.equivalent)
        return 100.0 * (self.killed + self.timeout) / counted if counted else 100.0


def equivalents() -> dict[str, str]:
    """The mutants known to change nothing observable, by name, with the reason each stays."""
    entries = tomllib.loads(EQUIVALENT.read_text()).get("equivalent", [])
    return {entry["mutant"]: entry["reason"] for entry in entries}


def tree_files() -> Iterator[tuple[Path, Path]]:
    """Each file of the work tree (tracked or new, not ignored) with its place in the scratch tree."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not source.is_file():  # deleted in the work tree, not yet in a commit
            continue
        yield source, Path(name.removeprefix("functions/") if name.startswith("functions/relay/") else name)


def build_tree(tree: Path) -> None:
    """Bring the scratch tree up to date with the work tree, touching only the files that changed."""
    wanted = set()
    for source, place in tree_files():
        target = tree / place
        wanted.add(target)
        if target.is_file() and target.read_bytes() == source.read_bytes():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)  # keeps the time: mutmut re-mutates a file whose source is newer
    for stale in [p for p in tree.rglob("*") if p.is_file() and "mutants" not in p.relative_to(tree).parts[:1]]:
        if stale not in wanted and stale.name != ".lock":
            stale.unlink()


def configure(tree: Path, module: str, tests: Sequence[str], integration: bool) -> None:
    """The scratch tree's pyproject.toml: the work tree's, with mutmut told what to mutate and what to run."""
    top = sorted({p.name for p in tree.iterdir()} - {"relay", "pipelines", "mutants", ".lock"})
    settings = {
        "source_paths": ["relay", "pipelines"],
        "only_mutate": [MODULES[module]],
        "also_copy": top,
        "pytest_add_cli_args": [] if integration else ["-m", "not integration"],
        "pytest_add_cli_args_test_selection": list(tests),
        # The scratch tree sits inside Relay's repository: mutmut is not to read that repository's git state.
        "use_git_change_detection": False,
    }
    lines = [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    text = (ROOT / "pyproject.toml").read_text()
    (tree / "pyproject.toml").write_text(text + "\n[tool.mutmut]\n" + "\n".join(lines) + "\n")


def measure(module: str, max_children: int, tests: Sequence[str], integration: bool) -> int:
    """Run mutmut on one module from scratch (results of an earlier run would hide what new tests kill)."""
    tree = SCRATCH / module
    tree.mkdir(parents=True, exist_ok=True)
    with (tree / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            sys.exit(f"mutate: {module} is being measured already (in {tree})")
        build_tree(tree)
        configure(tree, module, tests, integration)
        shutil.rmtree(tree / "mutants", ignore_errors=True)
        command = [sys.executable, "-c", _RUN_MUTMUT, "run", "--max-children", str(max_children)]
        return subprocess.run(command, cwd=tree).returncode


def score(module: str, known: dict[str, str]) -> Score:
    meta = SCRATCH / module / "mutants" / (MODULES[module] + ".meta")
    codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    survived = tuple(sorted(name for name, code in codes.items() if code in SURVIVED))
    counts = Counter(
        "killed" if code in KILLED else "timeout" if code in TIMEOUT else "no_tests" if code in NO_TESTS else "other"
        for code in codes.values()
        if code not in SURVIVED
    )
    prefix = MODULES[module].removesuffix(".py").replace("/", ".") + "."
    return Score(
        module=module,
        mutants=len(codes),
        killed=counts["killed"],
        survived=tuple(name for name in survived if name not in known),
        equivalent=tuple(name for name in survived if name in known),
        timeout=counts["timeout"],
        no_tests=counts["no_tests"],
        other=counts["other"],
        stale=tuple(sorted(name for name in known if name.startswith(prefix) and name not in survived)),
    )


def table(scores: Sequence[Score]) -> str:
    header = ("module", "mutants", "killed", "survived", "equivalent", "timeout", "no tests", "other", "score")
    rows = [header] + [
        (
            s.module,
            str(s.mutants),
            str(s.killed),
            str(len(s.survived)),
            str(len(s.equivalent)),
            str(s.timeout),
            str(s.no_tests),
            str(s.other),
            f"{s.percent:.1f}%",
        )
        for s in scores
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def show_survivors(module: str, known: dict[str, str]) -> None:
    for name in score(module, known).survived:
        subprocess.run([str(MUTMUT), "show", name], cwd=SCRATCH / module, check=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mutate", description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=f"{', '.join((*MODULES, *GROUPS))} (default: all)")
    parser.add_argument("--max-children", type=int, default=2, help="test runs at once per module (default 2)")
    parser.add_argument("--integration", action="store_true", help="include tests that start servers")
    parser.add_argument("--tests", nargs="+", default=TESTS, help="what pytest selects (default: tests/ but infra)")
    parser.add_argument("--survivors", action="store_true", help="show the last run's survivors, do not run")
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in MODULES and m not in GROUPS]
    if unknown:
        expected = ", ".join((*MODULES, *GROUPS))
        parser.error(f"unknown module {', '.join(unknown)}: expected one of {expected}")
    modules = [part for m in args.modules for part in GROUPS.get(m, (m,))] or list(MODULES)
    known = equivalents()
    if args.survivors:
        for module in modules:
            show_survivors(module, known)
        return 0
    failed = [m for m in modules if measure(m, args.max_children, args.tests, args.integration) != 0]
    scores = [score(m, known) for m in modules if m not in failed]
    print(table(scores))
    for s in scores:
        for name in s.stale:
            print(f"{s.module}: {name} is listed in {EQUIVALENT.name} but did not survive: remove it")
    if failed:
        print(f"mutate: mutmut failed on {', '.join(failed)} (its output is above)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
