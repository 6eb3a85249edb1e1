"""Helpers for the CLI tests: records written by the real service, and `relay` run in-process."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from relay import naming, records
from relay.catalog import Catalog
from relay.config import Settings
from relay.events import EventInfo, ObjectDelivery
from relay.outcome import Outcome
from relay.ports import BlobStore
from relay.runtime import load_policy
from relay.service import Relay, handle_delivery
from relaycli.main import main
from tests.conftest import CATALOG
from tests.fakes import FakeBackend

ECHO: dict[str, Any] = {"pipeline": "echo", "parameters": {"message": "hello", "count": 2}}


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run(capsys: pytest.CaptureFixture[str], argv: list[str], **kwargs: Any) -> Ran:
    code = main(argv, **kwargs)
    captured = capsys.readouterr()
    return Ran(code, captured.out, captured.err)


def relay_on(
    store: BlobStore, results: str, at: datetime | None = None, catalog: str = str(CATALOG), policy_uri: str = ""
) -> Relay:
    """A Relay on `store` with the test catalog and a fake backend; its clock stands still at `at`.

    With `policy_uri`, the policy is read from there as the functions read it (runtime.load_policy).
    """
    moment = at or datetime.now(UTC)
    settings = Settings(results_uri=results, catalog_uri=catalog, policy_uri=policy_uri)
    return Relay(
        settings=settings,
        store=store,
        catalog=Catalog(store, catalog),
        backend=FakeBackend(),
        clock=lambda: moment,
        policy=load_policy(settings, store),
    )


def drop(relay: Relay, document: object, name: str, bucket: str = "triggers") -> Outcome:
    """Write a trigger object and deliver its finalized event, as Eventarc would."""
    data = document if isinstance(document, bytes) else json.dumps(document).encode()
    generation = relay.store.write(f"gs://{bucket}/{name}", data)
    event = EventInfo(id=f"evt-{name}", type="google.cloud.storage.object.v1.finalized", source="s", time=relay.clock())
    return handle_delivery(relay, ObjectDelivery(event, bucket, name, generation, len(data), "storage-event"))


def finish(
    relay: Relay,
    run_key: str,
    *,
    outputs: dict[str, Any],
    status: int = 200,
    message: str = "done",
    run_id: str = "run-1",
) -> None:
    """Write the result record a pipeline writes when its run ends."""
    record = records.result_record(
        run_key=run_key,
        pipeline="echo",
        backend="fake",
        run_id=run_id,
        succeeded=status < 400,
        message=message,
        outputs=outputs,
        metrics={"files": 2, "bytes": 30},
        status=status,
        started=relay.clock(),
        finished=relay.clock(),
    )
    relay.store.write(naming.result_record(relay.settings.results_uri, run_key), records.encode(record))


def fields(text: str) -> dict[str, list[str]]:
    """The `label  value` lines of `relay status` (up to the records table), continuation lines included."""
    found: dict[str, list[str]] = {}
    label = ""
    for line in text.split("\n\n", 1)[0].splitlines():
        if line.startswith(" "):
            found[label].append(line.strip())
        else:
            label, value = re.split(r"\s{2,}", line, maxsplit=1)
            found[label] = [value]
    return found
