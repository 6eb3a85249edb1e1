"""Metrics on the function's cold path: what the outcome line's metric fields cost (log-based metrics, what Relay
uses) against what OpenTelemetry's metrics SDK costs (a meter provider, a counter and a histogram), each measured
as import time in fresh processes (after the function's own module, as at a cold start) and as time per event.

    python -m bench.telemetry [--samples 15] [--events 20000]

OpenTelemetry is measured without an exporter: the Cloud Monitoring one (opentelemetry-exporter-gcp-monitoring)
adds google-cloud-monitoring and gRPC on top, so the figure here is its floor.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import timeit
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_IMPORT_AFTER_MAIN = """
import sys, time
sys.path[:0] = [{functions!r}, {root!r}]
import main  # the function's module, as a cold start imports it
start = time.perf_counter()
{body}
print((time.perf_counter() - start) * 1000)
"""
_OTEL = """
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
meter = provider.get_meter("relay")
meter.create_counter("deliveries"); meter.create_histogram("launch_latency", unit="ms")
"""
# What the line's fields need that the function did not import before them (relay.observe imports only modules
# the function imports anyway).
_LOG = """
import relay.observe, relay.absence, relay.expectations, zoneinfo
"""


def import_ms(body: str, samples: int) -> float:
    """Median ms of `body` in a fresh process that imported the function's module first."""
    code = _IMPORT_AFTER_MAIN.format(functions=str(ROOT / "functions"), root=str(ROOT), body=body)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    times = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout)
        for _ in range(samples)
    ]
    return statistics.median(times)


def per_event_us(events: int) -> dict[str, float]:
    """Microseconds per event: the outcome line without and with its metric fields (formatted as the function
    writes it), and OpenTelemetry's counter and histogram for the same event."""
    sys.path[:0] = [str(ROOT / "functions"), str(ROOT)]
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from relay.logs import JsonFormatter
    from relay.observe import measured
    from relay.outcome import Outcome
    from relay.policy_model import Policy, Tenant

    policy = Policy(tenants=(Tenant("lab", triggers=("gs://relay-triggers/lab/",)),), source="bench")
    now = datetime(2026, 12, 7, 12, tzinfo=UTC)
    plain = Outcome("launched", "launched echo as run r-1", "8104", "gs://relay-triggers/lab/a.json", "echo-1", "r-1",
                    "echo", tenant="lab")  # fmt: skip
    formatter = JsonFormatter()

    def line(outcome: Outcome, extra: dict[str, object] | None = None) -> str:
        # As relay.logs.log_outcome builds the record, formatted as its handler writes it.
        record = logging.LogRecord("relay", logging.INFO, __file__, 0, outcome.message, None, None)
        record.relay_fields = {**outcome.fields(), **(extra or {})}
        return formatter.format(record)

    def with_fields() -> str:
        return line(plain, measured(plain, policy, now=now, event_time=now - timedelta(seconds=1)))

    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    meter = provider.get_meter("relay")
    counter, histogram = meter.create_counter("deliveries"), meter.create_histogram("launch_latency", unit="ms")
    attributes = {"outcome": "launched", "tenant": "lab", "pipeline": "echo"}

    def otel() -> None:
        counter.add(1, attributes)
        histogram.record(1000, {"tenant": "lab", "pipeline": "echo"})

    def us(call: object) -> float:
        return min(timeit.repeat(call, number=events, repeat=5)) / events * 1e6  # type: ignore[arg-type]

    return {
        "line_without_metric_fields_us": us(lambda: line(plain)),
        "line_with_metric_fields_us": us(with_fields),
        "otel_counter_and_histogram_us": us(otel),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.telemetry", description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=15, help="fresh processes per import figure")
    parser.add_argument("--events", type=int, default=20000, help="events per timing")
    args = parser.parse_args(argv)
    figures = {
        "import_log_fields_ms": import_ms(_LOG, args.samples),
        "import_otel_sdk_ms": import_ms(_OTEL, args.samples),
        **per_event_us(args.events),
    }
    print(json.dumps({name: round(value, 3) for name, value in figures.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
