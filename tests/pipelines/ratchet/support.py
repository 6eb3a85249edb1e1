"""Shared by the ratchet tests: the example workflow, its test variants, and reading what a run left behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "pipelines" / "examples" / "ratchet"
VARIANTS = REPO / "tests" / "data" / "ratchet"
WORKFLOW_NAME = "text-summary"
TESTS = ("short text", "document")


def variant_source(tmp: Path, variant: str) -> Path:
    """A copy of the example whose algorithms are replaced by those in tests/data/ratchet/<variant>/."""
    source = tmp / f"source-{variant}"
    shutil.copytree(EXAMPLE, source)
    for replacement in (VARIANTS / variant).glob("*.py"):
        shutil.copy(replacement, source / "algorithms" / replacement.stem / replacement.name)
    return source


def ledger_folder(results: Path, destination: str = "local", tenant: str = "") -> Path:
    return results / "ratchet" / tenant / WORKFLOW_NAME / destination


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def history(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]


def assert_self_contained(html: str) -> None:
    """Nothing in the page is fetched from elsewhere: no script, stylesheet, font or image reference."""
    lowered = html.lower()
    for forbidden in ("<script", "<link", "<img", "<iframe", "src=", "@import", "url(", "href="):
        assert forbidden not in lowered, f"report.html references something outside itself: {forbidden}"
    assert lowered.startswith("<!doctype html>") and "<svg" in lowered
