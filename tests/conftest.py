"""Shared fixtures: a Relay wired to in-memory fakes, and the test catalog."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay.catalog import Catalog
from relay.config import Settings
from relay.service import Relay
from tests.fakes import FakeBackend, MemoryBlobStore, RecordingNotifier

DATA = Path(__file__).parent / "data"
CATALOG = DATA / "catalog"
NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)


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
