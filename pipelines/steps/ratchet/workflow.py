"""The seed's workflow file, parsed and checked, with every problem reported at once."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from relay.errors import Problem
from relay.triggers import strict_json

MAX_TIMEOUT = 3000.0  # the seed's documented maximum for a test's timeout, in seconds
DEFAULT_TIMEOUT = 300.0  # the seed left it optional without saying how long; Algorithmia's own default call timeout
MAX_REPEAT = 100
# The seed's platform: algorithm names are case-sensitive identifiers; they become folder and module names here.
ALGORITHM_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,127}\Z")
# The workflow's name is a path segment of the baseline's location.
WORKFLOW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")
DATA_PREFIX = "data://.my/"

_TOP = ("name", "source_info", "test_info", "algorithms", "run_only")
_SOURCE_INFO = ("cluster_address",)
_TEST_INFO = ("entrypoint", "tests")
_TEST = ("name", "payload", "timeout", "repeat", "tolerance", "slack")
_ALGORITHM = (
    "name",
    "code_path",
    "code",
    "data_files",
    "environment_name",
    "environment",
    "language",
    "test_payload",
    "depends_on",
    "timeout",
)


class WorkflowError(ValueError):
    """The workflow cannot run; `problems` lists every reason, each with field, expected and found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("invalid workflow: " + "; ".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class BenchmarkTest:
    """One of `test_info.tests`: called against the entrypoint `repeat` times, each call within `timeout`."""

    name: str
    payload: Any
    timeout: float = DEFAULT_TIMEOUT
    repeat: int = 1
    tolerance: float | None = None  # None: the run's `tolerance` parameter
    slack: float = 0.0  # seconds added to the limit: room for timing noise on millisecond-scale tests


@dataclass(frozen=True)
class Algorithm:
    name: str
    code: str | None  # `code_path` or `code`; None means the folder `algorithms/<name>/` under the source
    data_files: tuple[str, ...]
    environment: str  # `environment_name`, `environment` or `language`; the destination decides what it means
    test_payload: Any
    depends_on: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT  # for the validation call
    declared: tuple[tuple[str, str], ...] = ()  # the environment keys as written, for the record


@dataclass(frozen=True)
class Workflow:
    name: str
    algorithms: tuple[Algorithm, ...]  # in the workflow's order: dependencies first
    entrypoint: str | None = None
    tests: tuple[BenchmarkTest, ...] = ()
    source_cluster: str = ""  # `source_info.cluster_address`, recorded only: Relay reads from its `source`
    run_only: bool = False  # the algorithms are on the destination already: validate and benchmark only

    def algorithm(self, name: str) -> Algorithm:
        for algorithm in self.algorithms:
            if algorithm.name == name:
                return algorithm
        raise KeyError(name)


def load_workflow(data: bytes, *, where: str, default_name: str) -> Workflow:
    """Parse a workflow file's bytes (strict JSON: no duplicate keys, no NaN)."""
    try:
        document = strict_json(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WorkflowError([Problem(where, "a JSON workflow document", f"unreadable JSON ({exc})")]) from None
    return parse_workflow(document, default_name=default_name)


def parse_workflow(document: object, *, default_name: str = "") -> Workflow:
    """A checked Workflow; WorkflowError listing every problem otherwise.

    Both the seed's documented and its actually-used key names are accepted: `code_path` or `code`,
    `environment_name` or `language`, and `environment`, which its code required in April-May 2021 (with
    `language` then saying how dependencies were declared). `name` (the workflow's, else `default_name`) is
    Relay's addition.
    """
    problems: list[Problem] = []
    top = _object(document, "workflow", _TOP, problems)
    if top is None:
        raise WorkflowError(problems)
    name = top.get("name", default_name)
    if not isinstance(name, str) or not WORKFLOW_NAME.match(name):
        problems.append(Problem("name", f"a workflow name matching {WORKFLOW_NAME.pattern}", _show(name)))
    source_cluster = ""
    if "source_info" in top:
        info = _object(top["source_info"], "source_info", _SOURCE_INFO, problems)
        if info is not None:
            source_cluster = _string(info, "cluster_address", "source_info.cluster_address", problems, required=False)
    run_only = top.get("run_only", False)
    if not isinstance(run_only, bool):
        problems.append(Problem("run_only", "true or false", _show(run_only)))
    algorithms = _algorithms(top.get("algorithms"), problems)
    names = [a.name for a in algorithms]
    entrypoint: str | None = None
    tests: tuple[BenchmarkTest, ...] = ()
    if "test_info" in top:
        entrypoint, tests = _test_info(top["test_info"], names, problems)
    if problems:
        raise WorkflowError(problems)
    return Workflow(
        name=str(name),
        algorithms=tuple(algorithms),
        entrypoint=entrypoint,
        tests=tests,
        source_cluster=source_cluster,
        run_only=bool(run_only),
    )


def _algorithms(value: object, problems: list[Problem]) -> list[Algorithm]:
    if not isinstance(value, list) or not value:
        problems.append(Problem("algorithms", "a non-empty list of algorithms", _show(value)))
        return []
    parsed: list[Algorithm] = []
    seen: list[str] = []
    for index, item in enumerate(value):
        where = f"algorithms[{index}]"
        entry = _object(item, where, _ALGORITHM, problems)
        if entry is None:
            continue
        name = entry.get("name")
        if not isinstance(name, str) or not ALGORITHM_NAME.match(name):
            expected = f"an algorithm name matching {ALGORITHM_NAME.pattern}"
            problems.append(Problem(f"{where}.name", expected, _show(name)))
            continue
        if name in seen:
            problems.append(Problem(f"{where}.name", "a name no other algorithm has", f"a second {name!r}"))
            continue
        code = _one_of(entry, ("code_path", "code"), where, problems, required=False)
        if "environment" in entry:
            # The seed's code of April-May 2021 read `environment` (the image: python3, tensorflow-1.14) and took
            # `language` for how dependencies were declared (python-pip-old, python-anaconda): not an environment.
            environment = _one_of(entry, ("environment_name", "environment"), where, problems, required=True)
            language = entry.get("language", "python-pip-old")  # the seed's default then
            if not isinstance(language, str) or not language.strip():
                problems.append(Problem(f"{where}.language", "a non-empty string", _show(language)))
        else:
            environment = _one_of(entry, ("environment_name", "language"), where, problems, required=True)
        declared = tuple((k, str(entry[k])) for k in ("environment_name", "environment", "language") if k in entry)
        if "test_payload" not in entry:
            problems.append(Problem(f"{where}.test_payload", "the payload that validates the algorithm", "nothing"))
        data_files = _data_files(entry.get("data_files", []), f"{where}.data_files", name, problems)
        depends_on = _depends_on(entry.get("depends_on", []), f"{where}.depends_on", name, seen, problems)
        timeout = _timeout(entry, f"{where}.timeout", problems)
        seen.append(name)
        parsed.append(
            Algorithm(
                name=name,
                code=code or None,
                data_files=data_files,
                environment=environment,
                test_payload=entry.get("test_payload"),
                depends_on=depends_on,
                timeout=timeout,
                declared=declared,
            )
        )
    return parsed


def _test_info(
    value: object, names: list[str], problems: list[Problem]
) -> tuple[str | None, tuple[BenchmarkTest, ...]]:
    info = _object(value, "test_info", _TEST_INFO, problems)
    if info is None:
        return None, ()
    entrypoint = info.get("entrypoint")
    if not isinstance(entrypoint, str) or entrypoint not in names:
        expected = f"the name of one of the algorithms ({', '.join(names) or 'none parsed'})"
        problems.append(Problem("test_info.entrypoint", expected, _show(entrypoint)))
        entrypoint = None
    raw_tests = info.get("tests")
    if not isinstance(raw_tests, list):
        problems.append(Problem("test_info.tests", "a list of tests", _show(raw_tests)))
        return entrypoint, ()
    tests: list[BenchmarkTest] = []
    for index, item in enumerate(raw_tests):
        where = f"test_info.tests[{index}]"
        entry = _object(item, where, _TEST, problems)
        if entry is None:
            continue
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            problems.append(Problem(f"{where}.name", "a non-empty test name", _show(name)))
            continue
        if any(t.name == name for t in tests):
            problems.append(Problem(f"{where}.name", "a name no other test has", f"a second {name!r}"))
            continue
        if "payload" not in entry:
            problems.append(Problem(f"{where}.payload", "the payload sent to the entrypoint", "nothing"))
        repeat = entry.get("repeat", 1)
        if not _is_int(repeat) or not 1 <= repeat <= MAX_REPEAT:
            problems.append(Problem(f"{where}.repeat", f"a whole number from 1 to {MAX_REPEAT}", _show(repeat)))
            repeat = 1
        tolerance = entry.get("tolerance")
        if tolerance is not None and (not _is_number(tolerance) or tolerance < 0):
            problems.append(Problem(f"{where}.tolerance", "a number of at least 0 (0.1 is 10 %)", _show(tolerance)))
            tolerance = None
        slack = entry.get("slack", 0.0)
        if not _is_number(slack) or slack < 0:
            problems.append(Problem(f"{where}.slack", "a number of seconds, at least 0", _show(slack)))
            slack = 0.0
        tests.append(
            BenchmarkTest(
                name=name,
                payload=entry.get("payload"),
                timeout=_timeout(entry, f"{where}.timeout", problems),
                repeat=int(repeat),
                tolerance=None if tolerance is None else float(tolerance),
                slack=float(slack),
            )
        )
    return entrypoint, tuple(tests)


def _data_files(value: object, where: str, algorithm: str, problems: list[Problem]) -> tuple[str, ...]:
    if not isinstance(value, list):
        problems.append(Problem(where, "a list of data://.my/<collection>/<file> URIs", _show(value)))
        return ()
    files: list[str] = []
    landed: dict[str, str] = {}  # file name -> the data file that lands there
    for index, uri in enumerate(value):
        rest = uri[len(DATA_PREFIX) :] if isinstance(uri, str) and uri.startswith(DATA_PREFIX) else ""
        collection, _, path = rest.partition("/")
        segments = [collection, *path.split("/")]
        if not collection or not path or any(s in ("", ".", "..") for s in segments):
            expected = "data://.my/<collection>/<file> (the seed's generic form; <algo> may name the collection)"
            problems.append(Problem(f"{where}[{index}]", expected, _show(uri)))
            continue
        # Each lands in the algorithm's collection under its file name, as on the seed, which let a second file of
        # the same name silently replace the first.
        file_name = path.rsplit("/", 1)[-1]
        if file_name in landed:
            expected = f"data files of distinct names: each lands at data://.my/{algorithm}/<file name>"
            problems.append(Problem(f"{where}[{index}]", expected, f"{uri} and {landed[file_name]}"))
            continue
        landed[file_name] = uri
        files.append(str(uri))
    return tuple(files)


def _depends_on(value: object, where: str, name: str, earlier: list[str], problems: list[Problem]) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(Problem(where, "a list of algorithm names", _show(value)))
        return ()
    for dependency in value:
        if dependency not in earlier:
            expected = f"algorithms listed before {name} (dependencies first): {', '.join(earlier) or 'none'}"
            problems.append(Problem(where, expected, _show(dependency)))
    return tuple(value)


def _timeout(entry: Mapping[str, Any], where: str, problems: list[Problem]) -> float:
    value = entry.get("timeout", DEFAULT_TIMEOUT)
    if not _is_number(value) or not 0 < value <= MAX_TIMEOUT:
        problems.append(Problem(where, f"seconds, more than 0 and at most {MAX_TIMEOUT:g}", _show(value)))
        return DEFAULT_TIMEOUT
    return float(value)


def _one_of(
    entry: Mapping[str, Any], keys: tuple[str, str], where: str, problems: list[Problem], *, required: bool
) -> str:
    """The seed documented one key name and read the other: either is accepted, and both only if they agree."""
    values = {key: entry[key] for key in keys if key in entry}
    field = f"{where}.{keys[0]}|{keys[1]}"
    if not values:
        if required:
            problems.append(Problem(field, f"one of {keys[0]} or {keys[1]}", "neither"))
        return ""
    if any(not isinstance(v, str) or not v.strip() for v in values.values()):
        problems.append(Problem(field, "a non-empty string", _show(next(iter(values.values())))))
        return ""
    if len(set(values.values())) > 1:
        problems.append(Problem(field, "one of them, or both with the same value", _show(values)))
        return ""
    return str(next(iter(values.values())))


def _object(value: object, where: str, known: tuple[str, ...], problems: list[Problem]) -> Mapping[str, Any] | None:
    if not isinstance(value, Mapping):
        problems.append(Problem(where, "an object", _show(value)))
        return None
    unknown = sorted(str(k) for k in value if k not in known)
    if unknown:
        problems.append(Problem(where, f"only the keys {', '.join(known)}", f"unknown key(s) {', '.join(unknown)}"))
    return value


def _string(entry: Mapping[str, Any], key: str, where: str, problems: list[Problem], *, required: bool) -> str:
    value = entry.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        problems.append(Problem(where, "a string", _show(value)))
        return ""
    return value


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value  # NaN is no number


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value: object) -> str:
    if value is None:
        return "nothing"
    text = json.dumps(value, default=repr)
    return text if len(text) <= 80 else text[:77] + "..."
