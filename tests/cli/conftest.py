"""Fixtures for the CLI tests: a results folder, one BlobStore with Cloud Storage held in memory, and the Pub/Sub
emulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devstack import PubSubEmulator, emulator_available
from relay.adapters.localfs import LocalBlobStore
from relay.adapters.routing import RoutingBlobStore
from relay.service import Relay
from tests.cli.support import Ran, relay_on, run
from tests.conftest import CATALOG
from tests.fakes import MemoryBlobStore


@pytest.fixture
def results(tmp_path: Path) -> str:
    folder = tmp_path / "results"
    folder.mkdir()
    return str(folder)


@pytest.fixture
def gcs() -> MemoryBlobStore:
    """Cloud Storage in memory: where a test uploads an object with its content type and metadata (`put`)."""
    return MemoryBlobStore()


@pytest.fixture
def blobs(gcs: MemoryBlobStore, results: str) -> RoutingBlobStore:
    """gs:// objects in memory, paths on the disk: what the CLI and the service share in these tests."""
    return RoutingBlobStore(gcs, LocalBlobStore(results))


@pytest.fixture
def relay(blobs: RoutingBlobStore, results: str) -> Relay:
    return relay_on(blobs, results)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], blobs: RoutingBlobStore, results: str) -> Callable[..., Ran]:
    """`relay ARGS...` in-process, configured like the functions (RELAY_*), on the shared store."""
    env = {"RELAY_RESULTS_URI": results, "RELAY_CATALOG_URI": str(CATALOG)}

    def relay_command(*argv: str) -> Ran:
        return run(capsys, list(argv), env=env, store=blobs)

    return relay_command


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PubSubEmulator]:
    """The Pub/Sub emulator, one per test module, for the project make up uses (relay-local)."""
    missing = emulator_available()
    if missing:
        pytest.fail(f"the integration tests need the Pub/Sub emulator: {missing}")
    with PubSubEmulator(tmp_path_factory.mktemp("pubsub"), project="relay-local") as started:
        yield started
