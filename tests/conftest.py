"""Shared fixtures: a Relay wired to in-memory fakes, and the test catalog."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay.catalog import Catalog, PipelineDefinition, parse_pipeline_package
from relay.config import Settings
from relay.ports import LaunchRequest
from relay.service import Relay
from tests.fakes import FakeBackend, MemoryBlobStore, RecordingNotifier

DATA = Path(__file__).parent / "data"
CATALOG = DATA / "catalog"
NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)


def echo_pipeline() -> PipelineDefinition:
    """The test catalog's echo pipeline, parsed on each call: a value parsed once at import would be made before
    mutation testing forks a run under a mutant of the parser, so that run would never see the mutant."""
    return parse_pipeline_package("echo", str(CATALOG / "echo.yaml"), (CATALOG / "echo.yaml").read_bytes())


def echo_request(key: str, **parameters: object) -> LaunchRequest:
    """A launch of the test catalog's echo pipeline, as the service builds one."""
    echo = echo_pipeline()
    return LaunchRequest(
        run_key=key,
        pipeline="echo",
        package=echo.package,
        spec=echo.spec,
        parameters={"message": "hi", **parameters},
        labels={"team": "assay"},
    )


@pytest.fixture(autouse=True)
def relay_logger() -> Iterator[None]:
    """Each test leaves the `relay` logger as it found it. The function's logging set-up (logs.configure, run when
    functions/main.py is loaded and by tests of its lines) is the process's from then on: left in place, its JSON
    lines would land in the captured stdout of any later test (a CLI command's output), whichever file ran first."""
    logger = logging.getLogger("relay")
    handlers, filters, level, propagate = list(logger.handlers), list(logger.filters), logger.level, logger.propagate
    yield
    logger.handlers[:] = handlers
    logger.filters[:] = filters
    logger.setLevel(level)
    logger.propagate = propagate


@pytest.fixture
def store() -> MemoryBlobStore:
    store = MemoryBlobStore()
    store.write("gs://catalog/echo.yaml", (CATALOG / "echo.yaml").read_bytes())
    return store


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def notifier() -> RecordingNotifier:
    return RecordingNotifier()


@pytest.fixture
def relay(store: MemoryBlobStore, backend: FakeBackend, notifier: RecordingNotifier) -> Relay:
    settings = Settings(results_uri="gs://results/relay", catalog_uri="gs://catalog", max_event_age=3600)
    return Relay(
        settings=settings,
        store=store,
        catalog=Catalog(store, settings.catalog_uri),
        backend=backend,
        notifier=notifier,
        clock=lambda: NOW,
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that start servers first (a stable sort: each file's order stays). `make test`'s workers take the
    files in this order, so the suite ends on quick files rather than on one worker finishing a stack's file alone
    while the other waits."""
    items.sort(key=lambda item: item.get_closest_marker("integration") is None)
