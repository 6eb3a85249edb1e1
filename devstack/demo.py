"""`make demo`: Relay's main job on the embedded local default, the whole event chain on this machine.

Starts the local stack (fake-gcs-server notifying the Pub/Sub emulator, the storage-event bridge, both functions on
functions-framework, the local backend), seeds sample data, drops sample triggers, uploads a data object a route of
devstack/policy.yaml takes and one no route takes, cancels a run through the topic and reruns it, drops pushes past
a cap (the demo's policy caps the lab tenant's push runs in flight: they queue, with their places, and launch as
runs end), shows the runs as they go, then prints what became of each, and `relay why` of one, and stops everything.
Exits 0 only if every sample ended as expected.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from devstack.logs import outcome_lines
from devstack.policy import TEMPLATE, write_policy
from devstack.pubsub import emulator_available
from devstack.seed import BENCHMARKS, seed
from devstack.stack import LocalStack
from relay import naming, queue
from relay.adapters.gcs import GcsBlobStore
from relay.adapters.localfs import LocalBlobStore
from relay.adapters.routing import RoutingBlobStore
from relay.adapters.tokens import NoTokenSource
from relay.events import NONCE_ATTRIBUTE
from relay.policy import NO_POLICY, Policy, route_of, tenant_for_object, tenant_for_topic
from relay.routes import ObjectEvent
from relay.service import parse_document, route_run_key, run_key_for, set_run_key
from relay.sets import set_id
from relay.status import RunRecords, read_run
from relaycli import output
from relaycli.main import main as relay_main

REPO = Path(__file__).resolve().parents[1]
PROJECT = "relay-local"
TRIGGERS, RESULTS, LAB, ML = "relay-triggers", "relay-results", "lab-data", "ml-data"
TRIGGER_TOPIC, NOTIFY_TOPIC = "relay-triggers", "relay-notify"
TRIGGER_TOPIC_PATH = naming.topic_path(PROJECT, TRIGGER_TOPIC)
EXAMPLES = REPO / "examples"
CATALOG = REPO / "pipelines" / "compiled"
FINAL = ("succeeded", "failed", "rejected", "cancelled")
ROUTED = "incoming/reading-1.json"  # under the lab tenant's route incoming-json (devstack/policy.yaml)
UNROUTED = "incoming/notes.txt"  # beside it, but no route takes it (incoming-json's glob is *.json): skipped
PLATE = "plates/plate-1/"  # a folder under the lab tenant's set route plates (devstack/policy.yaml): 3 files, one run
PLATE_FILES = ("a01.csv", "a02.csv", "a03.csv")
# The demo's policy caps the lab tenant's push runs in flight at this (devstack/policy.yaml has no caps): the capped
# pushes and the other push samples share the cap, so some wait in the queue and launch as others end.
PUSH_CAP = 3
CAPPED = 3


@dataclass(frozen=True)
class Sample:
    """One thing the demo does, and what it must end as."""

    label: str
    document: dict[str, Any]
    expect: str  # succeeded, rejected, duplicate, skipped or cancelled
    code: str = ""  # for `rejected`: the rejection's error code, so that it is refused for the right reason
    # bucket: dropped in the trigger bucket; topic: published; again: the push redelivered; route: a data object
    # uploaded to a routed location (`name` in gs://lab-data); cancel: published, then cancelled once launched;
    # set: the files of a plate uploaded to the folder `name`, their notifications out of order and one twice;
    # unrouted: a data object uploaded where no route takes it (`name` in gs://lab-data); rerun: the `after`
    # sample's run asked to run again through the topic (attribute action=rerun)
    how: str = "bucket"
    name: str = ""
    after: str = ""  # the label of a sample that must have ended first


@dataclass
class Tracked:
    sample: Sample
    run_key: str = ""
    trigger_uri: str = ""
    started: float = 0.0
    ended: float = 0.0
    state: str = "waiting"
    run: RunRecords | None = None
    note: str = ""
    duplicates_before: int = 0
    pipeline: str = ""  # a route's, for a data object (which names none)
    cancel_sent: bool = False
    place: int | None = None  # its place in its tenant's queue while it waits there
    queued_for: float = 0.0  # seconds it waited in the queue, once it left it
    said_queued: bool = False  # a line said it waits in the queue (output that is not a terminal)

    @property
    def done(self) -> bool:
        return self.state in (*FINAL, "duplicate", "skipped")

    @property
    def code(self) -> str:
        """The rejection's error code, once there is one."""
        error = ((self.run.rejection if self.run else None) or {}).get("error") or {}
        return str(error.get("code") or "")

    @property
    def problems(self) -> list[str]:
        """A rejection's problems, as `field: expected ..., found ...`."""
        error = ((self.run.rejection if self.run else None) or {}).get("error") or {}
        listed = error.get("problems") or []
        return [f"{p.get('field')}: expected {p.get('expected')}, found {p.get('found')}" for p in listed]

    @property
    def as_expected(self) -> bool:
        return self.state == self.sample.expect and (not self.sample.code or self.code == self.sample.code)


