"""The sample data the local stack starts with, so that the examples under examples/ have something to work on."""

from __future__ import annotations

import json
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
    """Upload the samples with a google.cloud.storage client; returns the gs:// URIs written."""
    written = []
    lab = client.bucket(LAB)
    for plate in range(1, 4):
        document = {"plate": plate, "extra_data": {"od600": [round(0.1 * plate + 0.01 * i, 3) for i in range(8)]}}
        blob = lab.blob(f"assay/2026-11-21/plate-{plate}.json")
        blob.metadata = {"instrument": "reader-7"}
        blob.upload_from_string(json.dumps(document), content_type="application/json")
        written.append(f"gs://{LAB}/{blob.name}")
    controls = lab.blob("reference/controls.csv")
    controls.upload_from_string("well,od600\nA1,0.05\nH12,0.05\n", content_type="text/csv")
    written.append(f"gs://{LAB}/{controls.name}")
    benchmarks = client.bucket(BENCHMARKS)
    for path in sorted(p for p in RATCHET_EXAMPLE.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        name = RATCHET_PREFIX + path.relative_to(RATCHET_EXAMPLE).as_posix()
        benchmarks.blob(name).upload_from_filename(str(path))
        written.append(f"gs://{BENCHMARKS}/{name}")
    return written
