"""The audit trail the deployed chain writes: functions-framework processes on fake-gcs-server and the KFP API,
each its own segment, proved whole by `relay audit verify`; then an edited record is named."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from devstack import LocalStack
from relay import audit, audit_trail
from relay.adapters.gcs import GcsBlobStore
from relay.adapters.tokens import NoTokenSource
from tests.integration.conftest import relay_stack
from tests.integration.support import RESULTS, eventually, wait_for_record
from tests.integration.test_kfp_chain import ECHO, object_key, upload
from tests.servers.kfp import KfpApiServer
from tests.servers.metadata import MetadataServer

pytestmark = pytest.mark.integration
RESULTS_URI = f"gs://{RESULTS}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, metadata: MetadataServer) -> Iterator[LocalStack]:
    with KfpApiServer(token_check=metadata.is_valid) as kfp:
        env = {"RELAY_BACKEND": "kfp", "RELAY_KFP_HOST": kfp.url, **metadata.env()}
        with relay_stack(tmp_path_factory.mktemp("audit-chain"), env) as running:
            yield running


def test_the_functions_trail_proves_whole_and_names_an_edited_record(stack: LocalStack):
    storage: Any = stack.storage_client()
    launched = object_key("audit/echo.json", upload(storage, "audit/echo.json", ECHO))
    bad = upload(storage, "audit/bad.json", {"pipeline": "echo", "x": 1})
    rejected = object_key("audit/bad.json", bad, pipeline="trigger")
    wait_for_record(storage, f"runs/{launched}/launch.json", "launched")
    wait_for_record(storage, f"rejected/{rejected}.json", "rejected")
    store = GcsBlobStore(endpoint=stack.storage_url, tokens=NoTokenSource())
    where = audit.location(RESULTS_URI)
    # The entries follow the records by the flusher's batch (relay.adapters.audited), not on the response's path.
    report = eventually(
        lambda: found if (found := audit_trail.prove(store, RESULTS_URI, where)).whole else None,
        20.0,
        "the trail holding an entry for every record",
    )
    assert report.problems == () and report.entries >= 2
    entries = [audit.parse_entry(s.data) for s in audit_trail.entries(store, where)]
    assert len({e.who for e in entries}) == 1 and entries[0].who.startswith(("user:", "function:"))
    changes = {(e.object, e.state) for e in entries}
    assert {(f"runs/{launched}/launch.json", "launched"), (f"rejected/{rejected}.json", "rejected")} <= changes
    assert audit_trail.seal(store, where, datetime.now(UTC)) is not None
    record = f"{RESULTS_URI}/runs/{launched}/launch.json"
    edited = json.loads(store.read(record).data) | {"run_id": "someone-else"}
    store.write(record, json.dumps(edited).encode())
    [problem] = audit_trail.prove(store, RESULTS_URI, where).problems
    assert (problem.what, problem.where) == ("record edited", f"runs/{launched}/launch.json")