@dataclass
class Demo:
    tracked: list[Tracked] = field(default_factory=list)
    report: Path | None = None
    delivered_directly: bool = False
    policy: Policy = NO_POLICY  # the stack's, as the functions read it: it decides the tenant of each trigger

    @property
    def ok(self) -> bool:
        return all(t.as_expected for t in self.tracked)


def example(name: str) -> dict[str, Any]:
    """A trigger of examples/, which docs/quickstart.md has users send to `make up`: the demo sends them too."""
    path = EXAMPLES / name
    document = yaml.safe_load(path.read_text()) if path.suffix == ".yaml" else json.loads(path.read_text())
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a trigger document (a mapping)")
    return document


def samples() -> list[Sample]:
    push, ratchet, from_topic = example("push.json"), example("ratchet.json"), example("push-reference.yaml")
    malformed = {
        "pipeline": "push",
        "parameters": {"sources": f"gs://{LAB}/assay/", "destination": {"kind": "gcs"}, "colour": "blue"},
    }
    # Well-formed, but beyond the policy: a host it does not name, and a secret it binds nowhere.
    elsewhere = {
        "pipeline": "push",
        "parameters": {
            "sources": [f"gs://{LAB}/reference/"],
            "destination": {
                "kind": "http",
                "url": "https://collector.example.net/upload/{name}",
                "headers": {"Authorization": "secret://collector-token"},
            },
        },
    }
    # A data object, not a trigger: the route decides the pipeline and its parameters.
    reading = {"instrument": "plate-reader-2", "well": "B7", "absorbance": 0.412}
    # Cancelled through the topic as soon as its launch is recorded: kfp.local takes seconds to start any task.
    to_cancel = {**push, "parameters": {**push["parameters"], "destination": {"kind": "gcs", "bucket": ML}}}
    return [
        Sample("push bucket to bucket", push, "succeeded", name="demo/push-assay.json"),
        Sample("ratchet, first run (sets the bar)", ratchet, "succeeded", name="demo/ratchet-1.json"),
        Sample(
            "ratchet, second run (tightens it)",
            ratchet,
            "succeeded",
            name="demo/ratchet-2.json",
            after="ratchet, first run (sets the bar)",
        ),
        Sample("push published to the topic", from_topic, "succeeded", how="topic"),
        Sample("the first push, delivered again", push, "duplicate", how="again", after="push bucket to bucket"),
        Sample("malformed trigger", malformed, "rejected", "invalid_parameters", name="demo/malformed.json"),
        Sample("push beyond the policy", elsewhere, "rejected", "policy_denied", name="demo/push-elsewhere.json"),
        Sample("data object a route takes", reading, "succeeded", how="route", name=ROUTED),
        Sample("push cancelled through the topic", to_cancel, "cancelled", how="cancel"),
        # The same trigger again: a rerun repeats the run's recorded pipeline and parameters.
        Sample(
            "the cancelled push, rerun", to_cancel, "succeeded", how="rerun", after="push cancelled through the topic"
        ),
        Sample("data object no route takes", {}, "skipped", how="unrouted", name=UNROUTED),
        Sample("a plate of 3 files as one run", {}, "succeeded", how="set", name=PLATE),
        *(
            Sample(f"push {n} past the cap of {PUSH_CAP}", push, "succeeded", name=f"demo/capped-{n}.json")
            for n in range(1, CAPPED + 1)
        ),
    ]


