"""Fixtures for the local-stack tests: one LocalStack on the echo targets per module, and its event log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import LocalStack
from tests.devstack.support import EventLog, make_stack, skip_without_emulators


@pytest.fixture(scope="module")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("devstack")


@pytest.fixture(scope="module")
def stack(stack_dir: Path) -> Iterator[LocalStack]:
    skip_without_emulators()
    with make_stack(stack_dir / "work", stack_dir / "events.jsonl") as running:
        yield running


@pytest.fixture(scope="module")
def events(stack: LocalStack, stack_dir: Path) -> EventLog:
    return EventLog(stack_dir / "events.jsonl")
