"""`make bench`: Relay's warm per-event overhead against the seed function's per-event work, as a ratio.

Both sides run in this process, interleaved event by event, against real servers on 127.0.0.1 that this module
starts and stops: a GCE metadata server and a KFP v2beta1 API (tests.servers) and fake-gcs-server (devstack).

- **relay**: `handle_delivery` on a Relay built like a deployed instance (GCS blob store, the catalog, the KFP
  backend with metadata-server tokens): trigger read, claim write, token (cached), submit, launch record write.
- **baseline**: what the seed function did on every event: token GET from the metadata server, a new
  `kfp.Client` (its constructor calls healthz), `create_experiment` (get-or-create), the pipeline compiled to a
  file, `run_pipeline` under a timestamp name. It also reads the same trigger file, so both sides pay the read,
  and, like the seed, it writes no record.

Only the handling of an event is timed (time.perf_counter); uploading its trigger file is not. No figure is
compared with a threshold: speed is reported as the ratio of the two medians measured in the same run.

google-auth and kfp read GCE_METADATA_HOST when first imported, so every module that imports them (kfp,
google.cloud.storage, devstack's storage helpers, relay.adapters, tests.servers.kfp) is imported inside a
function, after the metadata server is up and the environment points at it. The relay core modules imported
below import neither.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import io
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from relay.events import STORAGE_FINALIZED, EventInfo, ObjectDelivery
from relay.ports import Blob, BlobInfo, BlobStore, LaunchedRun, LaunchRequest, PipelineBackend
from relay.service import Relay, handle_delivery
from tests.servers.metadata import MetadataServer

if TYPE_CHECKING:
    from tests.servers.kfp import KfpApiServer

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "tests" / "data" / "catalog"
PIPELINE = "echo"
EXPERIMENT = "relay"
TRIGGER_BUCKET = "relay-bench-triggers"
RESULTS_BUCKET = "relay-bench-results"
KFP_API = "/apis/v2beta1"
TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
# kfp.Client warns on every construction; the baseline constructs one per event.
KFP_CLIENT_WARNING = "This client only works with Kubeflow Pipeline v2.0.0-beta.2"
TIMES = "\u00d7"  # the multiplication sign
RELAY_PHASES = ("trigger read", "claim write", "submit", "record write")
BASELINE_PHASES = ("trigger read", "token GET", "kfp.Client", "create_experiment", "compile", "run_pipeline")


class Phases:
    """Milliseconds per named step of the event being timed; `take()` hands them over and starts afresh."""

    def __init__(self) -> None:
        self._current: dict[str, float] = {}

    def add(self, name: str, started: float) -> None:
        self._current[name] = self._current.get(name, 0.0) + (time.perf_counter() - started) * 1000

    def take(self) -> dict[str, float]:
        current, self._current = self._current, {}
        return current


class TimedStore:
    """A BlobStore that times the calls one event makes: the trigger read, then the claim and record writes."""

    def __init__(self, inner: BlobStore, phases: Phases) -> None:
        self._inner = inner
        self._phases = phases
        self._writes = 0

    def read(self, uri: str, *, generation: int | None = None) -> Blob:
        started = time.perf_counter()
        try:
            return self._inner.read(uri, generation=generation)
        finally:
            self._phases.add("trigger read", started)

    def stat(self, uri: str) -> BlobInfo:
        return self._inner.stat(uri)

    def write(self, uri: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        started = time.perf_counter()
        try:
            return self._inner.write(uri, data, if_generation_match=if_generation_match)
        finally:
            # A launch writes launch.json twice: create-only (the claim), then generation-matched (the record).
            self._phases.add("claim write" if if_generation_match == 0 else "record write", started)

    def delete(self, uri: str, *, if_generation_match: int | None = None) -> None:
        self._inner.delete(uri, if_generation_match=if_generation_match)

    def list(self, prefix: str) -> Iterator[str]:
        return self._inner.list(prefix)


class TimedBackend:
    """A PipelineBackend that times the submit (token from the cache, then run_pipeline)."""

    def __init__(self, inner: PipelineBackend, phases: Phases) -> None:
        self._inner = inner
        self._phases = phases
        self.name = inner.name

    def find_run(self, run_key: str) -> LaunchedRun | None:
        return self._inner.find_run(run_key)

    def launch(self, request: LaunchRequest) -> LaunchedRun:
        started = time.perf_counter()
        try:
            return self._inner.launch(request)
        finally:
            self._phases.add("submit", started)


@dataclass
class Side:
    """One side's timings (ms) and the work it made the servers do."""

    name: str
    timings: list[float] = field(default_factory=list)  # measured (warm) events only
    phases: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    events: int = 0  # every event this side handled: cold, warm-up and measured
    token_fetches: int = 0  # over all its events
    warm: Counter[str] = field(default_factory=Counter)  # requests per server over the measured events
    kfp_calls: Counter[str] = field(default_factory=Counter)

    def per_event(self, what: str) -> float:
        return self.warm[what] / len(self.timings)