def deliver(
    stack: LocalStack, item: Tracked, first_push: Tracked, policy: Policy = NO_POLICY, after: Tracked | None = None
) -> None:
    sample = item.sample
    data = json.dumps(sample.document, indent=2).encode()
    item.duplicates_before = _duplicates(stack, first_push.run_key) if sample.how == "again" else 0
    if sample.how == "unrouted":
        deliver_unrouted(stack, item)
        return
    if sample.how == "rerun" and after is not None:
        # The next attempt of the run's chain, under a key of its own (relay.lifecycle.rerun).
        stack.publish(TRIGGER_TOPIC, b"", {"action": "rerun", "run_key": after.run_key})
        item.trigger_uri = after.trigger_uri
        item.run_key = naming.attempt_key(after.run_key, 2)
        item.started, item.state = time.monotonic(), "delivered"
        return
    if sample.how == "bucket":
        generation = stack.drop(sample.name, data)
        item.trigger_uri = naming.object_uri(TRIGGERS, sample.name)
        identity = naming.object_identity(TRIGGERS, sample.name, generation)
    elif sample.how == "route":
        deliver_routed(stack, item, policy, data)
        return
    elif sample.how == "set":
        deliver_set(stack, item, policy)
        return
    elif sample.how in ("topic", "cancel"):
        nonce = secrets.token_hex(8)  # as `relay publish` does, to know the run key before the function does
        message_id = stack.publish(TRIGGER_TOPIC, data, {"source": "relay-demo", NONCE_ATTRIBUTE: nonce})
        item.trigger_uri = f"{TRIGGER_TOPIC_PATH}#{message_id}"
        identity = naming.message_identity(TRIGGER_TOPIC_PATH, message_id, nonce)
    else:  # the first push's object again, as a storage notification routed through the topic
        bucket, name = naming.split_gs_uri(first_push.trigger_uri)
        generation = int(stack.storage_client().bucket(bucket).get_blob(name).generation)
        attributes = {
            "bucketId": bucket,
            "objectId": name,
            "objectGeneration": str(generation),
            "eventType": "OBJECT_FINALIZE",
            "payloadFormat": "JSON_API_V1",
        }
        stack.publish(TRIGGER_TOPIC, json.dumps({"bucket": bucket, "name": name}).encode(), attributes)
        item.trigger_uri = first_push.trigger_uri
        identity = naming.object_identity(bucket, name, generation)
    # Where it came from decides the tenant, which scopes a run_key the trigger chooses (as Relay does).
    topic = sample.how in ("topic", "cancel")
    tenant = tenant_for_topic(policy, TRIGGER_TOPIC_PATH) if topic else tenant_for_object(policy, item.trigger_uri)
    item.run_key = run_key_for(parse_document(data, "json", item.trigger_uri), identity, tenant)
    item.started = time.monotonic()
    item.state = "delivered"


