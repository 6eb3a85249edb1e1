"""The launch bench's moving parts: server processes, their counters, event delivery, and the floor's round trips.

Nothing here is timed on its own: bench.launch decides what is measured. Every server the functions talk to runs
in a process of its own (fake-gcs-server, and tests.servers' KFP and metadata fakes through bench.serve), and so
does every function (functions-framework, as deployed), so the process that measures does nothing but send events
and read clocks.
"""

from __future__ import annotations

import base64
import contextlib
import heapq
import itertools
import json
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import requests

from devstack.bridge import STORAGE_FINALIZED, StorageCloudEvent
from devstack.processes import group_members
from relay.adapters.http import HttpClient, NoAnswerError, Timeouts
from relay.events import PUBSUB_PUBLISHED

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
_TICK = os.sysconf("SC_CLK_TCK")


def plain_session() -> requests.Session:
    """A keep-alive session that reads no proxy settings per request (loopback only)."""
    session = requests.Session()
    session.trust_env = False
    return session


# --- fake servers in processes of their own -------------------------------------------------------------------


class FakeProcess:
    """`python -m bench.serve KIND ...` in its own process group; its port is read from its first line."""

    def __init__(self, kind: str, workdir: Path, *extra: str, env: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self.argv = [sys.executable, "-m", "bench.serve", kind, *extra]
        self.log_path = workdir / f"fake-{kind}-{os.getpid()}-{id(self)}.log"
        self._env = {**os.environ, **(env or {})}
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._session = plain_session()

    def launch(self) -> FakeProcess:
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                self.argv, cwd=ROOT, env=self._env, stdout=subprocess.PIPE, stderr=log, start_new_session=True
            )
        return self

    def wait_ready(self, timeout: float = 30.0) -> FakeProcess:
        proc = self._proc
        if proc is None or proc.stdout is None:
            raise RuntimeError(f"{self.kind} fake was not launched")
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline().decode() if ready else ""
        if not line.startswith("port "):
            self.stop()
            raise RuntimeError(f"{self.kind} fake did not start: {line!r}\n{self.log_path.read_text()[-2000:]}")
        self.port = int(line.split()[1])
        return self

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError(f"{self.kind} fake is not running")
        return self._proc.pid

    @property
    def host_port(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host_port}"

    def stats(self, since: int = 0) -> dict[str, Any]:
        response = self._session.get(f"{self.url}/_bench/stats", params={"since": str(since)}, timeout=30)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def stop(self) -> None:
        """SIGTERM, then wait; a fake that answered any request with a traceback exits 1, and that is an error."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        self._session.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if code not in (0, -signal.SIGTERM):
            raise RuntimeError(f"{self.kind} fake failed requests:\n{self.log_path.read_text()[-4000:]}")


@dataclass(frozen=True)
class Entry:
    """One request a fake answered (see bench.serve)."""

    at: float
    method: str
    path: str
    status: int
    identity: str | None
    run_key: str | None = None  # of a run created (its display name)

    @property
    def call(self) -> str:
        return f"{self.method} {self.path.removeprefix('/apis/v2beta1')}"


class Counted:
    """A fake's request log, read incrementally."""

    def __init__(self, fake: FakeProcess) -> None:
        self.fake = fake
        self.entries: list[Entry] = []
        self.tokens = 0

    def refresh(self) -> Counted:
        stats = self.fake.stats(len(self.entries))
        self.entries.extend(Entry(*row) for row in stats["log"])
        self.tokens = int(stats.get("tokens", 0))
        return self

    def between(self, start: float, end: float) -> list[Entry]:
        return [entry for entry in self.entries if start <= entry.at <= end]


def runs_per_identity(entries: Sequence[Entry], identities: set[str]) -> Counter[str]:
    """Runs created for each of `identities` (the trigger URI each side passes as the run's `message`)."""
    return Counter(e.identity for e in entries if e.identity is not None and e.identity in identities)