@dataclass(frozen=True)
class Snapshot:
    """Requests each server has answered so far, and access tokens the metadata server has issued."""

    tokens: int
    metadata: int
    gcs: int
    kfp_calls: tuple[str, ...]


class HttpCounter:
    """Counts the requests python-requests sends to one host:port (the storage client rides on requests)."""

    def __init__(self, netloc: str) -> None:
        self.netloc = netloc
        self.count = 0

    @contextlib.contextmanager
    def installed(self) -> Iterator[HttpCounter]:
        from requests.adapters import HTTPAdapter

        original = HTTPAdapter.send
        counter = self

        def send(adapter: HTTPAdapter, request: Any, *args: Any, **kwargs: Any) -> Any:
            if urlsplit(str(request.url)).netloc == counter.netloc:
                counter.count += 1
            return original(adapter, request, *args, **kwargs)

        HTTPAdapter.send = send  # type: ignore[method-assign,assignment]
        try:
            yield self
        finally:
            HTTPAdapter.send = original  # type: ignore[method-assign]


@contextlib.contextmanager
def patched_environ(values: Mapping[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.launch",
        description="Relay's warm per-event overhead against the seed function's per-event work, as a ratio.",
    )
    parser.add_argument("--events", type=int, default=30, help="measured warm events per side (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up events per side, not measured (default 3)")
    args = parser.parse_args(argv)
    if args.events < 1 or args.warmup < 0:
        parser.error("--events must be at least 1 and --warmup at least 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from devstack.gcs import FakeGcsServer, fake_gcs_available

    unavailable = fake_gcs_available()
    if unavailable:
        print(f"bench: cannot start fake-gcs-server: {unavailable}", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="relay-bench-")))
        for folder in ("home", "local", "gcs"):
            (workdir / folder).mkdir()
        metadata = stack.enter_context(MetadataServer())
        gcs = stack.enter_context(FakeGcsServer(workdir / "gcs"))
        # HOME: kfp.Client reads ~/.config/kfp/context.json.
        stack.enter_context(patched_environ({**metadata.env(), **gcs.env(), "HOME": str(workdir / "home")}))
        from tests.servers.kfp import KfpApiServer

        kfp_server = stack.enter_context(KfpApiServer())
        lines = _bench(args, workdir, metadata, kfp_server, gcs.url)
        for server in (metadata, kfp_server):
            if server.errors:
                raise RuntimeError(f"{type(server).__name__} failed a request:\n{server.errors[0]}")
    print("\n".join(lines))
    return 0


