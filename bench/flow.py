"""`make bench`, flow part: the queue under a cap and under backpressure, each against what the backend allows and
against Relay's own uncapped path, measured in one run, printed as ratios with the issue's targets beside them
(never asserted).

Every server runs in a process of its own, outside the process that measures: fake-gcs-server, the test suite's
KFP fakes through `python -m bench.serve` (which count what they were asked and what they admitted), and each Relay
function in a functions-framework server, as deployed. This process uploads triggers (never timed), posts events,
posts the scheduler's ticks and reads its clock.

1. cap: --cap-triggers triggers of one tenant whose policy caps its runs in flight at --cap, against a KFP that
   holds at most --cap runs in flight (each ends --run-seconds after its creation; a creation past the cap is
   refused 429, and counted). Each trigger is delivered once, --concurrency at a time, to --cap-instances Relay
   processes; each run's end is published when its run time is up, as its exit step publishes it on the notify
   topic, and pushed to an on_run_ended process (RunEnds: it writes no result record, so on_run_ended asks the
   backend); a scheduler posts a reconcile tick (on_schedule) to its own Relay process back to back, at most one
   every --tick-every seconds, until every trigger has its run. Figures: the most runs the backend ever held, its
   refusals for being full, runs per trigger, drain time (first delivery to the last run created) against what the
   backend's pace allows (ceil(N / cap) - 1 run times), and the Relay processes' CPU per trigger (deliveries, run
   ends and ticks, up to the last run's end) against the uncapped path's: the same number of processes and an
   on_run_ended one, no caps, a KFP whose runs end as the capped one's (with no limit), every end delivered the
   same way, --baseline triggers, measured before the capped part in the same run. --cap-triggers 0 leaves this
   part (and the uncapped one) out: `--backpressure-full --cap-triggers 0` runs the backpressure case alone.
2. backpressure (--backpressure-full, or --backpressure N): N triggers, each delivered twice, once as a storage
   event to on_object_finalized and once as its bucket's Pub/Sub notification to on_message_published, with
   --bp-instances processes per entry point, against a KFP admitting --rate creations a second (429 with
   Retry-After beyond, one refusal in --quota-every a 503 quota error); a refused delivery is redelivered as a push
   subscription does, after 1 s doubling to 10 s. Figures: drain time against N/rate, runs per trigger, and the
   share of the backend's admissions used while triggers waited (runs created from the first refusal to the last
   run, against rate x that time).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import heapq
import itertools
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
import yaml

from bench.harness import (
    ROOT,
    Counted,
    Delivered,
    DeliveryTimeout,
    Dispatcher,
    Entry,
    Event,
    EventPoster,
    FakeProcess,
    Storage,
    group_cpu_seconds,
    notification_event,
    pubsub_push,
    runs_per_identity,
    storage_event,
    tick_event,
    tick_until,
    trigger_document,
    with_redeliveries,
)
from devstack.functions import FunctionsServer
from devstack.gcs import FakeGcsServer, fake_gcs_available

CATALOG = ROOT / "tests" / "data" / "catalog"
PIPELINE = "echo"
TRIGGERS = "relay-flow-triggers"
TOPIC = "projects/relay-bench/topics/relay-flow-triggers"
NOTIFY = "projects/relay-bench/topics/relay-flow-notify"
SOURCE = ROOT / "functions" / "main.py"
TIMES = "\u00d7"
# The most any part may take beyond what its backend's pace allows, before the bench gives up on a broken tree: on
# a 2-CPU machine shared with other suites (load 15 and more) the cap part's 1,000 deliveries alone took 7 minutes.
SLACK = 900.0


@dataclass(frozen=True)
class Plan:
    cap_triggers: int
    cap: int
    run_seconds: float
    cap_instances: int
    tick_every: float
    baseline: int  # triggers through the uncapped path, for its CPU per trigger
    concurrency: int
    backpressure: int  # 0: the part is not run
    rate: float
    bp_instances: int  # per entry point
    quota_every: int


# `make bench` runs DEFAULT (a few minutes); --full the sizes: 10,000 triggers into a cap of 50, and the
# backpressure case of 300 triggers against 2 creations/s (about 20 minutes in all on 2 CPUs).
DEFAULT = Plan(1000, 50, 2.0, 2, 0.5, 1000, 8, 0, 2.0, 2, 33)
FULL = Plan(10_000, 50, 2.0, 2, 0.5, 2000, 8, 300, 2.0, 2, 33)
# Six times the cap still queues and drains through it; six triggers at 2/s still meet refusals: what the test
# counts holds at half the time the backend's pace takes.
QUICK = Plan(30, 5, 0.5, 1, 0.2, 15, 4, 6, 2.0, 1, 3)


def parse_args(argv: Sequence[str] | None) -> Plan:
    parser = argparse.ArgumentParser(prog="python -m bench.flow", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts, to prove the harness (also BENCH_QUICK=1)")
    parser.add_argument("--full", action="store_true", help="the issue's sizes: 10,000 into 50, and 300 at 2/s")
    parser.add_argument(
        "--backpressure-full", action="store_true", help="add the backpressure case at the issue's size (300 at 2/s)"
    )
    for name, kind, text in (
        ("cap-triggers", int, "triggers into the cap (0: no cap part, nor its uncapped baseline)"),
        ("cap", int, "the tenant's max_in_flight, and the most runs the KFP fake holds"),
        ("run-seconds", float, "how long each run takes on the capped KFP"),
        ("cap-instances", int, "Relay processes taking deliveries in the cap part"),
        ("tick-every", float, "the least time between two reconcile ticks' starts"),
        ("baseline", int, "triggers through the uncapped path"),
        ("concurrency", int, "deliveries in flight at once"),
        ("backpressure", int, "triggers in the backpressure part (0: none)"),
        ("rate", float, "run creations the limited KFP admits a second"),
        ("bp-instances", int, "Relay processes per entry point in the backpressure part"),
        ("quota-every", int, "one refusal in this many a 503 quota error"),
    ):
        parser.add_argument(f"--{name}", type=kind, help=text)
    args = parser.parse_args(argv)
    quick = args.quick or os.environ.get("BENCH_QUICK") == "1"
    plan = QUICK if quick else FULL if args.full else DEFAULT
    if args.backpressure_full:
        plan = Plan(**{**plan.__dict__, "backpressure": FULL.backpressure, "rate": FULL.rate})
    overrides = {name: value for name in plan.__dict__ if (value := getattr(args, name)) is not None}
    plan = Plan(**{**plan.__dict__, **overrides})
    if min(plan.cap, plan.cap_instances, plan.baseline, plan.concurrency, plan.bp_instances) < 1:
        parser.error("every count must be at least 1 (--cap-triggers and --backpressure may be 0)")
    if plan.cap_triggers < 0 or plan.backpressure < 0 or not (plan.cap_triggers or plan.backpressure):
        parser.error("--cap-triggers and --backpressure may not be negative, nor both 0")
    if min(plan.run_seconds, plan.rate, plan.tick_every) <= 0 or plan.quota_every < 1:
        parser.error("--run-seconds, --rate and --tick-every must be positive, --quota-every at least 1")
    return plan


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def p99(values: Sequence[float]) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[98]


# --- results -----------------------------------------------------------------------------------------------------


@dataclass
class Baseline:
    triggers: int
    cpu_seconds: float
    delivered: Delivered
    runs: Counter[str]
    ends: int = 0  # run ends delivered to on_run_ended

    @property
    def cpu_ms(self) -> float:
        return self.cpu_seconds * 1000 / self.triggers


@dataclass
class Capped:
    triggers: int
    cap: int
    run_seconds: float
    delivered: Delivered
    cpu_seconds: float
    runs: Counter[str]
    entries: list[Entry]
    peak_in_flight: int
    refused_in_flight: int
    ticks: list[float] = field(default_factory=list)  # each tick's seconds
    tick_errors: Counter[int] = field(default_factory=Counter)
    tick_cpu_seconds: float = 0.0  # of cpu_seconds, the tick process's
    ends: int = 0  # run ends delivered to on_run_ended

    @property
    def cpu_ms(self) -> float:
        return self.cpu_seconds * 1000 / self.triggers

    @property
    def last_run(self) -> float:
        return max(e.at for e in self.entries if e.call == "POST /runs" and e.status == 200)

    @property
    def drain(self) -> float:
        return self.last_run - self.delivered.started_at

    @property
    def ideal(self) -> float:
        """The least time the backend's pace allows from the first run to the last: a batch of `cap` runs every
        run time."""
        return (math.ceil(self.triggers / self.cap) - 1) * self.run_seconds

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in self.runs.values() if count > 1)

    @property
    def missing(self) -> int:
        return self.triggers - len(self.runs)


@dataclass
class Limited:
    triggers: int
    rate: float
    delivered: Delivered
    entries: list[Entry]  # the backend's log, the reconcile ticks' creations after the deliveries included
    runs: Counter[str]
    left_for_tick: int  # triggers without a run when the deliveries ended, launched by that tick

    @property
    def admitted(self) -> list[Entry]:
        return [e for e in self.entries if e.call == "POST /runs" and e.status == 200]

    @property
    def refused(self) -> list[Entry]:
        return [e for e in self.entries if e.call == "POST /runs" and e.status != 200]

    @property
    def drain(self) -> float:
        return max(e.at for e in self.admitted) - self.delivered.started_at

    @property
    def used(self) -> float:
        """Runs created while triggers waited, from the first refusal on, against what the backend would have
        admitted in that time: how much of its admission Relay used. A trigger waits from its first delivery's
        sending to the creation of a run (the runs are counted, not matched: any run created ends one wait); a
        moment when none waits (the deliveries had not brought the next yet) counts neither way."""
        if not self.refused:
            return float("nan")
        start, end = min(e.at for e in self.refused), max(e.at for e in self.admitted)
        changes = sorted([(at, 1) for at in self.delivered.sent_at.values()] + [(e.at, -1) for e in self.admitted])
        waiting = created = 0
        waited, since = 0.0, start
        for at, change in changes:
            if at > end:
                break
            if start < at and waiting > 0:
                waited += at - max(since, start)
                created += change < 0
            waiting += change
            since = at
        return created / (self.rate * waited) if waited > 0 else float("nan")

    @property
    def used_span(self) -> float:
        """The same over the whole span from the first refusal to the last run created (each moment counted)."""
        if not self.refused:
            return float("nan")
        start, end = min(e.at for e in self.refused), max(e.at for e in self.admitted)
        created = sum(1 for e in self.admitted if start < e.at <= end)
        return created / (self.rate * (end - start)) if end > start else float("nan")

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in self.runs.values() if count > 1)

    @property
    def missing(self) -> int:
        return self.triggers - len(self.runs)


# --- the run -------------------------------------------------------------------------------------------------------


class Scheduler:
    """Reconcile ticks posted to one Relay process back to back, starting at most one every `every` seconds."""

    def __init__(self, url: str, every: float) -> None:
        self._poster = EventPoster(url)
        self._every = every
        self._stop = threading.Event()
        self.seconds: list[float] = []
        self.errors: Counter[int] = Counter()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Scheduler:
        self._thread.start()
        return self

    def _run(self) -> None:
        for number in itertools.count(1):
            started = time.perf_counter()
            status = self._poster.post(tick_event(number))
            took = time.perf_counter() - started
            self.seconds.append(took)
            if status != 200:
                self.errors[status] += 1
            if self._stop.wait(max(0.0, self._every - took)):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)
        self._poster.close()


def end_event(run_key: str, number: int) -> Event:
    """A run's end on the notify topic, as the pipeline's exit step publishes it (relay.results.publish_record's
    attributes) and a push subscription delivers it to on_run_ended."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    record = {"run_key": run_key, "pipeline": PIPELINE, "state": "succeeded"}
    message = {
        "data": base64.b64encode(json.dumps(record).encode()).decode(),
        "messageId": f"end-{number}",
        "publishTime": now,
        "attributes": {"run_key": run_key, "pipeline": PIPELINE, "state": "succeeded"},
    }
    return pubsub_push(NOTIFY, message, f"{NOTIFY}-ended", run_key, {}, "ended")


