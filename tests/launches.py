"""Launch records for tests of the steps, written as the functions write them (relay.records, run_parameters)."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from relay import naming, records
from relay.adapters.stores import results_store
from relay.catalog import parse_pipeline_package, run_parameters

COMPILED = Path(__file__).resolve().parents[1] / "pipelines" / "compiled"  # the committed catalog


def launch(
    results: Path | str,
    pipeline: str,
    parameters: Mapping[str, Any],
    *,
    run_key: str,
    tenant: str = "",
    state: str = records.LAUNCHED,
) -> dict[str, Any]:
    """The functions' launch record of a run of `pipeline` with the trigger's `parameters`, under `results`: the
    reserved parameters the compiled pipeline declares added, claimed (create-only), then launched unless `state`
    says launching. A pipeline outside the committed catalog (a test's own step) gets `parameters` as they are."""
    results_uri = str(results)
    compiled = COMPILED / f"{pipeline}.yaml"
    given = dict(parameters)
    if compiled.exists():
        definition = parse_pipeline_package(pipeline, str(compiled), compiled.read_bytes())
        given = run_parameters(definition, given, run_key=run_key, results_uri=results_uri, tenant=tenant)
    now = datetime.now(UTC)
    record = records.claim_record(
        run_key=run_key,
        pipeline=pipeline,
        backend="local",
        trigger={"uri": f"gs://triggers/{tenant or 'none'}/{run_key}.json", "event_id": f"event-{run_key}"},
        parameters=given,
        labels={},
        now=now,
        lease_seconds=60,
        tenant=tenant,
    )
    if state != records.LAUNCHING:
        record = {**records.launched_record(record, run_id=f"run-{run_key}", run_url="", now=now), "state": state}
    store = results_store(results_uri, tempfile.gettempdir())
    store.write(naming.launch_record(results_uri, run_key), records.encode(record), if_generation_match=0)
    return record