def _bench(
    args: argparse.Namespace, workdir: Path, metadata: MetadataServer, kfp_server: KfpApiServer, gcs_url: str
) -> list[str]:
    warnings.filterwarnings("ignore", message=KFP_CLIENT_WARNING, category=FutureWarning)
    # Imported here, after the environment points at the metadata server (see the module docstring), and
    # before the first event, so that no event pays an import.
    import kfp  # noqa: F401
    from google.cloud import storage

    from devstack.gcs import create_bucket, storage_client

    for bucket in (TRIGGER_BUCKET, RESULTS_BUCKET):
        create_bucket(gcs_url, bucket)
    uploads = storage_client(gcs_url)
    gcs_requests = HttpCounter(urlsplit(gcs_url).netloc)
    relay_side, baseline_side = Side("relay"), Side("baseline")
    phases = Phases()
    relay = _relay(workdir, kfp_server.url, phases)
    baseline = Baseline(workdir, kfp_server.url, metadata.host_port, storage.Client(), phases)
    sink = io.StringIO()  # kfp.Client prints "Run details: ..."; Relay quiets it too, both pay the redirect

    def snapshot() -> Snapshot:
        kfp_calls = tuple(f"{r.method} {r.path.removeprefix(KFP_API)}" for r in kfp_server.requests)
        return Snapshot(metadata.token_fetches, len(metadata.requests), gcs_requests.count, kfp_calls)

    def timed(side: Side, handle: Callable[[], None], *, measured: bool) -> float:
        before = snapshot()
        gc.collect()  # outside the timed region, so no event pays for garbage another one made
        with contextlib.redirect_stdout(sink):
            started = time.perf_counter()
            handle()
            elapsed = (time.perf_counter() - started) * 1000
        sink.seek(0)
        sink.truncate()
        after, steps = snapshot(), phases.take()
        side.events += 1
        side.token_fetches += after.tokens - before.tokens
        if measured:
            side.timings.append(elapsed)
            for name, ms in steps.items():
                side.phases[name].append(ms)
            side.warm.update(
                tokens=after.tokens - before.tokens,
                metadata=after.metadata - before.metadata,
                kfp=len(after.kfp_calls) - len(before.kfp_calls),
                gcs=after.gcs - before.gcs,
            )
            side.kfp_calls.update(after.kfp_calls[len(before.kfp_calls) :])
        return elapsed

    def event(index: int, *, measured: bool, relay_first: bool = True) -> None:
        delivery = _upload(uploads, index)  # not timed; both sides then read this trigger file
        order = (relay_side, baseline_side) if relay_first else (baseline_side, relay_side)
        for side in order:
            if side is relay_side:
                timed(side, lambda: _launch(relay, delivery), measured=measured)
            else:
                timed(side, lambda: baseline.handle(delivery.bucket, delivery.name), measured=measured)

    try:
        with gcs_requests.installed():
            cold_delivery = _upload(uploads, 0)
            cold = timed(relay_side, lambda: _launch(relay, cold_delivery), measured=False)
            for index in range(1, 1 + args.warmup):
                event(index, measured=False)
            for index in range(1 + args.warmup, 1 + args.warmup + args.events):
                # Alternate which side goes first, so neither always runs right after the other.
                event(index, measured=True, relay_first=index % 2 == 0)
        records = sum(1 for _ in uploads.list_blobs(RESULTS_BUCKET))
    finally:
        uploads.close()
    return _report(args, relay_side, baseline_side, cold, records)


def _upload(uploads: Any, index: int) -> ObjectDelivery:
    """A distinct trigger file in the trigger bucket, and the delivery its finalized event makes."""
    name = f"triggers/bench-{index:04d}.json"
    document = {"pipeline": PIPELINE, "parameters": {"message": f"bench event {index}"}}
    blob = uploads.bucket(TRIGGER_BUCKET).blob(name)
    blob.upload_from_string(json.dumps(document).encode(), content_type="application/json")
    source = f"//storage.googleapis.com/projects/_/buckets/{TRIGGER_BUCKET}"
    event = EventInfo(id=f"bench-{index}", type=STORAGE_FINALIZED, source=source, time=datetime.now(UTC))
    return ObjectDelivery(event, TRIGGER_BUCKET, name, int(blob.generation), int(blob.size), via="storage-event")


def _launch(relay: Relay, delivery: ObjectDelivery) -> None:
    outcome = handle_delivery(relay, delivery)
    if outcome.outcome != "launched":
        raise RuntimeError(f"relay: expected a launch, got {outcome.outcome}: {outcome.message}")


def _relay(workdir: Path, kfp_url: str, phases: Phases) -> Relay:
    """A Relay as runtime.build_relay makes it for RELAY_BACKEND=kfp, RELAY_AUTH=metadata, its ports timed."""
    from relay import runtime
    from relay.adapters.kfp_backend import KfpBackend
    from relay.adapters.tokens import token_source_for
    from relay.catalog import Catalog
    from relay.config import Settings

    settings = Settings(
        results_uri=f"gs://{RESULTS_BUCKET}",
        backend="kfp",
        catalog_uri=str(CATALOG),
        auth="metadata",
        kfp_host=kfp_url,
        kfp_experiment=EXPERIMENT,
        local_root=str(workdir / "local"),
    )
    store = runtime.blob_store(settings)
    return Relay(
        settings=settings,
        store=TimedStore(store, phases),
        # The catalog is read once per instance (the cold event): not one of the per-event phases.
        catalog=Catalog(store, settings.catalog_uri),
        backend=TimedBackend(KfpBackend(kfp_url, EXPERIMENT, token_source_for(settings)), phases),
    )


