"""Thin KFP components: each calls step code from `pipelines.steps` inside the Relay steps image.

Each imports what it uses inside its function: KFP ships the function's source alone, and nothing above it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kfp import dsl

from pipelines.stamp import DEFAULT_IMAGE

__all__ = ["DEFAULT_IMAGE", "component"]


def component(function: Callable[..., Any]) -> Any:
    """`function` as a component running in the steps image, which has kfp, relay and pipelines installed; the
    catalog's compile stamps the deployment's image, resources and locations into it (pipelines.stamp)."""
    return dsl.component(function, base_image=DEFAULT_IMAGE, install_kfp_package=False)
