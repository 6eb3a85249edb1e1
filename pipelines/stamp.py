"""What a deployment fixes in every task of a compiled pipeline spec: the steps image, the policy's task ceilings,
and where the steps read the policy and write records (never a run parameter, which whoever starts a run sets).

One implementation for every catalog entry, Relay's own and a user's alike: it works on the compiled spec, so a
pipeline module and a spec compiled elsewhere are stamped the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

# kfp's own conversions of a resource string to the deprecated float fields it still writes (older KFP reads them).
from kfp.compiler.compiler_utils import _cpu_to_float, _memory_to_float

from relay.catalog import NO_SPEC, pipeline_spec
from relay.policy import Resources

# The image the committed specs name; a task that names it runs in the deployment's steps image.
DEFAULT_IMAGE = "relay/steps:latest"
TIMEOUT_ENV = "RELAY_TASK_TIMEOUT"
LOCATIONS = ("RELAY_POLICY_URI", "RELAY_RESULTS_URI")  # the deployment's, never a task's own


class StampError(ValueError):
    """A document that is no compiled KFP v2 pipeline spec."""


@dataclass(frozen=True)
class Deployment:
    """What a compiled catalog fixes for every task: its image, its resource ceilings, and the locations."""

    image: str = DEFAULT_IMAGE
    resources: Resources = field(default_factory=Resources)
    env: Mapping[str, str] = field(default_factory=dict)  # RELAY_POLICY_URI, RELAY_RESULTS_URI when deployed

    def __post_init__(self) -> None:
        unknown = sorted(set(self.env) - set(LOCATIONS))
        if unknown:
            raise ValueError(f"Deployment.env: expected only {', '.join(LOCATIONS)}, found {', '.join(unknown)}")


def stamp_package(package: str, deployment: Deployment, where: str) -> str:
    """A compiled spec (kfp's YAML, its header comment kept) with `deployment` stamped into every task."""
    lines = package.splitlines(keepends=True)
    header = "".join(line for line in _leading_comments(lines))
    try:
        documents = [d for d in yaml.safe_load_all(package) if d is not None]
    except yaml.YAMLError as exc:
        raise StampError(f"{where}: expected a compiled KFP v2 pipeline spec, found invalid YAML: {exc}") from None
    spec = pipeline_spec(documents)
    if spec is None:
        raise StampError(f"{where}: {NO_SPEC}")
    stamp(spec, deployment)
    return header + yaml.dump_all(documents, sort_keys=True)  # as kfp writes it


def stamp(spec: dict[str, Any], deployment: Deployment) -> dict[str, Any]:
    """`spec` (a PipelineSpec document) with every container task stamped, in place: the task time limit and the
    locations in its environment (a task's own values for these names replaced), limits at the policy's ceilings
    and requests at most that, and the deployment's image for a task that names relay/steps:latest."""
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    for executor in executors.values():
        container = executor.get("container") if isinstance(executor, dict) else None
        if not isinstance(container, dict):
            continue  # an importer or a resolver: no process of its own
        if container.get("image") == DEFAULT_IMAGE:
            container["image"] = deployment.image
        ours = {TIMEOUT_ENV: f"{deployment.resources.task_timeout:g}", **dict(sorted(deployment.env.items()))}
        theirs = [e for e in container.get("env", []) if e.get("name") not in (TIMEOUT_ENV, *LOCATIONS)]
        container["env"] = [*theirs, *({"name": name, "value": value} for name, value in ours.items())]
        container["resources"] = _ceilings(container.get("resources", {}), deployment.resources)
    return spec


def _ceilings(resources: Mapping[str, Any], ceilings: Resources) -> dict[str, Any]:
    stamped = dict(resources)
    for kind, ceiling, to_float in (
        ("Cpu", ceilings.cpu, _cpu_to_float),
        ("Memory", ceilings.memory, _memory_to_float),
    ):
        request = resources.get(f"resource{kind}Request")
        if not isinstance(request, str) or _at_most(request, ceiling, to_float) is not True:
            request = ceiling  # none, a pipeline parameter, or above the ceiling
        for part, value in (("Limit", ceiling), ("Request", request)):
            stamped[f"resource{kind}{part}"] = value
            stamped[f"{kind.lower()}{part}"] = to_float(value)
    return stamped


def _at_most(value: str, ceiling: str, to_float: Any) -> bool | None:
    try:
        return bool(to_float(value) <= to_float(ceiling))
    except ValueError:
        return None


def _leading_comments(lines: list[str]) -> list[str]:
    found = []
    for line in lines:
        if not line.startswith("#"):
            break
        found.append(line)
    return found
