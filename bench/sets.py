"""`make bench`, sets part: 1,000 sets of 24 objects each (one folder each), every object's notification delivered
twice, shuffled (out of order), from 16 threads, through Relay's launch use-case (relay.service.handle_delivery,
a redelivery for anything it raised) against the test suite's KFP v2beta1 fake in a process of its own (bench.serve);
then the same objects, fewer of them, through a route without a set (one run per object: the single-trigger path).

Printed: runs created (exactly one per set, as the KFP fake counted them by the set's id), sets whose run got all
24 of their objects (from the launch records), and wall time and CPU (this process's, where Relay runs; the
fake's is apart) per object delivered, set path against single path, as a ratio. Storage is in memory
(MemoryStore below, with Cloud Storage's create-only and generation rules): the figure is Relay's own
cost and its backend round trips, not a storage emulator's.
"""

from __future__ import annotations

import argparse
import bisect
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bench.harness import ROOT, Counted, FakeProcess
from relay import naming, records
from relay.adapters.kfp_backend import KfpBackend
from relay.adapters.tokens import StaticTokenSource
from relay.catalog import Catalog
from relay.config import Settings
from relay.errors import BlobNotFoundError, PreconditionFailedError, TransientError
from relay.events import EventInfo, Message, ObjectDelivery
from relay.policy import parse_policy
from relay.ports import Blob, BlobInfo
from relay.service import Relay, handle_delivery

TOPIC = "projects/proj-bench/topics/lab"
RESULTS = "gs://relay-bench-results/relay"
POLICY = """
notifications:
  - {topic: projects/proj-bench/topics/lab, buckets: [lab-data]}
tenants:
  - name: lab
    topics: [projects/proj-bench/topics/lab]
    pipelines: [echo]
    routes:
      - id: plates
        bucket: lab-data
        prefix: plates/
        pipeline: echo
        set: {size: SIZE}
        parameters: {message: "{set}", items: "{objects}", count: "{count}"}
      - id: single
        bucket: lab-data
        prefix: single/
        pipeline: echo
        parameters: {message: "{uri}"}
"""