def deliver_routed(stack: LocalStack, item: Tracked, policy: Policy, data: bytes) -> None:
    """Upload a data object to gs://lab-data and deliver its storage notification through the trigger topic.

    fake-gcs-server notifies for one bucket only (-event.bucket), the trigger bucket: the notification a deployment's
    `deploy.sh --notify-bucket` would have Cloud Storage publish is published here, as for the redelivered push.
    """
    name = item.sample.name
    # As the function routes it: a route of the tenant whose topic the notification comes on.
    tenant = tenant_for_topic(policy, TRIGGER_TOPIC_PATH)
    route = route_of(tenant, LAB, name) if tenant is not None else None
    if route is None:
        raise RuntimeError(f"no route of {policy.source or 'the policy'} takes gs://{LAB}/{name}")
    blob = stack.storage_client().bucket(LAB).blob(name)
    blob.upload_from_string(data, content_type="application/json")
    generation = int(blob.generation)
    attributes = {
        "bucketId": LAB,
        "objectId": name,
        "objectGeneration": str(generation),
        "eventType": "OBJECT_FINALIZE",
        "payloadFormat": "JSON_API_V1",
    }
    # The object resource; `_properties` is private, pinned by tests/pipelines/test_library_contracts.py.
    stack.publish(TRIGGER_TOPIC, json.dumps(blob._properties).encode(), attributes)
    event = ObjectEvent(LAB, name, generation, len(data), "application/json", {})
    item.trigger_uri = naming.object_uri(LAB, name)
    item.pipeline = route.pipeline
    item.run_key = route_run_key(route, event)
    item.started = time.monotonic()
    item.state = "delivered"


def deliver_unrouted(stack: LocalStack, item: Tracked) -> None:
    """Upload a data object to gs://lab-data where no route takes it, and deliver its notification through the
    trigger topic: it is skipped (logged, not recorded: its bucket is a data bucket, not a trigger location)."""
    blob = stack.storage_client().bucket(LAB).blob(item.sample.name)
    blob.upload_from_string(b"plate-reader-2 serviced\n", content_type="text/plain")
    attributes = {
        "bucketId": LAB,
        "objectId": item.sample.name,
        "objectGeneration": str(blob.generation),
        "eventType": "OBJECT_FINALIZE",
        "payloadFormat": "JSON_API_V1",
    }
    stack.publish(TRIGGER_TOPIC, json.dumps({"bucket": LAB, "name": item.sample.name}).encode(), attributes)
    item.trigger_uri = naming.object_uri(LAB, item.sample.name)
    item.pipeline = "-"
    item.started, item.state = time.monotonic(), "delivered"


def deliver_set(stack: LocalStack, item: Tracked, policy: Policy) -> None:
    """Upload a plate's files to one folder of gs://lab-data and deliver their notifications through the trigger
    topic, out of order and one of them twice: the set route collects them, and the third launches one run with
    the three files (its run key is the set's: the first set of that folder)."""
    folder = item.sample.name
    tenant = tenant_for_topic(policy, TRIGGER_TOPIC_PATH)
    route = route_of(tenant, LAB, folder + PLATE_FILES[0]) if tenant is not None else None
    if tenant is None or route is None or route.set_rule is None:
        raise RuntimeError(f"no set route of {policy.source or 'the policy'} takes gs://{LAB}/{folder}")
    generations = {}
    for name in PLATE_FILES:
        blob = stack.storage_client().bucket(LAB).blob(folder + name)
        blob.upload_from_string(b"well,absorbance\nA1,0.412\n", content_type="text/csv")
        generations[name] = int(blob.generation)
    for name in (PLATE_FILES[2], PLATE_FILES[0], PLATE_FILES[2], PLATE_FILES[1]):
        attributes = {
            "bucketId": LAB,
            "objectId": folder + name,
            "objectGeneration": str(generations[name]),
            "eventType": "OBJECT_FINALIZE",
            "payloadFormat": "JSON_API_V1",
        }
        stack.publish(TRIGGER_TOPIC, json.dumps({"bucket": LAB, "name": folder + name}).encode(), attributes)
    item.trigger_uri = naming.object_uri(LAB, folder)
    item.pipeline = route.pipeline
    item.run_key = set_run_key(route, set_id(tenant.name, route.id, LAB, folder.rstrip("/"), 1))
    item.started = time.monotonic()
    item.state = "delivered"


