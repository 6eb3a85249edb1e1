"""`make bench`, push part: one object bucket to bucket on fake-gcs-server (127.0.0.1), the push step against raw
google-cloud-storage and requests code doing the same copy, A/B interleaved in one run.

Sides, each a child process of its own, run in turn within every round (the order rotates between rounds):
- relay, streamed: the push step with the server-side copy switched off (one streamed request, checksums on the way);
- relay, rewrite: the push step as deployed, which lets Cloud Storage copy the object itself;
- raw, whole: `download_as_bytes()` then `upload_from_string()`, what a naive user writes;
- raw, streamed: one streamed GET piped into one resumable session PUT, same buffer size, no checksums.

Reported per size: medians of time and of peak memory (VmHWM, which each child reads from its own /proc/<pid>/status
as it ends: wait4's ru_maxrss can count pages shared before exec), and speed as a ratio to raw, whole. No figure is
compared with a threshold here; the targets are in docs/development.md, Speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SOURCE = "bench-lab-data"
TARGETS = {
    "relay-streamed": "bench-relay-streamed",
    "relay-rewrite": "bench-relay-rewrite",
    "raw-whole": "bench-raw-whole",
    "raw-streamed": "bench-raw-streamed",
}
LABELS = {
    "relay-streamed": "relay push, streamed",
    "relay-rewrite": "relay push, rewrite (gcs -> gcs)",
    "raw-whole": "raw download_as_bytes + upload_from_string",
    "raw-streamed": "raw streamed GET -> one PUT",
}
MIB = 1024 * 1024


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_mb: float


def _peak_mb() -> float:
    """This process's peak resident memory, from its own status file (VmHWM, in kB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1000
    raise RuntimeError("no VmHWM in /proc/self/status")


def _object_name(mib: int) -> str:
    return f"big/object-{mib}MiB.bin"


class _Source:
    """A readable of `size` random bytes made 1 MiB at a time, never held whole."""

    def __init__(self, size: int) -> None:
        self.left = size

    def __len__(self) -> int:
        return self.left

    def __iter__(self) -> Iterator[bytes]:
        while self.left:
            piece = os.urandom(min(MIB, self.left))
            self.left -= len(piece)
            yield piece


def _put_streamed(client: Any, bucket: str, name: str, body: Any, size: int) -> None:
    """One resumable session, all of `body` in one request (fake-gcs-server re-hashes the object per request)."""
    import requests

    session = client.bucket(bucket).blob(name).create_resumable_upload_session(size=size, checksum=None)
    headers = {"Content-Range": f"bytes 0-{size - 1}/{size}"}
    requests.put(session, data=body, headers=headers, timeout=(30, 600)).raise_for_status()


# --- the children: each does one copy and prints its own peak memory as its last line ---------------------------


def _child_step(kind: str, spec: str, result: str) -> None:
    from pipelines.steps.contract import main
    from pipelines.steps.push import push

    if kind == "relay-rewrite":
        code = main(push, [spec, result])
    else:
        from pipelines.steps.destinations import Destination
        from pipelines.steps.destinations.gcs import GcsDestination

        def streamed(options: Mapping[str, Any]) -> Destination:
            return _StreamedOnly(GcsDestination.from_options(options))

        code = main(lambda s, c: push(s, c, factories={"gcs": streamed}), [spec, result])
    if code:
        raise SystemExit(f"the push step failed: {Path(result).read_text()}")


