"""Thin KFP components: each calls step code from `pipelines.steps` inside the Relay steps image."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kfp import dsl

from relay.policy import Resources

# The image the committed specs name; deployments compile the catalog with the image they built.
DEFAULT_IMAGE = "relay/steps:latest"


@dataclass(frozen=True)
class Deployment:
    """What a compiled catalog fixes for every task: its image, its resources, and the environment that tells the
    steps where the deployment's policy and records are (never a run parameter, which whoever starts a run sets)."""

    image: str = DEFAULT_IMAGE
    resources: Resources = field(default_factory=Resources)
    env: Mapping[str, str] = field(default_factory=dict)


def component(function: Callable[..., Any], image: str) -> Any:
    """`function` as a component running in `image`, which has kfp, relay and pipelines installed."""
    return dsl.component(function, base_image=image, install_kfp_package=False)


def configure(task: Any, deployment: Deployment) -> Any:
    """A task with the deployment's resources, its time limit (enforced by the step itself, on every backend) and
    the environment the steps read their policy from."""
    resources = deployment.resources
    task.set_cpu_request(resources.cpu).set_cpu_limit(resources.cpu)
    task.set_memory_request(resources.memory).set_memory_limit(resources.memory)
    task.set_env_variable("RELAY_TASK_TIMEOUT", f"{resources.task_timeout:g}")
    for name, value in sorted(deployment.env.items()):
        task.set_env_variable(name, value)
    return task