# --- processes' own CPU time and memory ------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the live processes in a process group (the functions-framework server: gunicorn's
    arbiter and its worker), read from /proc/<pid>/stat."""
    total = 0
    for pid in group_members(pgid):
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _TICK


def worker_peak_rss_mb(pgid: int) -> float:
    """VmHWM of the group's worker (a member whose parent is the leader), else of the leader itself."""
    members = group_members(pgid)
    workers = [pid for pid in members if pid != pgid and int(_stat_fields(pid)[1]) == pgid]
    for line in Path(f"/proc/{(workers or [pgid])[0]}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --- cloud storage: buckets, triggers and events (never timed) -------------------------------------------------


class Storage:
    """Plain JSON API calls to fake-gcs-server for the bench's own setup: buckets, trigger uploads, listings."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._local = threading.local()

    @property
    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = plain_session()
        return session

    def create_bucket(self, name: str) -> None:
        response = self._session.post(
            f"{self.url}/storage/v1/b", params={"project": "relay-bench"}, json={"name": name}, timeout=30
        )
        if response.status_code not in (200, 409):
            raise RuntimeError(f"cannot create bucket {name}: {response.status_code} {response.text[:200]}")

    def upload(self, bucket: str, name: str, data: bytes, content_type: str = "application/json") -> dict[str, Any]:
        """Upload an object; returns its resource, as an Eventarc storage event carries it."""
        response = self._session.post(
            f"{self.url}/upload/storage/v1/b/{quote(bucket, safe='')}/o",
            params={"uploadType": "media", "name": name},
            data=data,
            headers={"Content-Type": content_type},
            timeout=30,
        )
        response.raise_for_status()
        resource: dict[str, Any] = response.json()
        return resource

    def count(self, bucket: str, prefix: str, suffix: str = "") -> int:
        names = 0
        params = {"prefix": prefix, "maxResults": "1000", "fields": "items(name),nextPageToken"}
        while True:
            response = self._session.get(
                f"{self.url}/storage/v1/b/{quote(bucket, safe='')}/o", params=params, timeout=30
            )
            response.raise_for_status()
            page = response.json()
            names += sum(1 for item in page.get("items") or [] if item["name"].endswith(suffix))
            if not page.get("nextPageToken"):
                return names
            params = {**params, "pageToken": page["nextPageToken"]}


@dataclass(frozen=True)
class Event:
    """A finalized object's storage CloudEvent, binary mode, as Eventarc posts it; `uri` is the trigger's. `entry`:
    the entry point it goes to ("storage": on_object_finalized, "pubsub": on_message_published)."""

    uri: str
    headers: Mapping[str, str]
    body: bytes
    resource: Mapping[str, Any] = field(repr=False)
    entry: str = "storage"

    def as_json(self) -> str:
        return json.dumps({"headers": dict(self.headers), "data": dict(self.resource)})


def trigger_document(pipeline: str, uri: str) -> bytes:
    """A trigger whose one parameter is its own URI: the KFP fake counts runs per trigger by it, on every side."""
    return json.dumps({"pipeline": pipeline, "parameters": {"message": uri}}).encode()


def storage_event(resource: Mapping[str, Any], event_id: str) -> Event:
    bucket, name = str(resource["bucket"]), str(resource["name"])
    cloud_event = StorageCloudEvent(
        id=event_id,
        type=STORAGE_FINALIZED,
        source=f"//storage.googleapis.com/projects/_/buckets/{bucket}",
        subject=f"objects/{name}",
        time=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        data=json.dumps(resource).encode(),
    )
    return Event(f"gs://{bucket}/{name}", cloud_event.headers(), cloud_event.data, resource)


def notification_event(resource: Mapping[str, Any], event_id: str, topic: str) -> Event:
    """The same object's Cloud Storage notification (JSON_API_V1) as a Pub/Sub push through Eventarc delivers it
    to on_message_published, from `topic` (projects/P/topics/T)."""
    bucket, name = str(resource["bucket"]), str(resource["name"])
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    attributes = {
        "bucketId": bucket,
        "objectId": name,
        "objectGeneration": str(resource["generation"]),
        "eventType": "OBJECT_FINALIZE",
        "payloadFormat": "JSON_API_V1",
    }
    message = {
        "attributes": attributes,
        "data": base64.b64encode(json.dumps(resource).encode()).decode(),
        "messageId": event_id,
        "publishTime": now,
    }
    return pubsub_push(topic, message, f"{topic}-push", f"gs://{bucket}/{name}", resource, "pubsub")


def pubsub_push(
    topic: str, message: Mapping[str, Any], subscription: str | None, uri: str, resource: Mapping[str, Any], kind: str
) -> Event:
    """`message` on `topic` (projects/P/topics/T) as a Pub/Sub push subscription delivers it through Eventarc: a
    binary-mode CloudEvent (no subject) whose body is the push envelope."""
    envelope: dict[str, Any] = {"message": message}
    if subscription:
        envelope["subscription"] = subscription
    cloud_event = StorageCloudEvent(
        id=str(message["messageId"]),
        type=PUBSUB_PUBLISHED,
        source=f"//pubsub.googleapis.com/{topic}",
        subject="",
        time=str(message["publishTime"]),
        data=json.dumps(envelope).encode(),
    )
    headers = {name: value for name, value in cloud_event.headers().items() if name != "ce-subject"}
    return Event(uri, headers, cloud_event.data, resource, kind)


# --- posting events to functions-framework ---------------------------------------------------------------------


def tick_event(number: int) -> Event:
    """A Cloud Scheduler tick through Pub/Sub, as on_schedule receives it (it reads no more than the event's id)."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    message = {"data": "", "messageId": f"tick-{number}", "publishTime": now, "attributes": {}}
    return pubsub_push("projects/relay-bench/topics/relay-ticks", message, None, "schedule", {}, "schedule")


def tick_until(url: str, done: Callable[[], bool], *, every: float = 0.5, timeout: float = 60.0) -> int:
    """Post reconcile ticks to the on_schedule function at `url`, one every `every` seconds, as a deployment's Cloud
    Scheduler would (faster), until `done()`: the ticks posted. A tick may find the backend's wait (Retry-After)
    still running and launch nothing; the next one drains. Raises past `timeout`, or on a tick not answered 200."""
    poster = EventPoster(url)
    deadline = time.monotonic() + timeout
    try:
        for number in itertools.count(1):
            if (status := poster.post(tick_event(number))) != 200:
                raise RuntimeError(f"the reconcile tick answered {status}")
            if done():
                return number
            if time.monotonic() > deadline:
                raise RuntimeError(f"{number} reconcile ticks in {timeout:g} s and still not done")
            time.sleep(every)
    finally:
        poster.close()
    raise AssertionError("unreachable")


class EventPoster:
    """Posts events to one functions-framework server over Relay's own keep-alive client, the client the floor's
    requests go over, so that no side pays a slower client's parsing (gunicorn keeps idle connections 2 s)."""

    IDLE = 1.0  # reconnect before sending on a connection idle longer than this: the server may have closed it
    TIMEOUTS = Timeouts(connect=10.0, read=120.0)

    def __init__(self, url: str) -> None:
        self._url = url
        self._client = HttpClient()
        self._used = 0.0
        self.last_error = ""  # the start of the last answer that was not 2xx

    def prepare(self) -> None:
        """Connect now (outside any timed region) unless a fresh connection is kept: a GET, which a CloudEvent
        function answers 405 without calling it, leaves one."""
        if time.monotonic() - self._used > self.IDLE:
            self._client.close()
            with contextlib.suppress(NoAnswerError):  # a server not up yet: the post says so
                self._client.request("GET", self._url, timeouts=self.TIMEOUTS)
            self._used = time.monotonic()

    def post(self, event: Event) -> int:
        """The status of one delivery; 0 when the connection failed before an answer (the delivery is retried)."""
        self.prepare()
        try:
            answer = self._client.request(
                "POST", self._url, body=event.body, headers=event.headers, timeouts=self.TIMEOUTS
            )
        except NoAnswerError as exc:
            self._client.close()
            self.last_error = f"no answer: {exc}"
            return 0
        if not 200 <= answer.status < 300:
            self.last_error = f"{answer.status}: {answer.data[:1000].decode(errors='replace')}"
        self._used = time.monotonic()
        return answer.status

    def close(self) -> None:
        self._client.close()


@dataclass
class Delivered:
    """What delivering a batch of events until each was acknowledged took."""

    seconds: float = 0.0
    deliveries: int = 0
    attempts: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    started_at: float = 0.0  # time.time()
    acked_at: dict[str, float] = field(default_factory=dict)  # trigger URI -> time.time() of its last ack
    sent_at: dict[str, float] = field(default_factory=dict)  # trigger URI -> time.time() its first delivery was sent
    last_error: str = ""


class DeliveryTimeout(RuntimeError):
    """Not every event was acknowledged in time: the function keeps failing (see its log), or is far too slow."""


class Dispatcher:
    """Delivers events as a push subscription does: `concurrency` at a time, each retried until answered 2xx, a
    refused one again `redeliver_after` seconds later (Pub/Sub pushes redeliver about once a second), spread over
    `urls` (the instances) in turn. With `backoff_to`, a delivery refused again waits twice as long each time, up to
    that (a push subscription's exponential retry policy, e.g. 1 s to 10 s). Gives up with DeliveryTimeout once
    `deadline` seconds have passed, so a function that fails every delivery (a broken build, a backend that never
    admits) ends the bench instead of hanging it."""

    def __init__(
        self,
        urls: Sequence[str] | Mapping[str, Sequence[str]],
        *,
        concurrency: int,
        redeliver_after: float,
        backoff_to: float | None = None,
    ) -> None:
        # Each entry point's instances; a plain list serves every event, whatever its entry.
        self._urls = {e: list(u) for e, u in urls.items()} if isinstance(urls, Mapping) else {"": list(urls)}
        self._concurrency = concurrency
        self._redeliver_after = redeliver_after
        self._backoff_to = backoff_to

    def _delay(self, refusals: int) -> float:
        if self._backoff_to is None:
            return self._redeliver_after
        return min(self._backoff_to, self._redeliver_after * 2.0 ** (refusals - 1))

    def run(self, events: Sequence[Event], *, deadline: float) -> Delivered:
        result = Delivered(deliveries=len(events), started_at=time.time())
        give_up = time.monotonic() + deadline
        queue: list[tuple[float, int, Event, int]] = []  # (due, order, event, refusals)
        sequence = itertools.count()
        turn = itertools.count()
        now = time.monotonic()
        for event in events:
            heapq.heappush(queue, (now, next(sequence), event, 0))
        lock = threading.Condition()
        outstanding = [len(events)]
        failures: list[BaseException] = []

        def worker() -> None:
            posters = {url: EventPoster(url) for urls in self._urls.values() for url in urls}
            try:
                while True:
                    with lock:
                        while True:
                            if outstanding[0] == 0 or failures:
                                return
                            if time.monotonic() > give_up:
                                failures.append(
                                    DeliveryTimeout(
                                        f"{outstanding[0]} of {len(events)} events unacknowledged after {deadline:.0f}"
                                        f" s ({result.attempts} attempts: {dict(result.statuses)}); last refusal: "
                                        f"{result.last_error or 'none'}"
                                    )
                                )
                                lock.notify_all()
                                return
                            if queue and queue[0][0] <= time.monotonic():
                                _, _, event, refusals = heapq.heappop(queue)
                                urls = self._urls.get(event.entry) or self._urls[""]
                                url = urls[next(turn) % len(urls)]
                                result.sent_at.setdefault(event.uri, time.time())
                                break
                            lock.wait(timeout=max(0.001, queue[0][0] - time.monotonic()) if queue else 0.05)
                    status = posters[url].post(event)
                    with lock:
                        result.attempts += 1
                        result.statuses[status] += 1
                        if 200 <= status < 300:
                            outstanding[0] -= 1
                            result.acked_at[event.uri] = time.time()
                            lock.notify_all()
                        else:
                            result.last_error = posters[url].last_error
                            jitter = random.uniform(0.9, 1.1) if status else 0.0  # a lost connection: at once
                            due = time.monotonic() + self._delay(refusals + 1) * jitter
                            heapq.heappush(queue, (due, next(sequence), event, refusals + 1))
                            lock.notify()
            except BaseException as exc:  # a bench bug: stop everyone and report it
                with lock:
                    failures.append(exc)
                    lock.notify_all()
            finally:
                for poster in posters.values():
                    poster.close()

        started = time.perf_counter()
        threads = [threading.Thread(target=worker, daemon=True) for _ in range(self._concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        result.seconds = time.perf_counter() - started
        if failures:
            if isinstance(failures[0], DeliveryTimeout):
                raise failures[0]
            raise RuntimeError("event delivery failed") from failures[0]
        return result


def with_redeliveries(events: Sequence[Event], lag: int) -> list[Event]:
    """Every event twice: the second delivery `lag` places after the first (a redelivery shortly after)."""
    ordered: list[Event] = []
    for index, event in enumerate(events):
        ordered.append(event)
        if index >= lag:
            ordered.append(events[index - lag])
    ordered.extend(events[max(0, len(events) - lag) :])
    return ordered


# --- the floor: Relay's round trips alone ------------------------------------------------------------------------


class Connection(Protocol):
    def send(
        self, method: str, target: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes]: ...

    def close(self) -> None: ...


class ClientConnection:
    """Relay's own keep-alive client (relay.adapters.http.HttpClient, on urllib3) to one server: each request costs
    the floor what it costs Relay, so a floor over it is Relay's round trips alone."""

    def __init__(self, url: str) -> None:
        self._base = url.rstrip("/")
        self._client = HttpClient()

    def send(
        self, method: str, target: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes]:
        """(status, body) of one request."""
        answer = self._client.request(method, self._base + target, body=body, headers=headers)
        return answer.status, answer.data

    def close(self) -> None:
        self._client.close()


class SessionConnection:
    """One requests.Session to one server: the floor as the issue measured it ("Relay's round trips on one
    keep-alive session"), requests' own work per request included."""

    def __init__(self, url: str) -> None:
        self._base = url.rstrip("/")
        self._session = plain_session()

    def send(
        self, method: str, target: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes]:
        answer = self._session.request(method, self._base + target, data=body, headers=dict(headers or {}), timeout=30)
        return answer.status_code, answer.content

    def close(self) -> None:
        self._session.close()


class Floor:
    """The requests Relay makes for one launch, and nothing else, over one kept connection per server (`connect`:
    by default ClientConnection, Relay's own client): read the trigger (at its generation), create
    the claim (multipart upload, ifGenerationMatch=0), create the run (the catalog's spec, parsed and serialised
    once), write the record (ifGenerationMatch=<the claim's generation>), in the results bucket under floor/ rather
    than runs/. The record bytes are a launch record Relay wrote, so the writes carry what Relay's carry. The token
    is fetched once, as Relay caches it."""

    BOUNDARY = "bench0floor0boundary"

    def __init__(
        self,
        gcs_url: str,
        kfp_url: str,
        metadata_host: str,
        results_bucket: str,
        spec: Mapping[str, Any],
        connect: Callable[[str], Connection] = ClientConnection,
    ) -> None:
        self._gcs = connect(gcs_url)
        self._kfp = connect(kfp_url)
        self._results = results_bucket
        metadata = connect(f"http://{metadata_host}")
        try:
            status, token = metadata.send(
                "GET",
                "/computeMetadata/v1/instance/service-accounts/default/token",
                headers={"Metadata-Flavor": "Google"},
            )
        finally:
            metadata.close()
        if status != 200:
            raise RuntimeError(f"floor: the metadata server answered {status}: {token[:200]!r}")
        self._auth = {
            "Authorization": f"Bearer {json.loads(token)['access_token']}",
            "Content-Type": "application/json",
        }
        self._spec = json.dumps(spec).encode()
        self._experiment_id = ""
        self.record = b"{}"
        self.steps: dict[str, list[float]] = {"read": [], "claim": [], "submit": [], "record": []}

    def use(self, experiment_id: str, record: bytes) -> None:
        self._experiment_id = experiment_id
        self.record = record

    def _multipart(self, name: str) -> bytes:
        metadata = json.dumps({"name": name, "contentType": "application/json"}).encode()
        return b"".join(
            (
                f"--{self.BOUNDARY}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
                metadata,
                f"\r\n--{self.BOUNDARY}\r\nContent-Type: application/json\r\n\r\n".encode(),
                self.record,
                f"\r\n--{self.BOUNDARY}--\r\n".encode(),
            )
        )

    def _write(self, name: str, generation: int) -> tuple[int, bytes]:
        query = urlencode({"uploadType": "multipart", "fields": "generation", "ifGenerationMatch": str(generation)})
        return self._gcs.send(
            "POST",
            f"/upload/storage/v1/b/{quote(self._results, safe='')}/o?{query}",
            self._multipart(name),
            {"Content-Type": f"multipart/related; boundary={self.BOUNDARY}"},
        )

    def handle(self, event: Event, run_key: str, *, measured: bool) -> None:
        resource = event.resource
        bucket, name = str(resource["bucket"]), str(resource["name"])
        marks = [time.perf_counter()]
        query = urlencode({"alt": "media", "generation": str(resource["generation"])})
        read, trigger = self._gcs.send(
            "GET", f"/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}?{query}"
        )
        marks.append(time.perf_counter())
        record_name = f"floor/{run_key}/launch.json"  # beside Relay's runs/, not among them
        claim, claimed = self._write(record_name, 0)
        marks.append(time.perf_counter())
        if read != 200 or claim != 200:
            raise RuntimeError(f"floor: read {read}, claim {claim}: {claimed[:300]!r}")
        parameters = json.dumps({"message": json.loads(trigger)["parameters"]["message"]}).encode()
        body = b"".join(
            (
                b'{"experiment_id": "',
                self._experiment_id.encode(),
                b'", "display_name": "',
                run_key.encode(),
                b'", "pipeline_spec": ',
                self._spec,
                b', "runtime_config": {"parameters": ',
                parameters,
                b"}}",
            )
        )
        run, created = self._kfp.send("POST", "/apis/v2beta1/runs", body, self._auth)
        marks.append(time.perf_counter())
        record, _ = self._write(record_name, int(json.loads(claimed)["generation"]))
        marks.append(time.perf_counter())
        if run != 200 or record != 200:
            raise RuntimeError(f"floor: run {run}, record {record}: {created[:300]!r}")
        if measured:
            for step, start, end in zip(self.steps, marks, marks[1:], strict=False):
                self.steps[step].append((end - start) * 1000)

    def close(self) -> None:
        self._gcs.close()
        self._kfp.close()


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