class RunEnds:
    """The runs' exit steps and the notify topic's push subscription: each run the KFP fake created publishes its
    end when its run time is up (a moment after, so the fake has it ended), and the end is posted to on_run_ended,
    `concurrency` at a time, again after 1 s while not answered 200 (as Pub/Sub redelivers). The bench writes no
    result record for the run, as its exit step would: on_run_ended asks the backend, on both sides."""

    MARGIN = 0.05

    def __init__(self, kfp: FakeProcess, url: str, run_seconds: float, concurrency: int) -> None:
        self._log = Counted(kfp)
        self._url, self._run_seconds = url, run_seconds
        self._due: list[tuple[float, int, str]] = []  # (when, number, run key), a heap
        self._pool = ThreadPoolExecutor(concurrency)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.created = self.answered = 0
        self.statuses: Counter[int] = Counter()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> RunEnds:
        self._thread.start()
        return self

    def _run(self) -> None:
        numbers = itertools.count(1)
        while not self._stop.wait(0.05):
            seen = len(self._log.entries)
            try:
                self._log.refresh()
            except requests.RequestException:  # a loaded machine: the fake's next answer brings what this missed
                continue
            for entry in self._log.entries[seen:]:
                if entry.call == "POST /runs" and entry.status == 200 and entry.run_key:
                    due = entry.at + self._run_seconds + self.MARGIN
                    heapq.heappush(self._due, (due, next(numbers), entry.run_key))
                    with self._lock:
                        self.created += 1
            while self._due and self._due[0][0] <= time.time():
                _, number, run_key = heapq.heappop(self._due)
                self._pool.submit(self._post, end_event(run_key, number))

    def _post(self, event: Event) -> None:
        poster = getattr(self._local, "poster", None)
        if poster is None:
            poster = self._local.poster = EventPoster(self._url)
        while (status := poster.post(event)) != 200 and not self._stop.is_set():
            with self._lock:
                self.statuses[status] += 1
            time.sleep(1.0)
        with self._lock:
            self.statuses[status] += 1
            self.answered += 1

    def settle(self, runs: int, timeout: float) -> None:
        """Wait until the ends of `runs` runs have been answered (or `timeout` seconds have passed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.answered >= runs:
                    return
            time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._pool.shutdown(wait=True, cancel_futures=True)


class Flow:
    def __init__(self, plan: Plan, workdir: Path, stack: contextlib.ExitStack) -> None:
        self.plan = plan
        self.workdir = workdir
        self.stack = stack
        (workdir / "logs").mkdir()
        (workdir / "home").mkdir()
        self.gcs = FakeGcsServer(workdir / "logs")
        self.gcs.launch()
        stack.callback(self.gcs.stop)
        self.metadata = self._fake("metadata")
        self.gcs.wait_ready()
        self.storage = Storage(self.gcs.url)
        self.storage.create_bucket(TRIGGERS)

    def _fake(self, kind: str, *extra: str) -> FakeProcess:
        fake = FakeProcess(kind, self.workdir / "logs", *extra)
        fake.launch()
        self.stack.callback(fake.stop)
        return fake.wait_ready()

    def _relays(self, label: str, kfp: FakeProcess, policy: Mapping[str, Any], targets: Sequence[str]) -> list[Any]:
        """One results bucket and policy per part, and a functions-framework process per target."""
        results = f"relay-flow-{label}"
        self.storage.create_bucket(results)
        policy_file = self.workdir / f"policy-{label}.yaml"
        policy_file.write_text(yaml.safe_dump(policy))
        env = {
            "PYTHONPATH": os.pathsep.join([str(ROOT / "functions"), str(ROOT)]),
            "HOME": str(self.workdir / "home"),
            "GCE_METADATA_HOST": self.metadata.host_port,
            "GCE_METADATA_IP": self.metadata.host_port,
            "STORAGE_EMULATOR_HOST": self.gcs.url,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "RELAY_BACKEND": "kfp",
            "RELAY_AUTH": "metadata",
            "RELAY_KFP_EXPERIMENT": "relay",
            "RELAY_KFP_HOST": kfp.url,
            "RELAY_RESULTS_URI": f"gs://{results}",
            "RELAY_CATALOG_URI": str(CATALOG),
            "RELAY_POLICY_URI": str(policy_file),
            "RELAY_LOCAL_ROOT": str(self.workdir / "local"),
        }
        servers = []
        for number, target in enumerate(targets):
            logs = self.workdir / "logs" / f"{label}-{number}"
            logs.mkdir()
            server = FunctionsServer(target, SOURCE, env, workdir=logs)
            server.launch()
            self.stack.callback(server.stop)
            servers.append(server)
        for server in servers:
            server.wait_ready()
        return servers

    def triggers(self, prefix: str, count: int) -> list[Event]:
        names = [f"{prefix}/t-{index:05d}.json" for index in range(count)]
        with ThreadPoolExecutor(8) as pool:
            resources = list(
                pool.map(
                    lambda name: self.storage.upload(
                        TRIGGERS, name, trigger_document(PIPELINE, f"gs://{TRIGGERS}/{name}")
                    ),
                    names,
                )
            )
        return [storage_event(resource, f"{prefix}-{n}") for n, resource in enumerate(resources)]

    def _deliver(
        self, dispatcher: Dispatcher, events: Sequence[Event], servers: Sequence[Any], deadline: float
    ) -> Delivered:
        try:
            return dispatcher.run(events, deadline=deadline)
        except DeliveryTimeout as timeout:
            tails = "\n".join(f"--- {s.process.log_path} ---\n{s.process.log_tail(30)}" for s in servers)
            raise RuntimeError(f"{timeout}\n{tails}") from None

    @staticmethod
    def _cpu(servers: Sequence[Any]) -> float:
        return sum(group_cpu_seconds(server.process.pid) for server in servers)

    # -- 1. the cap ---------------------------------------------------------------------------------------------

    def _policy(self, caps: Mapping[str, Any] | None) -> dict[str, Any]:
        tenant: dict[str, Any] = {
            "name": "bench",
            "triggers": [f"gs://{TRIGGERS}/"],
            "topics": [TOPIC],
            "pipelines": [PIPELINE],
        }
        if caps:
            tenant["caps"] = dict(caps)
        return {"version": 1, "notifications": [{"topic": TOPIC, "buckets": [TRIGGERS]}], "tenants": [tenant]}

    def baseline(self) -> Baseline:
        plan = self.plan
        # No cap, runs that end as the capped side's do, and their ends delivered the same way: both sides pay them.
        kfp = self._fake("kfp", "--max-in-flight", str(10**9), "--run-seconds", str(plan.run_seconds))
        targets = ["on_object_finalized"] * plan.cap_instances + ["on_run_ended"]
        servers = self._relays("uncapped", kfp, self._policy(None), targets)
        log = Counted(kfp)
        events = self.triggers("uncapped", plan.baseline)
        dispatcher = Dispatcher([s.url for s in servers[:-1]], concurrency=plan.concurrency, redeliver_after=1.0)
        cpu = self._cpu(servers)
        ends = RunEnds(kfp, servers[-1].url, plan.run_seconds, plan.concurrency).start()
        try:
            delivered = self._deliver(dispatcher, events, servers, SLACK)
            ends.settle(plan.baseline, plan.run_seconds + SLACK)
        finally:
            ends.stop()
        cpu = self._cpu(servers) - cpu
        runs = runs_per_identity(log.refresh().entries, {e.uri for e in events})
        return Baseline(plan.baseline, cpu, delivered, runs, ends.answered)

    def capped(self) -> Capped:
        plan = self.plan
        kfp = self._fake("kfp", "--max-in-flight", str(plan.cap), "--run-seconds", str(plan.run_seconds))
        targets = ["on_object_finalized"] * plan.cap_instances + ["on_run_ended", "on_schedule"]
        servers = self._relays("capped", kfp, self._policy({"max_in_flight": plan.cap}), targets)
        log = Counted(kfp)
        events = self.triggers("capped", plan.cap_triggers)
        uris = {e.uri for e in events}
        dispatcher = Dispatcher([s.url for s in servers[:-2]], concurrency=plan.concurrency, redeliver_after=1.0)
        ideal = (math.ceil(plan.cap_triggers / plan.cap) - 1) * plan.run_seconds
        deadline = time.monotonic() + 3 * ideal + SLACK
        cpu, tick_cpu = self._cpu(servers), self._cpu(servers[-1:])
        ends = RunEnds(kfp, servers[-2].url, plan.run_seconds, plan.concurrency).start()
        scheduler = Scheduler(servers[-1].url, plan.tick_every).start()
        try:
            delivered = self._deliver(dispatcher, events, servers, 3 * ideal + SLACK)
            while len(runs_per_identity(log.refresh().entries, uris)) < plan.cap_triggers:
                if time.monotonic() > deadline:
                    tails = "\n".join(f"--- {s.process.log_path} ---\n{s.process.log_tail(20)}" for s in servers)
                    found = len(runs_per_identity(log.entries, uris))
                    raise RuntimeError(
                        f"cap: {found} of {plan.cap_triggers} runs after {3 * ideal + SLACK:.0f} s\n{tails}"
                    )
                time.sleep(0.2)
        finally:
            scheduler.stop()
        try:
            ends.settle(plan.cap_triggers, plan.run_seconds + SLACK)  # the last runs' ends, as the baseline's
        finally:
            ends.stop()
        cpu, tick_cpu = self._cpu(servers) - cpu, self._cpu(servers[-1:]) - tick_cpu
        stats = kfp.stats(len(log.entries))
        runs = runs_per_identity(log.entries, uris)
        return Capped(
            plan.cap_triggers,
            plan.cap,
            plan.run_seconds,
            delivered,
            cpu,
            runs,
            log.entries,
            int(stats["peak_in_flight"]),
            int(stats["refused_in_flight"]),
            scheduler.seconds,
            scheduler.errors,
            tick_cpu,
            ends.answered,
        )

    # -- 2. backpressure ----------------------------------------------------------------------------------------

    def backpressure(self) -> Limited:
        plan = self.plan
        kfp = self._fake("kfp", "--admit-rate", str(plan.rate), "--quota-every", str(plan.quota_every))
        targets = ["on_object_finalized"] * plan.bp_instances + ["on_message_published"] * plan.bp_instances
        # and the deployment's Cloud Scheduler tick, posted once the deliveries are over (below)
        servers = self._relays("limited", kfp, self._policy(None), [*targets, "on_schedule"])
        ticker, servers = servers[-1], servers[:-1]
        log = Counted(kfp)
        stored = self.triggers("limited", plan.backpressure)
        pushed = [notification_event(e.resource, f"limited-n-{n}", TOPIC) for n, e in enumerate(stored)]
        # Each trigger twice: its storage event, and its notification a few places later.
        events = with_redeliveries(stored, lag=plan.concurrency * 4)
        second = iter(pushed)
        seen: set[str] = set()
        ordered = []
        for event in events:
            ordered.append(next(second) if event.uri in seen else event)
            seen.add(event.uri)
        urls = {
            "storage": [s.url for s in servers[: plan.bp_instances]],
            "pubsub": [s.url for s in servers[plan.bp_instances :]],
        }
        dispatcher = Dispatcher(urls, concurrency=plan.concurrency, redeliver_after=1.0, backoff_to=10.0)
        delivered = self._deliver(dispatcher, ordered, servers, 4 * plan.backpressure / plan.rate + SLACK)
        entries = list(log.refresh().entries)
        uris = {e.uri for e in stored}
        left = plan.backpressure - len(runs_per_identity(entries, uris))
        if left:  # a queued trigger no delivery stayed to launch waits for the reconcile ticks, as deployed
            tick_until(ticker.url, lambda: len(runs_per_identity(log.refresh().entries, uris)) == plan.backpressure)
        entries = list(log.refresh().entries)  # the ticks' creations too: every trigger's run is counted once
        return Limited(plan.backpressure, plan.rate, delivered, entries, runs_per_identity(entries, uris), left)


# --- the report ------------------------------------------------------------------------------------------------


def _row(label: str, relay: str, base: str, ratio: str, target: str = "", met: bool | None = None) -> str:
    verdict = "" if met is None else ("yes" if met else "NO")
    return f"  {label:<44}{relay:>10}{base:>10}{ratio:>8}  {target:<18}{verdict}".rstrip()


def report(plan: Plan, capped: tuple[Baseline, Capped] | None, limited: Limited | None) -> list[str]:
    parts = []
    if capped:
        parts.append(
            f"{plan.cap_triggers} triggers into a cap of {plan.cap} (KFP holding at most {plan.cap} "
            f"runs, {plan.run_seconds:g} s each), baseline {plan.baseline} uncapped triggers"
        )
    if limited:
        parts.append(f"{plan.backpressure} triggers {TIMES}2 entry points against a KFP admitting {plan.rate:g} runs/s")
    lines = [
        "relay flow bench: " + "; ".join(parts),
        "every server in its own process on 127.0.0.1; figures from a shared machine are noisy: read the ratios",
        "",
        _row("figure", "relay", "baseline", "ratio", "target").ljust(94) + "met",
    ]
    if capped:
        lines += _cap_rows(*capped)
    if limited is not None:
        lines += _backpressure_rows(limited)
    if capped:
        lines += ["", *_cap_lines(*capped)]
    if limited is not None:
        refusals = Counter(e.status for e in limited.refused)
        statuses = ", ".join(f"{s or 'no answer'} {TIMES}{n}" for s, n in sorted(limited.delivered.statuses.items()))
        lines += [
            "",
            f"backpressure: {limited.delivered.deliveries} deliveries answered after {limited.delivered.seconds:.1f} s "
            f"({limited.delivered.attempts} attempts: {statuses}); creations admitted {len(limited.admitted)}, "
            "refused "
            + (", ".join(f"{s} {TIMES}{n}" for s, n in sorted(refusals.items())) or "none")
            + f"; admission used over the whole span from the first refusal {limited.used_span:.2f}",
        ]
    return lines


def _cap_rows(base: Baseline, cap: Capped) -> list[str]:
    cpu_ratio = cap.cpu_ms / base.cpu_ms
    drain_ratio = cap.drain / cap.ideal if cap.ideal > 0 else float("nan")
    return [
        _row(
            "cap: most runs in flight at the backend",
            str(cap.peak_in_flight),
            str(cap.cap),
            "",
            f"<= {cap.cap}",
            cap.peak_in_flight <= cap.cap,
        ),
        _row(
            "cap: creations refused for a full backend",
            str(cap.refused_in_flight),
            "",
            "",
            "0",
            cap.refused_in_flight == 0,
        ),
        _row("cap: duplicate runs", str(cap.duplicates), "", "", "0", cap.duplicates == 0),
        _row("cap: missing runs", str(cap.missing), "", "", "0", cap.missing == 0),
        _row(
            "cap: drain s, vs the backend's pace",
            f"{cap.drain:.1f}",
            f"{cap.ideal:.1f}",
            f"{drain_ratio:.2f}",
            "ratio <= 1.10",
            drain_ratio <= 1.1,
        ),
        _row(
            "cap: CPU ms/trigger, vs uncapped",
            f"{cap.cpu_ms:.2f}",
            f"{base.cpu_ms:.2f}",
            f"{cpu_ratio:.2f}",
            "ratio <= 1.20",
            cpu_ratio <= 1.2,
        ),
    ]


def _backpressure_rows(limited: Limited) -> list[str]:
    ideal = limited.triggers / limited.rate
    ratio = limited.drain / ideal
    return [
        _row(
            "backpressure: drain s, vs N/rate",
            f"{limited.drain:.1f}",
            f"{ideal:.1f}",
            f"{ratio:.2f}",
            "ratio <= 1.30",
            ratio <= 1.3,
        ),
        _row(
            "backpressure: admission used while waiting",
            f"{limited.used:.2f}",
            "1.00",
            f"{limited.used:.2f}",
            "ratio > 0.80",
            limited.used > 0.8,
        ),
        _row("backpressure: duplicate runs", str(limited.duplicates), "", "", "0", limited.duplicates == 0),
        _row(
            "backpressure: runs left for the tick", str(limited.left_for_tick), "", "", "0", limited.left_for_tick == 0
        ),
        _row("backpressure: missing runs", str(limited.missing), "", "", "0", limited.missing == 0),
    ]


def _cap_lines(base: Baseline, cap: Capped) -> list[str]:
    statuses = ", ".join(f"{s or 'no answer'} {TIMES}{n}" for s, n in sorted(cap.delivered.statuses.items()))
    return [
        f"cap: {cap.triggers} deliveries answered in {cap.delivered.seconds:.1f} s ({cap.delivered.attempts} attempts: "
        f"{statuses}); last run created {cap.drain:.1f} s after the first delivery; Relay CPU {cap.cpu_seconds:.1f} s "
        f"({cap.tick_cpu_seconds:.1f} s of it the ticks'); {cap.ends} run ends delivered to on_run_ended",
        f"cap: {len(cap.ticks)} reconcile ticks, median {median(cap.ticks):.2f} s, p99 {p99(cap.ticks):.2f} s"
        + (f"; not 200: {dict(cap.tick_errors)}" if cap.tick_errors else ""),
        f"uncapped: {base.triggers} deliveries answered in {base.delivered.seconds:.1f} s "
        f"({base.triggers / base.delivered.seconds:.1f} triggers/s); Relay CPU {base.cpu_seconds:.1f} s; runs "
        f"{sum(base.runs.values())}, missing {base.triggers - len(base.runs)}; {base.ends} run ends delivered",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    plan = parse_args(argv)
    unavailable = fake_gcs_available()
    if unavailable:
        print(f"bench: cannot start fake-gcs-server: {unavailable}", file=sys.stderr)
        return 2
    phases: list[tuple[str, float]] = []

    @contextlib.contextmanager
    def phase(name: str) -> Iterator[None]:
        started = time.perf_counter()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        yield
        phases.append((name, time.perf_counter() - started))

    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="relay-flow-")))
        with phase("servers"):
            flow = Flow(plan, workdir, stack)
        capped = limited = None
        if plan.cap_triggers:
            with phase("uncapped"):
                base = flow.baseline()
            with phase("cap"):
                capped = (base, flow.capped())
        if plan.backpressure:
            with phase("backpressure"):
                limited = flow.backpressure()
        lines = report(plan, capped, limited)
    lines += ["", "bench phases: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases)]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