class Baseline:
    """The seed function's per-event work (seed 002), against the same servers."""

    def __init__(self, workdir: Path, kfp_url: str, metadata_host: str, gcs: Any, phases: Phases) -> None:
        self._kfp_url = kfp_url
        self._token_url = f"http://{metadata_host}{TOKEN_PATH}"
        self._gcs = gcs
        self._phases = phases
        # The seed defined its pipeline once, at import, and compiled it on every event to a fixed /tmp file.
        self._pipeline = getattr(_load_module(CATALOG / f"{PIPELINE}.py"), PIPELINE)
        self._package = workdir / f"{PIPELINE}_pipeline.yaml"

    def handle(self, bucket: str, name: str) -> None:
        import kfp
        import requests
        from kfp import compiler

        step = time.perf_counter()
        trigger = json.loads(self._gcs.bucket(bucket).blob(name).download_as_bytes())
        step = self._done("trigger read", step)
        response = requests.get(self._token_url, headers={"Metadata-Flavor": "Google"}, timeout=10)
        response.raise_for_status()
        token = response.json()["access_token"]
        step = self._done("token GET", step)
        client = kfp.Client(host=self._kfp_url, existing_token=token)
        step = self._done("kfp.Client", step)
        experiment = client.create_experiment(EXPERIMENT)
        step = self._done("create_experiment", step)
        compiler.Compiler().compile(self._pipeline, str(self._package))
        step = self._done("compile", step)
        client.run_pipeline(
            experiment.experiment_id,
            job_name=f"{PIPELINE}-{datetime.now(UTC):%Y%m%d-%H%M%S}",
            pipeline_package_path=str(self._package),
            params=trigger["parameters"],
        )
        self._done("run_pipeline", step)

    def _done(self, name: str, started: float) -> float:
        self._phases.add(name, started)
        return time.perf_counter()


def _load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"relay_bench_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _p90(values: Sequence[float]) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def _report(args: argparse.Namespace, relay: Side, baseline: Side, cold: float, records: int) -> list[str]:
    relay_median, baseline_median = statistics.median(relay.timings), statistics.median(baseline.timings)
    ratio = relay_median / baseline_median
    speed = f"relay is {1 / ratio:.1f}{TIMES} faster" if ratio <= 1 else f"relay is {ratio:.1f}{TIMES} slower"

    def timing(label: str, values: Sequence[float]) -> str:
        return f"  {label:<40}{statistics.median(values):>10.2f}{_p90(values):>10.2f}"

    def work(label: str, relay_value: float, baseline_value: float, note: str = "") -> str:
        return f"  {label:<30}{relay_value:>10.2f}{baseline_value:>10.2f}  {note}".rstrip()

    def steps(side: Side, names: Sequence[str]) -> str:
        return " | ".join(f"{name} {statistics.median(side.phases[name]):.2f}" for name in names)

    def calls(side: Side) -> str:
        n = len(side.timings)
        return ", ".join(f"{call} {TIMES}{count / n:g}" for call, count in sorted(side.kfp_calls.items())) or "none"

    return [
        f"relay bench: {args.events} measured warm events per side after {args.warmup} warm-up events, "
        "interleaved; all servers on 127.0.0.1",
        "",
        f"  {'ms per event':<40}{'median':>10}{'p90':>10}",
        timing("relay (warm)", relay.timings),
        timing("baseline (seed's per-event work)", baseline.timings),
        f"  {'relay cold first event (1 sample)':<40}{cold:>10.2f}{'':>10}  modules imported beforehand",
        "",
        f"ratio: relay/baseline = {ratio:.2f} ({speed})",
        "  (ratio of the two medians above, measured in this run)",
        "",
        "median ms per step of a warm event:",
        f"  relay     {steps(relay, RELAY_PHASES)}",
        f"  baseline  {steps(baseline, BASELINE_PHASES)}",
        "",
        f"  {'work per warm event':<30}{'relay':>10}{'baseline':>10}",
        work("metadata token fetches", relay.per_event("tokens"), baseline.per_event("tokens")),
        work("metadata server requests", relay.per_event("metadata"), baseline.per_event("metadata")),
        work("KFP API requests", relay.per_event("kfp"), baseline.per_event("kfp")),
        work(
            "GCS requests",
            relay.per_event("gcs"),
            baseline.per_event("gcs"),
            "relay: trigger read, claim write, record write; baseline: trigger read",
        ),
        work("records written", records / relay.events, 0.0, "the seed wrote no record, nor does the baseline"),
        "",
        f"metadata token fetches over all events: relay {relay.token_fetches} in {relay.events} events, "
        f"baseline {baseline.token_fetches} in {baseline.events} events",
        f"KFP API calls per warm event: relay {calls(relay)}",
        f"                              baseline {calls(baseline)}",
    ]


if __name__ == "__main__":
    sys.exit(main())
