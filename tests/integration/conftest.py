"""A LocalStack running Relay's real functions, with loopback KFP, Vertex and metadata servers behind them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import LocalStack, emulator_available, fake_gcs_available
from tests.conftest import CATALOG
from tests.integration.support import RESULTS
from tests.servers.metadata import MetadataServer

TRIGGERS = "relay-triggers"
TOPIC = "relay-triggers"
NOTIFY = "relay-notify"
PROJECT = "relay-local"


@pytest.fixture(scope="module")
def metadata() -> Iterator[MetadataServer]:
    with MetadataServer() as server:
        yield server


def relay_stack(workdir: Path, env: dict[str, str], buckets: tuple[str, ...] | list[str] = ()) -> LocalStack:
    missing = emulator_available() or fake_gcs_available()
    if missing:
        pytest.fail(f"the integration tests need the real emulators: {missing}")
    home = workdir / "home"
    home.mkdir(parents=True, exist_ok=True)
    return LocalStack(
        workdir,
        project=PROJECT,
        trigger_bucket=TRIGGERS,
        trigger_topic=TOPIC,
        notify_topic=NOTIFY,
        buckets=[RESULTS, *buckets],
        function_env={
            "HOME": str(home),  # kfp.Client reads ~/.config/kfp
            "RELAY_RESULTS_URI": f"gs://{RESULTS}",
            "RELAY_CATALOG_URI": str(CATALOG),
            "RELAY_NOTIFY_TOPIC": f"projects/{PROJECT}/topics/{NOTIFY}",
            "RELAY_LOCAL_ROOT": str(workdir / "local-runs"),
            **env,
        },
    )
