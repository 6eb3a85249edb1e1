"""`make bench`, push part: one large object bucket to bucket, streamed by the push step, against a plain
google-cloud-storage download-then-upload of the same object, in the same run, on fake-gcs-server.

Each side runs in a child process of its own, so its peak resident memory (ru_maxrss from wait4) is its alone.
Reported: seconds, MB/s and peak MB per side, and the ratios relay/baseline. No figure is compared with a
threshold anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from devstack import FakeGcsServer, create_bucket, storage_client

SOURCE, TARGET, BASELINE_TARGET = "bench-lab-data", "bench-ml-data", "bench-ml-data-plain"
OBJECT = "big/object.bin"
MIB = 1024 * 1024

# The baseline: what code that is not built for streaming does (the seed's push read whole files).
_PLAIN_COPY = """
import sys
from google.cloud import storage
client = storage.Client()
data = client.bucket(sys.argv[1]).blob(sys.argv[2]).download_as_bytes()
client.bucket(sys.argv[3]).blob(sys.argv[2]).upload_from_string(data)
"""


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_mb: float


def run_child(argv: list[str], env: dict[str, str]) -> Measured:
    started = time.perf_counter()
    child = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    out, err = child.communicate()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{argv[:3]} failed: {err.decode()[-2000:]} {out.decode()[-2000:]}")
    return Measured(seconds=seconds, peak_mb=usage.ru_maxrss / 1024)  # ru_maxrss is in KiB on Linux


def upload_object(url: str, size: int) -> None:
    """Fill the source object in 8 MiB random pieces, never holding it whole."""

    class Random:
        def __init__(self) -> None:
            self.left = size

        def read(self, n: int = -1) -> bytes:
            n = self.left if n < 0 else min(n, self.left)
            self.left -= n
            return os.urandom(n)

        def tell(self) -> int:
            return size - self.left

    blob = storage_client(url).bucket(SOURCE).blob(OBJECT, chunk_size=8 * MIB)
    blob.upload_from_file(Random(), size=size, content_type="application/octet-stream")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=1024, help="object size in MiB (default 1024: 1 GiB)")
    args = parser.parse_args(argv)
    size = args.mib * MIB
    with tempfile.TemporaryDirectory(prefix="relay-bench-push-") as work, FakeGcsServer(Path(work)) as gcs:
        for bucket in (SOURCE, TARGET, BASELINE_TARGET):
            create_bucket(gcs.url, bucket)
        upload_object(gcs.url, size)
        # The step obeys a deployment policy as it would when deployed: one that allows exactly this push.
        policy = Path(work) / "policy.yaml"
        policy.write_text(
            f"tenants:\n- name: bench\n  sources: ['gs://{SOURCE}/']\n"
            f"  destinations: [{{id: target, kind: gcs, bucket: {TARGET}}}]\n"
        )
        env = {**os.environ, **gcs.env(), "RELAY_POLICY_URI": str(policy)}
        spec = {
            "inputs": {"sources": [f"gs://{SOURCE}/{OBJECT}"]},
            "parameters": {"destination": {"kind": "gcs", "bucket": TARGET}, "tenant": "bench"},
        }
        spec_path, result_path = Path(work) / "spec.json", Path(work) / "result.json"
        spec_path.write_text(json.dumps(spec))
        relay = run_child([sys.executable, "-m", "pipelines.steps.push", str(spec_path), str(result_path)], env)
        result = json.loads(result_path.read_text())
        baseline = run_child([sys.executable, "-c", _PLAIN_COPY, SOURCE, OBJECT, BASELINE_TARGET], env)
        copied = storage_client(gcs.url).bucket(TARGET).get_blob(OBJECT.rsplit("/", 1)[-1])
        plain = storage_client(gcs.url).bucket(BASELINE_TARGET).get_blob(OBJECT)
        assert copied is not None and plain is not None and copied.crc32c == plain.crc32c, "copies differ"
    mb = size / 1e6
    print(f"push bench: one {args.mib} MiB object, bucket to bucket on fake-gcs-server (127.0.0.1)\n")
    print(f"  {'':34}{'seconds':>10}{'MB/s':>10}{'peak MB':>10}")
    for label, side in (("relay push step (streamed)", relay), ("baseline (download, then upload)", baseline)):
        print(f"  {label:34}{side.seconds:10.2f}{mb / side.seconds:10.1f}{side.peak_mb:10.0f}")
    print(
        f"\nratio: relay/baseline time = {relay.seconds / baseline.seconds:.2f}, "
        f"peak memory = {relay.peak_mb / baseline.peak_mb:.2f}"
    )
    print(
        f"  the push step's own figures: {result['metrics']['mb_per_s']} MB/s, status {result['status']}, "
        f"checksum {result['outputs']['receipts'][0]['checksum']} verified end to end"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
