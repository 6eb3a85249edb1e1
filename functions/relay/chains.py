"""Chains: what runs next when a run ends, with parameters filled from the finished run: pure decisions.

A trigger (its `chain` key) or a route (`routes[].chain` in the policy) names the steps:

    chain:
      - pipeline: report             # the next pipeline: in the catalog, allowed for the tenant
        on: succeeded                # succeeded (the default) or failed
        parameters:
          message: "{outputs.Output}"    # an output the finished pipeline declares, as its run's result holds it
          seconds: "{metrics.seconds}"   # a metric of the finished run's result
          source: "{parameters.message}" # a parameter the finished run was given
          previous: "run {run_key}"      # the finished run's key (also {pipeline})

Templates are the routes' (relay.templates): plain substitution, a whole-value placeholder keeps its type,
`{{`/`}}` are literal braces. A step follows the run the trigger or route started; with `after: P` it follows
every run of pipeline P in the chain instead (A, then B after A's run, then C after B: `after: B`). Every run a
chain starts carries the same steps, so `after` may make a cycle (A after B, B after A); the policy's `max_chain`
bounds how many runs follow the first, so a cycle ends there, recorded. The next run's key is the finished run's
plus `-then-<n>` for step n (relay.naming.suffixed_key): the same end, seen however often, names the same next run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from relay import naming
from relay.errors import Problem, describe_value
from relay.templates import fill_all, fill_text, pieces, strings

ON = ("succeeded", "failed")  # the ends a step may follow (records.SUCCEEDED, records.FAILED)
MAX_STEPS = 8
# The most runs a policy may let follow a chain's first (max_chain), and what it lets without saying.
MAX_CHAIN = 100
DEFAULT_MAX_CHAIN = 10
THEN = "-then-"
_KEYS = ("pipeline", "on", "after", "parameters")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_SCALARS = ("run_key", "pipeline")
_MAPS = ("outputs.", "metrics.", "parameters.")
FIELDS = "run_key, pipeline, outputs.NAME, metrics.NAME, parameters.NAME"


@dataclass(frozen=True)
class Step:
    """After a run of `after` ("" : the chain's first run) ends `on`, start `pipeline` with `parameters` filled
    from it."""

    pipeline: str
    after: str = ""
    on: str = "succeeded"
    parameters: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def as_record(self) -> dict[str, Any]:
        return {"pipeline": self.pipeline, "on": self.on, "after": self.after, "parameters": dict(self.parameters)}

    def fields(self) -> list[tuple[str, str]]:
        """(where, field) for each placeholder of the step's parameters."""
        return [
            (path, name)
            for path, text in strings(dict(self.parameters), "parameters")
            for is_field, name in _pieces(text)
            if is_field
        ]


@dataclass(frozen=True)
class Finished:
    """The run that ended, as its records hold it: all a step's templates may use."""

    run_key: str
    pipeline: str
    state: str
    outputs: Mapping[str, Any]
    metrics: Mapping[str, Any]
    parameters: Mapping[str, Any]

    def value(self, name: str) -> Any:
        if name == "run_key":
            return self.run_key
        if name == "pipeline":
            return self.pipeline
        kind, _, key = name.partition(".")
        found: Mapping[str, Any] = {"outputs": self.outputs, "metrics": self.metrics}.get(kind, self.parameters)
        return found.get(key)


def _known(name: str) -> bool:
    return name in _SCALARS or any(name.startswith(p) and _NAME.fullmatch(name[len(p) :]) for p in _MAPS)


def _pieces(text: str) -> list[tuple[bool, str]]:
    return list(pieces(text, _known, FIELDS))


def parse_chain(value: object, where: str) -> tuple[tuple[Step, ...], list[Problem]]:
    """The steps of a trigger's or route's `chain` (None: none); every problem at once."""
    if value is None:
        return (), []
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_STEPS:
        return (), [Problem(where, f"a list of 1 to {MAX_STEPS} steps ({', '.join(_KEYS)})", describe_value(value))]
    steps: list[Step] = []
    problems: list[Problem] = []
    for index, item in enumerate(value):
        at = f"{where}[{index}]"
        if not isinstance(item, dict):
            problems.append(Problem(at, f"a mapping of {', '.join(_KEYS)}", describe_value(item)))
            continue
        problems += [Problem(f"{at}.{key}", f"one of the keys {', '.join(_KEYS)}", "an unknown key")
                     for key in item if key not in _KEYS]  # fmt: skip
        pipeline, after = item.get("pipeline"), item.get("after", "")
        for name, text in (("pipeline", pipeline), ("after", after)):
            if (name, text) != ("after", "") and (not isinstance(text, str) or not naming.PIPELINE_NAME.match(text)):
                problems.append(Problem(f"{at}.{name}", naming.PIPELINE_NAME_RULE, describe_value(text)))
        on = item.get("on", "succeeded")
        if on not in ON:
            problems.append(Problem(f"{at}.on", f"one of {', '.join(ON)}", describe_value(on)))
        parameters = item.get("parameters", {})
        if not isinstance(parameters, dict):
            problems.append(
                Problem(f"{at}.parameters", "a mapping of the next pipeline's parameters", describe_value(parameters))
            )
            parameters = {}
        for path, text in strings(parameters, f"{at}.parameters"):
            try:
                _pieces(text)
            except ValueError as error:
                problems.append(Problem(path, "{field} templates", str(error)))
        steps.append(Step(str(pipeline), str(after), str(on), parameters))
    return (tuple(steps) if not problems else ()), problems


def steps_of(launch: Mapping[str, Any]) -> tuple[Step, ...]:
    """The chain a launch record carries (written by Relay from a checked trigger or route)."""
    raw = launch.get("chain") or []
    return tuple(
        Step(
            str(item["pipeline"]), str(item["after"]), str(item.get("on") or "succeeded"), item.get("parameters") or {}
        )
        for item in raw
        if isinstance(item, Mapping)
    )


def following(steps: tuple[Step, ...], pipeline: str, state: str, depth: int) -> list[tuple[int, Step]]:
    """The steps that follow a run of `pipeline`, `depth` runs after the chain's first, that ended `state`, with
    their index."""
    return [
        (index, step)
        for index, step in enumerate(steps)
        if step.on == state and (step.after == pipeline if step.after else depth == 0)
    ]


def depth_of(launch: Mapping[str, Any]) -> int:
    """How many runs after its chain's first a launch record's run is (0: it is the first)."""
    depth = (launch.get("trigger") or {}).get("chain_depth")
    return depth if isinstance(depth, int) and not isinstance(depth, bool) else 0


def next_key(previous: str, index: int) -> str:
    """The key of the run step `index` starts after run `previous`: derived, so it is started at most once."""
    return naming.suffixed_key(previous, f"{THEN}{index + 1}")


def render(step: Step, index: int, finished: Finished) -> tuple[dict[str, Any], list[Problem]]:
    """The step's parameters filled from `finished`, and a problem naming each value its result lacks."""
    problems: list[Problem] = []
    where = f"chain[{index}].parameters"
    return fill_all(step.parameters, where, lambda text, path: _fill(text, path, finished, problems)), problems


def _fill(template: str, path: str, finished: Finished, problems: list[Problem]) -> Any:
    filled, missing = fill_text(_pieces(template), finished.value)
    if missing is None:
        return filled
    problems.append(
        Problem(path, f"the finished run's {missing} ({{{missing}}})", f"none in {finished.run_key}'s result")
    )
    return template


def ceiling_problem(depth: int, ceiling: int, where: str) -> Problem | None:
    """Why the run `depth` steps after a chain's first may not start (None: it may)."""
    if depth <= ceiling:
        return None
    return Problem("(chain)", f"at most {ceiling} runs after the chain's first ({where})", f"a run {depth} steps on")