class _StreamedOnly:
    """The gcs destination without its server-side copy, so the step streams the bytes itself."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def check(self, *args: Any) -> Any:
        return self._inner.check(*args)

    def send(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.send(*args, **kwargs)

    def close(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.close(*args, **kwargs)


def _child_raw(kind: str, name: str) -> None:
    from google.cloud import storage

    client = storage.Client()
    source = client.bucket(SOURCE).blob(name)
    if kind == "raw-whole":
        data = source.download_as_bytes()
        client.bucket(TARGETS[kind]).blob(name).upload_from_string(data)
        return
    from pipelines.steps.destinations.gcs import BUFFER

    source.reload()
    url = f"{client.api_endpoint}/download/storage/v1{source.path}"
    answer = client._http.get(url, params={"alt": "media"}, stream=True, timeout=(30, 600))
    answer.raise_for_status()

    class Body:
        def __len__(self) -> int:
            return int(source.size)

        def __iter__(self) -> Iterator[bytes]:
            while piece := answer.raw.read(BUFFER):
                yield piece

    _put_streamed(client, TARGETS[kind], name, Body(), int(source.size))


def child(argv: Sequence[str]) -> int:
    kind, *rest = argv
    if kind.startswith("relay-"):
        _child_step(kind, *rest)
    else:
        _child_raw(kind, *rest)
    print(json.dumps({"peak_mb": _peak_mb()}))
    return 0


# --- the parent ----------------------------------------------------------------------------------------------------


def _run(argv: list[str], env: Mapping[str, str]) -> Measured:
    started = time.perf_counter()
    done = subprocess.run(argv, env=dict(env), capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{argv[3:5]} failed: {done.stderr[-3000:]} {done.stdout[-2000:]}")
    return Measured(seconds, json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"])


def _specs(work: Path, name: str) -> tuple[Path, Path]:
    paths = []
    for kind in ("relay-streamed", "relay-rewrite"):
        parameters = {"destination": {"kind": "gcs", "bucket": TARGETS[kind], "prefix": "big"}, "tenant": "bench"}
        spec = {"inputs": {"sources": [f"gs://{SOURCE}/{name}"]}, "parameters": parameters}
        path = work / f"{kind}.json"
        path.write_text(json.dumps(spec))
        paths.append(path)
    return paths[0], paths[1]


def bench(sizes: Mapping[int, int]) -> dict[int, dict[str, list[Measured]]]:
    """Medians' inputs: for each size in MiB, that many rounds of every side."""
    from devstack import FakeGcsServer, create_bucket, storage_client

    found: dict[int, dict[str, list[Measured]]] = {}
    with tempfile.TemporaryDirectory(prefix="relay-bench-push-") as folder, FakeGcsServer(Path(folder)) as gcs:
        work = Path(folder)
        client = storage_client(gcs.url)
        for bucket in (SOURCE, *TARGETS.values()):
            create_bucket(gcs.url, bucket)
        # The step obeys a deployment policy as it would when deployed: one that allows exactly these pushes, run
        # by hand as an operator's direct runs (direct_runs) do, without a launch record of the functions.
        policy = work / "policy.yaml"
        destinations = ", ".join(f"{{id: {k}, kind: gcs, bucket: {TARGETS[k]}}}" for k in TARGETS if "relay" in k)
        policy.write_text(f"tenants:\n- name: bench\n  sources: ['gs://{SOURCE}/']\n  destinations: [{destinations}]\n"
                          "direct_runs: {tenant: bench}\n")  # fmt: skip
        env = {**os.environ, **gcs.env(), "RELAY_POLICY_URI": str(policy), "RELAY_RESULTS_URI": str(work / "results")}
        for mib, rounds in sizes.items():
            name = _object_name(mib)
            _put_streamed(client, SOURCE, name, _Source(mib * MIB), mib * MIB)
            expected = client.bucket(SOURCE).get_blob(name).crc32c
            streamed_spec, rewrite_spec = _specs(work, name)
            argv = {
                "relay-streamed": ["relay-streamed", str(streamed_spec), str(work / "result.json")],
                "relay-rewrite": ["relay-rewrite", str(rewrite_spec), str(work / "result.json")],
                "raw-whole": ["raw-whole", name],
                "raw-streamed": ["raw-streamed", name],
            }
            found[mib] = {kind: [] for kind in TARGETS}
            order = list(TARGETS)
            for round_ in range(rounds):
                for kind in order[round_ % len(order) :] + order[: round_ % len(order)]:
                    measured = _run([sys.executable, "-m", "bench.push", "--child", *argv[kind]], env)
                    copy = client.bucket(TARGETS[kind]).get_blob(name)
                    if copy is None or copy.crc32c != expected:
                        raise RuntimeError(f"{kind}: the copy of {name} differs from the source")
                    copy.delete()  # the next round writes it again; fake-gcs-server keeps objects in memory
                    found[mib][kind].append(measured)
            client.bucket(SOURCE).blob(name).delete()
    return found


def table(found: Mapping[int, Mapping[str, list[Measured]]]) -> str:
    lines = [f"  {'':44}{'size':>9}{'median s':>10}{'MB/s':>8}{'peak MB':>9}{'vs raw, whole':>15}"]
    for mib, sides in found.items():
        raw = statistics.median(m.seconds for m in sides["raw-whole"])
        for kind, runs in sides.items():
            seconds = statistics.median(m.seconds for m in runs)
            peak = statistics.median(m.peak_mb for m in runs)
            speed = f"{raw / seconds:.2f}x"
            lines.append(
                f"  {LABELS[kind]:44}{f'{mib} MiB':>9}{seconds:10.2f}{mib * MIB / 1e6 / seconds:8.1f}{peak:9.0f}"
                f"{speed:>15}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small objects, one round (a smoke test)")
    parser.add_argument("--rounds", type=int, help="rounds per size (default: 3 at 256 MiB, 2 at 1 GiB; 1 if quick)")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child)
    # 1 GiB gets one round fewer: its raw, whole side alone takes 40-60 s a round on a 2-core machine.
    sizes = {12: 1, 24: 1} if args.quick else {256: 3, 1024: 2}
    sizes = {mib: args.rounds or rounds for mib, rounds in sizes.items()}
    started = time.perf_counter()
    found = bench(sizes)
    rounds = ", ".join(f"{n} at {mib} MiB" for mib, n in sizes.items())
    print(
        f"push bench: one object bucket to bucket on fake-gcs-server (127.0.0.1); interleaved rounds ({rounds}), "
        f"medians; peak = the child's VmHWM\n"
    )
    print(table(found))
    print(f"\n  ({time.perf_counter() - started:.0f} s in all; every copy checked against the source's CRC32C)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
