"""Fixtures shared by the pipeline step tests: a folder of processed lab documents, and a spool folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "processed"
    (root / "plate-1").mkdir(parents=True)
    (root / "plate-1" / "result.json").write_text(json.dumps({"extra_data": {"od600": [0.1, 0.2]}}))
    (root / "plate-2.json").write_text(json.dumps({"extra_data": {"od600": [0.3]}}))
    return root


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    root = tmp_path / "spool"
    root.mkdir()
    return root