class MemoryStore:
    """Cloud Storage's rules in memory (create-only is generation 0, every write a new generation, a listing in
    name order), with the names kept sorted so that a listing costs a bisection and its own length, as Cloud
    Storage's does: a scan of every object per listing would make the bench quadratic in the store's size."""

    def __init__(self) -> None:
        self._objects: dict[str, tuple[bytes, int]] = {}
        self._names: list[str] = []
        self._generation = 0
        self._lock = threading.Lock()

    def read(self, uri: str, *, generation: int | None = None) -> Blob:
        with self._lock:
            found = self._objects.get(uri)
        if found is None or generation not in (None, found[1]):
            raise BlobNotFoundError(uri)
        return Blob(*found)

    def stat(self, uri: str, *, generation: int | None = None) -> BlobInfo:
        blob = self.read(uri, generation=generation)
        return BlobInfo(len(blob.data), blob.generation)

    def write(self, uri: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        with self._lock:
            current = self._objects.get(uri, (b"", 0))[1]
            if if_generation_match is not None and if_generation_match != current:
                raise PreconditionFailedError(f"{uri}: expected {if_generation_match}, found {current}")
            self._generation += 1
            self._objects[uri] = (data, self._generation)
            if not current:
                bisect.insort(self._names, uri)
            return self._generation

    def delete(self, uri: str, *, if_generation_match: int | None = None) -> None:
        with self._lock:
            current = self._objects.get(uri, (b"", 0))[1]
            if if_generation_match is not None and current and if_generation_match != current:
                raise PreconditionFailedError(uri)
            if current:
                del self._objects[uri]
                del self._names[bisect.bisect_left(self._names, uri)]

    def list(self, prefix: str) -> Iterator[str]:
        with self._lock:
            start = bisect.bisect_left(self._names, prefix)
            end = bisect.bisect_left(self._names, prefix + "\U0010ffff")
            return iter(self._names[start:end])


@dataclass(frozen=True)
class Plan:
    sets: int = 1000
    size: int = 24
    threads: int = 16
    single: int = 2400  # objects through the single-trigger path (the baseline, per object)


FULL = Plan()
QUICK = Plan(sets=10, size=24, threads=16, single=60)  # 480 shuffled deliveries from 16 threads still race


@dataclass(frozen=True)
class Measured:
    objects: int
    wall: float
    cpu: float
    runs: Counter[str]

    def per_object_ms(self) -> tuple[float, float]:
        return 1000 * self.wall / self.objects, 1000 * self.cpu / self.objects


def relay_for(backend: KfpBackend, size: int) -> tuple[Relay, MemoryStore]:
    store = MemoryStore()
    store.write("gs://catalog/echo.yaml", (ROOT / "tests" / "data" / "catalog" / "echo.yaml").read_bytes())
    settings = Settings(results_uri=RESULTS, catalog_uri="gs://catalog", max_event_age=3600)
    relay = Relay(settings=settings, store=store, catalog=Catalog(store, settings.catalog_uri), backend=backend)
    return replace(relay, policy=parse_policy(POLICY.replace("SIZE", str(size)), "bench-policy.yaml")), store


def notification(store: MemoryStore, name: str) -> ObjectDelivery:
    generation = store.write(f"gs://lab-data/{name}", b"well,value\n")
    event = EventInfo(id=f"m-{name}", type="google.cloud.pubsub.topic.v1.messagePublished", source="bench", time=None)
    return ObjectDelivery(event, "lab-data", name, generation, None, "storage-notification", Message(TOPIC, name))


def deliver_all(relay: Relay, deliveries: Sequence[ObjectDelivery], threads: int) -> None:
    """Each delivery handled once it returns; one that raised (a claim another thread holds) delivered again, as
    Pub/Sub would. `threads` at once, each taking every threads-th delivery."""
    failures: list[BaseException] = []

    def work(start: int) -> None:
        for delivery in deliveries[start::threads]:
            while True:
                try:
                    handle_delivery(relay, delivery)
                    break
                except TransientError:
                    time.sleep(0.001)
                except BaseException as error:  # reported below: the bench's figures would be wrong
                    failures.append(error)
                    return

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if failures:
        raise RuntimeError(f"{len(failures)} deliveries failed; the first: {failures[0]!r}")


def measure(kfp: FakeProcess, counted: Counted, run: Callable[[], None], objects: int) -> Measured:
    before = len(counted.refresh().entries)
    cpu, wall = time.process_time(), time.perf_counter()
    run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    created = [e for e in counted.refresh().entries[before:] if e.method == "POST" and e.path.endswith("/runs")]
    return Measured(objects, wall, cpu, Counter(e.identity for e in created if e.status == 200 and e.identity))


def complete_sets(store: MemoryStore, size: int) -> int:
    """Launch records of set runs whose objects are `size` distinct objects of one folder."""
    complete = 0
    for uri in store.list(naming.join(RESULTS, "runs") + "/"):
        record = records.decode(store.read(uri).data)
        objects = record.get("parameters", {}).get("items") or []
        folders = {o.rsplit("/", 1)[0] for o in objects}
        complete += len(set(objects)) == size and len(folders) == 1
    return complete


def bench(plan: Plan, workdir: Path) -> list[str]:
    kfp = FakeProcess("kfp", workdir).launch().wait_ready()
    try:
        counted = Counted(kfp)
        backend = KfpBackend(kfp.url, "relay-bench", StaticTokenSource("bench-token"))
        # Warm-up, not measured: the backend's first launch finds (or makes) its experiment and connection.
        warm_relay, warm_store = relay_for(backend, plan.size)
        handle_delivery(warm_relay, notification(warm_store, "single/warm-up.csv"))
        relay, store = relay_for(backend, plan.size)
        names = [f"plates/p{s:05d}/w{n:02d}.csv" for s in range(plan.sets) for n in range(plan.size)]
        deliveries = [notification(store, name) for name in names] * 2
        random.Random(23).shuffle(deliveries)
        sets = measure(kfp, counted, lambda: deliver_all(relay, deliveries, plan.threads), len(names))
        single_relay, single_store = relay_for(backend, plan.size)
        singles = [notification(single_store, f"single/o{n:05d}.csv") for n in range(plan.single)] * 2
        random.Random(22).shuffle(singles)
        single = measure(kfp, counted, lambda: deliver_all(single_relay, singles, plan.threads), plan.single)
        complete = complete_sets(store, plan.size)
    finally:
        kfp.stop()
    set_wall, set_cpu = sets.per_object_ms()
    one_wall, one_cpu = single.per_object_ms()
    runs, once = sum(sets.runs.values()), sum(1 for count in sets.runs.values() if count == 1)
    title = f"{plan.sets} sets of {plan.size} objects, each delivered twice, shuffled, {plan.threads} threads"
    return [
        f"sets: {title} (single path: {plan.single} objects, twice)",
        f"  {'runs created, vs sets':44} {runs} vs {plan.sets} ({once} sets with exactly one run)",
        f"  {'sets whose run has all their objects':44} {complete} of {plan.sets}",
        f"  {'wall ms/object, sets vs single path':44} {set_wall:.3f} vs {one_wall:.3f} ({set_wall / one_wall:.2f}x)",
        f"  {'CPU ms/object, sets vs single path':44} {set_cpu:.3f} vs {one_cpu:.3f} ({set_cpu / one_cpu:.2f}x)",
        f"  {'single path runs, vs objects':44} {sum(single.runs.values())} vs {plan.single}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sets", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts (the test of the bench)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="relay-bench-sets-") as workdir:
        print("\n".join(bench(QUICK if args.quick else FULL, Path(workdir))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
