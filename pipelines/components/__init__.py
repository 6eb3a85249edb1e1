"""Thin KFP components: each calls step code from `pipelines.steps` inside the Relay steps image."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kfp import dsl

# The image the committed specs name; deployments compile the catalog with the image they built.
DEFAULT_IMAGE = "relay/steps:latest"


def component(function: Callable[..., Any], image: str) -> Any:
    """`function` as a component running in `image`, which has kfp, relay and pipelines installed."""
    return dsl.component(function, base_image=image, install_kfp_package=False)