def cancel_when_launched(stack: LocalStack, item: Tracked) -> None:
    """Ask for the cancel on the trigger topic (attribute action=cancel) once the run is launched, not before:
    a run still being launched is not cancelled (Relay says to retry)."""
    if item.sample.how != "cancel" or item.cancel_sent or item.state not in ("launched", "running"):
        return
    stack.publish(TRIGGER_TOPIC, b"", {"action": "cancel", "run_key": item.run_key})
    item.cancel_sent = True


def refresh(stack: LocalStack, store: GcsBlobStore, item: Tracked) -> None:
    if not item.done and item.sample.how == "unrouted" and item.trigger_uri:
        # Its function's outcome line: a skip without a record.
        line = next((line for line in _lines(stack) if line.get("trigger_uri") == item.trigger_uri), None)
        if line is not None:
            item.state, item.ended, item.note = str(line["outcome"]), time.monotonic(), str(line.get("message"))
        return
    if item.done or not item.run_key:
        return
    if item.sample.how == "again":
        # Its own delivery's outcome: a duplicate line that was not there before it was sent.
        if _duplicates(stack, item.run_key) > item.duplicates_before:
            item.state, item.ended = "duplicate", time.monotonic()
            item.note = "acknowledged: the run exists already"
        return
    item.run = read_run(store, f"gs://{RESULTS}", item.run_key)
    if item.run is not None:
        was = item.state
        item.state = item.run.state
        launch = item.run.launch or {}
        if item.state == "queued":
            item.place = queue.position(store, f"gs://{RESULTS}", str(launch.get("tenant") or ""), launch["place"])
        elif was == "queued":
            item.place, item.queued_for = None, time.monotonic() - item.started
        if item.done:
            item.ended = time.monotonic()
            item.note = item.run.message


def _duplicates(stack: LocalStack, run_key: str) -> int:
    return sum(line["run_key"] == run_key and line["outcome"] == "duplicate" for line in _lines(stack))


def _lines(stack: LocalStack) -> list[dict[str, Any]]:
    functions = (stack.object_finalized, stack.message_published)
    return [line for function in functions for line in outcome_lines(function.process.log_path)]


def table(items: Sequence[Tracked], now: float) -> list[str]:
    rows = []
    for item in items:
        elapsed = (item.ended or now) - item.started if item.started else 0.0
        state = f"queued, place {item.place}" if item.state == "queued" and item.place else item.state
        rows.append(
            (
                item.sample.label,
                item.run_key or "-",
                item.pipeline or str(item.sample.document.get("pipeline")),
                state,
                f"{elapsed:5.1f}s" if item.started else "",
            )
        )
    shown = output.table(("trigger", "run key", "pipeline", "state", "elapsed"), rows)
    return ["  " + line for line in shown.splitlines()]


def function_env(
    workdir: Path, *, notify: bool, catalog: Path = CATALOG, policy_template: Path = TEMPLATE
) -> tuple[dict[str, str], Policy]:
    """The functions' RELAY_* settings for the demo's stack (`make up` too), and the policy they will read."""
    policy_path, policy = write_policy(workdir, policy_template)
    env = {
        "RELAY_BACKEND": "local",
        "RELAY_RESULTS_URI": f"gs://{RESULTS}",
        "RELAY_CATALOG_URI": str(catalog.absolute()),
        "RELAY_POLICY_URI": str(policy_path),
        "RELAY_LOCAL_ROOT": str(workdir / "runs"),
        **({"RELAY_NOTIFY_TOPIC": naming.topic_path(PROJECT, NOTIFY_TOPIC)} if notify else {}),
    }
    return env, policy


