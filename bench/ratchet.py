"""`make bench`, ratchet part: what the ratchet's clusters add to each call, against raw calls of the same thing.

- **local cluster**: `LocalCluster.call` of a one-line algorithm, served by its warm worker (sandboxed as this
  machine allows), against a raw in-process call of the same algorithm's `apply`. A fresh worker per call, what
  every call cost before workers stayed warm, is measured too, on fewer calls.
- **http cluster**: `HttpCluster.call` (the `algorithmia` preset) against raw `requests` calls to the same URL on
  the same server, an HTTP/1.1 echo server on 127.0.0.1 in a process of its own (`--serve`), both sides over a
  keep-alive connection and neither reading proxies or ~/.netrc from the environment on every request.

After a warm-up, the four sides are called in interleaved rounds (the order rotating every round), each call timed
with time.perf_counter. Reported in milliseconds per call: medians and p99 of each side, then the harness overhead,
each cluster call minus the raw call of the same round (median and p99 of those differences), and the ratio of the
medians. The target, local harness overhead <= 2 ms per call after warm-up, is printed with what was reached,
never asserted. `--quick` is a short run for the test that checks the table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from pipelines.steps.egress import Egress
from pipelines.steps.ratchet.clusters import ClusterContext, ExportedFile
from pipelines.steps.ratchet.clusters.http import HttpCluster
from pipelines.steps.ratchet.clusters.local import LocalCluster
from pipelines.steps.ratchet.sandbox import SandboxRules

ROOT = Path(__file__).resolve().parents[1]
ALGORITHM = "echo"
SOURCE = "def apply(input):\n    return input\n"
PAYLOAD = {"text": "The ratchet only tightens.", "n": 3}
TIMEOUT = 10.0
TARGET_MS = 2.0
LOCAL, RAW_APPLY, HTTP, RAW_HTTP = (
    "local cluster (warm worker)",
    "raw in-process apply()",
    "http cluster",
    "raw requests",
)
COLD = "local cluster (fresh worker per call)"


class _Echo(BaseHTTPRequestHandler):
    """The seed's algorithm API for one algorithm that answers its input: `{result, metadata}`."""

    protocol_version = "HTTP/1.1"  # keep-alive, as a real API keeps it: no side pays a connection per call
    disable_nagle_algorithm = True  # headers and body go out at once, not held for a delayed ACK

    def do_POST(self) -> None:
        started = time.perf_counter()
        result = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        metadata = {"content_type": "json", "duration": time.perf_counter() - started}
        answer = json.dumps({"result": result, "metadata": metadata}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: one line per request would be most of the work."""


def serve() -> None:
    """The echo server, in this process until it is terminated; prints `port <n>` once it listens."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    print(f"port {server.server_address[1]}", flush=True)
    server.serve_forever()


@contextmanager
def echo_server() -> Iterator[str]:
    """The echo server in a child process of its own: its base URL."""
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.ratchet", "--serve"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line.startswith("port "):
            raise RuntimeError(f"the echo server did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        child.terminate()
        child.wait(10)


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def p99(values: Sequence[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98] if len(values) > 1 else values[0]


def measure(rounds: int, warmup: int, cold: int, workdir: Path) -> tuple[dict[str, list[float]], str]:
    """Milliseconds per call of each side, over `rounds` interleaved rounds; and what the local workers run under."""
    algorithm = workdir / f"{ALGORITHM}.py"
    algorithm.write_text(SOURCE)
    spec = importlib.util.spec_from_file_location(f"bench_{ALGORITHM}", algorithm)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    # The sandbox as this machine gives it (all of it as root), so that the bench runs on developer machines too.
    local = LocalCluster(workdir / "cluster", sandbox=SandboxRules(required=False))
    local.deploy(ALGORITHM, [ExportedFile("code", f"{ALGORITHM}.py", SOURCE.encode())])
    samples: dict[str, list[float]] = {LOCAL: [], RAW_APPLY: [], HTTP: [], RAW_HTTP: [], COLD: []}
    with echo_server() as url:
        context = ClusterContext(workdir, "bench", egress=Egress.loopback())
        http = HttpCluster.from_options({"kind": "http", "preset": "algorithmia", "url": url}, context)
        # Like the cluster's session, it reads no proxy or ~/.netrc from the environment on every request (about a
        # millisecond per call here): both sides do the same network work, so the difference is the harness.
        raw = requests.Session()
        raw.trust_env = False
        raw_url = f"{url}/v1/algo/.my/{ALGORITHM}/latestPrivate?timeout={int(TIMEOUT)}"

        def call_local() -> None:
            result = local.call(ALGORITHM, PAYLOAD, TIMEOUT)
            if result.output != PAYLOAD:
                raise RuntimeError(f"local cluster: {result}")

        def call_http() -> None:
            result = http.call(ALGORITHM, PAYLOAD, TIMEOUT)
            if result.output != PAYLOAD:
                raise RuntimeError(f"http cluster: {result}")

        def call_raw_http() -> None:
            response = raw.post(raw_url, json=PAYLOAD, timeout=TIMEOUT)
            response.raise_for_status()
            if response.json()["result"] != PAYLOAD:
                raise RuntimeError(f"raw requests: {response.text}")

        sides: list[tuple[str, Callable[[], None]]] = [
            (LOCAL, call_local),
            (RAW_APPLY, lambda: module.apply(PAYLOAD)),
            (HTTP, call_http),
            (RAW_HTTP, call_raw_http),
        ]
        try:
            for _ in range(warmup):
                for _, call in sides:
                    call()
            for index in range(rounds):
                shift = index % len(sides)  # each side first in turn: none always follows the same one
                for name, call in sides[shift:] + sides[:shift]:
                    samples[name].append(timed(call))
            for _ in range(cold):
                local.close()  # the next call starts a worker, as every call did before workers stayed warm
                samples[COLD].append(timed(call_local))
        finally:
            local.close()
            http.close()
            raw.close()
    return samples, local.isolation.describe()


def report(samples: dict[str, list[float]], rounds: int, warmup: int, isolation: str) -> str:
    lines = [
        f"ratchet per-call overhead: {rounds} interleaved rounds after {warmup} warm-up calls per side",
        f"(local workers: {isolation}; http: an echo server on 127.0.0.1 in its own process)",
        "",
        f"  {'ms per call':<40}{'median':>10}{'p99':>10}",
    ]
    for name, values in samples.items():
        if values:
            lines.append(f"  {name:<40}{statistics.median(values):>10.3f}{p99(values):>10.3f}")
    lines.append("")
    for label, cluster, raw in (("local", LOCAL, RAW_APPLY), ("http", HTTP, RAW_HTTP)):
        paired = [c - r for c, r in zip(samples[cluster], samples[raw], strict=True)]
        ratio = statistics.median(samples[cluster]) / max(statistics.median(samples[raw]), 1e-9)
        lines.append(
            f"  {label} harness overhead: {statistics.median(paired):+.3f} ms per call (median), "
            f"{p99(paired):+.3f} ms (p99); {ratio:,.2f}x the raw call"
        )
    if samples[COLD]:
        saved = statistics.median(samples[COLD]) - statistics.median(samples[LOCAL])
        lines.append(f"  a warm worker saves {saved:.3f} ms per call against a fresh worker per call")
    reached = statistics.median([c - r for c, r in zip(samples[LOCAL], samples[RAW_APPLY], strict=True)])
    verdict = "met" if reached <= TARGET_MS else "not met"
    lines.append(
        f"  target: local harness overhead <= {TARGET_MS:g} ms per call after warm-up: {verdict} ({reached:.3f} ms)"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ratchet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3000, help="interleaved rounds measured (default 3000)")
    parser.add_argument("--warmup", type=int, default=100, help="calls per side before measuring (default 100)")
    parser.add_argument("--cold", type=int, default=30, help="calls measured with a fresh worker each (default 30)")
    parser.add_argument("--quick", action="store_true", help="a short run: 200 rounds, 20 warm-up, 3 cold calls")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the echo server's process
    options = parser.parse_args(argv)
    if options.serve:
        serve()
        return 0
    rounds, warmup, cold = (200, 20, 3) if options.quick else (options.rounds, options.warmup, options.cold)
    with tempfile.TemporaryDirectory(prefix="relay-bench-ratchet-") as workdir:
        samples, isolation = measure(rounds, warmup, cold, Path(workdir))
    print(report(samples, rounds, warmup, isolation))
    return 0


if __name__ == "__main__":
    sys.exit(main())
