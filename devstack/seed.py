"""The sample data the local stack starts with, so that the examples under examples/ have something to work on."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

LAB, BENCHMARKS, ML = "lab-data", "lab-benchmarks", "ml-data"
# What examples/ratchet.json names: the example workflow, its algorithms and data files, as a team would keep them.
RATCHET_EXAMPLE = Path(__file__).resolve().parents[1] / "pipelines" / "examples" / "ratchet"
RATCHET_PREFIX = "text-summary/"
BUCKETS = (LAB, BENCHMARKS, ML)
# For a banner: what is there to use.
DESCRIPTION = (
    f"gs://{LAB}/assay/2026-11-21/ (three JSON plates), gs://{LAB}/reference/ (a CSV), "
    f"gs://{BENCHMARKS}/{RATCHET_PREFIX} (the ratchet example); gs://{ML} is the push destination"
)


def seed(client: Any) -> list[str]:
    """Upload the samples with a google.cloud.storage client; returns the gs:// URIs written.

    Create-only: a sample kept from an earlier start (storage on disk), perhaps changed since, is left as it is.
    """
    from google.api_core.exceptions import PreconditionFailed

    written = []

    def put(blob: Any, upload: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        with contextlib.suppress(PreconditionFailed):
            upload(*args, **kwargs, if_generation_match=0)
            written.append(f"gs://{blob.bucket.name}/{blob.name}")

    lab = client.bucket(LAB)
    for plate in range(1, 4):
        document = {"plate": plate, "extra_data": {"od600": [round(0.1 * plate + 0.01 * i, 3) for i in range(8)]}}
        blob = lab.blob(f"assay/2026-11-21/plate-{plate}.json")
        blob.metadata = {"instrument": "reader-7"}
        put(blob, blob.upload_from_string, json.dumps(document), content_type="application/json")
    controls = lab.blob("reference/controls.csv")
    put(controls, controls.upload_from_string, "well,od600\nA1,0.05\nH12,0.05\n", content_type="text/csv")
    benchmarks = client.bucket(BENCHMARKS)
    for path in sorted(p for p in RATCHET_EXAMPLE.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        blob = benchmarks.blob(RATCHET_PREFIX + path.relative_to(RATCHET_EXAMPLE).as_posix())
        put(blob, blob.upload_from_filename, str(path))
    return written