def capped_template(workdir: Path, template: Path = TEMPLATE) -> Path:
    """devstack/policy.yaml with the lab tenant's push runs in flight capped at PUSH_CAP: the demo's policy."""
    document = yaml.safe_load(template.read_text())
    lab = next(tenant for tenant in document["tenants"] if tenant["name"] == "lab")
    lab.setdefault("caps", {}).setdefault("pipelines", {})["push"] = {"max_in_flight": PUSH_CAP}
    path = workdir / "policy-template.yaml"
    workdir.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def run_demo(
    workdir: Path,
    out: TextIO = sys.stdout,
    timeout: float = 300.0,
    emulators: bool | None = None,
    inspect: Callable[[Why, Demo], None] | None = None,
) -> Demo:
    """The whole demo; `emulators` None uses the Pub/Sub emulator when this machine can run it. `inspect` is called
    once every sample has ended, the stack still up, with `relay why` on it (the tests ask it of every sample)."""
    missing = emulator_available() if emulators is None else None if emulators else "asked to run without emulators"
    env, policy = function_env(workdir, notify=missing is None, policy_template=capped_template(workdir))
    demo = Demo([Tracked(sample) for sample in samples()], delivered_directly=missing is not None, policy=policy)
    if missing:
        print(f"Note: {missing}; events are delivered straight to the functions instead of through Pub/Sub.", file=out)
    with LocalStack(
        workdir / "stack",
        project=PROJECT,
        trigger_bucket=TRIGGERS,
        trigger_topic=TRIGGER_TOPIC,
        notify_topic=None if missing else NOTIFY_TOPIC,
        buckets=[RESULTS, LAB, ML, BENCHMARKS],
        function_env=env,
        emulators=missing is None,
    ) as stack:
        print(f"Local stack up in {stack.startup_seconds:.1f} s:\n" + _indent(stack.summary()) + "\n", file=out)
        seed(stack.storage_client())
        store = GcsBlobStore(endpoint=stack.storage_url, tokens=NoTokenSource())  # fake-gcs-server takes no token
        _watch(stack, store, demo, out, timeout)
        demo.report = _fetch_report(stack, demo, workdir)
        why = Why(stack, workdir)
        _summary(demo, out)
        _tell_one(why, demo, out)
        if inspect is not None:
            inspect(why, demo)
    print("Everything the demo started has stopped.", file=out)
    return demo


def _watch(stack: LocalStack, store: GcsBlobStore, demo: Demo, out: TextIO, timeout: float) -> None:
    by_label = {item.sample.label: item for item in demo.tracked}
    first_push = demo.tracked[0]
    live = out.isatty()
    printed = 0
    deadline = time.monotonic() + timeout
    while True:
        for item in demo.tracked:
            waiting_on = by_label.get(item.sample.after)
            ready = not waiting_on or waiting_on.done
            if item.state == "waiting" and ready:
                deliver(stack, item, first_push, demo.policy, waiting_on)
            refresh(stack, store, item)
            cancel_when_launched(stack, item)
        for item in demo.tracked:
            _say_queue(item, out, live)
        lines = table(demo.tracked, time.monotonic())
        if live:
            out.write(f"\x1b[{printed}F\x1b[J" if printed else "")
            out.write("\n".join(lines) + "\n")
            printed = len(lines)
        finished = all(item.done for item in demo.tracked)
        if finished or time.monotonic() > deadline:
            if not live:
                out.write("\n".join(lines) + "\n")
            for item in demo.tracked:
                if not item.done:
                    item.note = f"still {item.state} after {timeout:.0f} s"
            return
        out.flush()
        time.sleep(0.25)


def _say_queue(item: Tracked, out: TextIO, live: bool) -> None:
    """Where the table is not redrawn, a line when a run waits in the queue and one when it leaves it."""
    if live:
        return
    if item.place is not None and not item.said_queued:
        item.said_queued = True
        print(f"  {item.sample.label}: queued, place {item.place} in lab's queue (its push cap is full)", file=out)
    elif item.said_queued and item.queued_for and item.state != "queued":
        print(f"  {item.sample.label}: {item.state} after {item.queued_for:.1f} s in the queue", file=out)
        item.said_queued = False


def _fetch_report(stack: LocalStack, demo: Demo, workdir: Path) -> Path | None:
    """Copy the ratchet's HTML report out of the bucket, so a browser can open it."""
    for item in reversed(demo.tracked):
        link = (item.run.result or {}).get("outputs", {}).get("report_html") if item.run else None
        if isinstance(link, str) and link.startswith("gs://"):
            bucket, name = naming.split_gs_uri(link)
            path = workdir / "ratchet-report.html"
            path.write_bytes(stack.storage_client().bucket(bucket).blob(name).download_as_bytes())
            return path
    return None


def _summary(demo: Demo, out: TextIO) -> None:
    print("\nWhat became of each trigger:", file=out)
    for item in demo.tracked:
        mark = "ok " if item.as_expected else "NOT"
        expected = f"{item.sample.expect}: {item.sample.code}" if item.sample.code else item.sample.expect
        got = f"{item.state}: {item.code}" if item.code else item.state
        print(f"  [{mark}] {item.sample.label}: {got} (expected {expected})", file=out)
        print(f"        trigger  {item.trigger_uri or '-'}", file=out)
        if item.run_key:
            where = naming.join(f"gs://{RESULTS}", "rejected" if item.state == "rejected" else "runs", item.run_key)
            print(f"        records  {where}{'.json' if item.state == 'rejected' else '/'}", file=out)
        problems = item.problems
        if problems:  # one line each: a rejection's message runs them together, past what a line can show
            for i, problem in enumerate(problems):
                print(f"        {'problems' if i == 0 else '':8} {problem[:300]}", file=out)
        elif item.note:
            print(f"        message  {item.note[:300]}", file=out)
    if demo.report:
        print(f"\nThe ratchet's report: {demo.report}", file=out)
    if demo.policy.source:
        print(
            f"The policy the triggers were held to: {demo.policy.source} (from devstack/policy.yaml, with the lab "
            f"tenant's push runs in flight capped at {PUSH_CAP})",
            file=out,
        )
    verdict = "every sample ended as expected" if demo.ok else "some samples did not end as expected"
    print(f"\nDemo finished: {verdict}.", file=out)


@dataclass(frozen=True)
class Why:
    """`relay why` in this process, on the demo's stack: its storage, policy, catalog and the functions' logs."""

    stack: LocalStack
    workdir: Path

    def __call__(self, what: str, *options: str) -> tuple[int, str]:
        """The exit code and what `relay why WHAT OPTIONS...` printed (its errors after its output)."""
        # gs:// in fake-gcs-server (it takes no token); the catalog and the policy on the disk.
        store = RoutingBlobStore(
            GcsBlobStore(endpoint=self.stack.storage_url, tokens=NoTokenSource()), LocalBlobStore(self.workdir)
        )
        printed, errors = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors):
            code = relay_main(["why", what, *options], env=self.stack.env(), store=store)
        return code, printed.getvalue() + errors.getvalue()


def _tell_one(why: Why, demo: Demo, out: TextIO) -> None:
    """`relay why` of the first push, delivered twice: how a newcomer answers "what became of my file?"."""
    first = demo.tracked[0]
    if not first.trigger_uri:
        return
    code, told = why(first.trigger_uri)
    print(
        f"\nWhat Relay decided about {first.trigger_uri} (relay why, from its records and the functions' logs):",
        file=out,
    )
    print(_indent(told.rstrip()) if code == 0 else f"  relay why: {told.strip()}", file=out)


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())


def main(argv: Sequence[str] | None = None, run: Callable[..., Demo] = run_demo) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=REPO / ".relay" / "demo", help="where logs and runs go")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for every run (300)")
    args = parser.parse_args(argv)
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    demo = run(args.workdir, timeout=args.timeout)
    return 0 if demo.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
