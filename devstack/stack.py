"""The whole local event chain: GCS upload or Pub/Sub message in, CloudEvent into Relay's functions out."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

from devstack.bridge import StorageEventBridge
from devstack.direct import DirectDelivery
from devstack.functions import FunctionsServer
from devstack.gcs import FakeGcsServer, GcsNotifications, create_bucket, storage_client
from devstack.lifecycle import Lifecycle
from devstack.processes import LOOPBACK, ManagedProcess, stop_all
from devstack.pubsub import PubSubEmulator, create_push_subscription, create_topic, publish
from devstack.runs import stop_local_runs
from relay import naming
from relay.config import setting

__all__ = ["DEAD_LETTER", "DEFAULT_SOURCE", "GCS_EVENTS_TOPIC", "LocalStack", "StackPorts"]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = REPO_ROOT / "functions" / "main.py"
GCS_EVENTS_TOPIC = "gcs-events"
# deploy.sh's dead-letter topic and subscription, by the same name, so `relay dead-letters` works here unchanged.
DEAD_LETTER = "relay-dead-letter"
OBJECT_FINALIZED_TARGET = "on_object_finalized"
MESSAGE_PUBLISHED_TARGET = "on_message_published"
RUN_ENDED_TARGET = "on_run_ended"


@dataclass(frozen=True)
class StackPorts:
    """Fixed ports for `make up`; None picks a free ephemeral port (what tests should always do)."""

    pubsub: int | None = None
    storage: int | None = None
    object_finalized: int | None = None
    message_published: int | None = None
    bridge: int | None = None


class LocalStack(Lifecycle):
    """Pub/Sub emulator, fake-gcs-server, the storage bridge and both functions, wired as in production.

    upload -> fake-gcs-server notification -> topic `gcs-events` -> push -> bridge -> binary-mode
    `google.cloud.storage.object.v1.finalized` CloudEvent -> `on_object_finalized`; and
    publish on `trigger_topic` -> push to `<on_message_published>/projects/P/topics/T` -> messagePublished
    CloudEvent -> `on_message_published`; with a `notify_topic` and the emulator, publish on it -> push ->
    `on_run_ended` (a run's end drains the queue, as deploy.sh wires it). `with` starts everything; leaving stops
    it all, nothing left running.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        trigger_bucket: str,
        trigger_topic: str,
        project: str = "relay-local",
        function_env: Mapping[str, str] | None = None,
        source: Path = DEFAULT_SOURCE,
        buckets: Sequence[str] = (),
        notify_topic: str | None = None,
        ports: StackPorts = StackPorts(),
        ack_deadline_seconds: int = 10,
        gcs_backend: Literal["memory", "filesystem"] = "memory",
        start_timeout: float = 30.0,
        emulators: bool = True,
    ) -> None:
        _check_names(project, [trigger_bucket, *buckets], [trigger_topic, *([notify_topic] if notify_topic else [])])
        self.workdir = Path(workdir)
        self.project = project
        self.trigger_bucket = trigger_bucket
        self.trigger_topic = trigger_topic
        self.notify_topic = notify_topic
        self.function_env = dict(function_env or {})
        self.source = Path(source)
        self.buckets = tuple(dict.fromkeys([trigger_bucket, *buckets]))
        self.ack_deadline_seconds = ack_deadline_seconds
        self.startup_seconds: float | None = None
        self.teardown_seconds: float | None = None
        self._exit_stack: contextlib.ExitStack | None = None

        self.workdir.mkdir(parents=True, exist_ok=True)
        # Every port is chosen up front, so every component knows where the others will be and all of them
        # can start at once: the JVM's ~0.5-1 s then hides the rest.
        # Without the Pub/Sub emulator (no Java or Cloud SDK), `drop` and `publish` deliver straight to the functions.
        self.emulators = emulators
        self.pubsub = (
            PubSubEmulator(self.workdir, project=project, port=ports.pubsub, start_timeout=start_timeout)
            if emulators
            else None
        )
        self.storage = FakeGcsServer(
            self.workdir,
            port=ports.storage,
            backend=gcs_backend,
            # Only the trigger bucket notifies, as an Eventarc trigger filters on its bucket: records written to
            # the results bucket must not come back as triggers.
            notifications=GcsNotifications(
                pubsub_host=self.pubsub.host_port, project=project, topic=GCS_EVENTS_TOPIC, bucket=trigger_bucket
            )
            if self.pubsub
            else None,
            start_timeout=start_timeout,
        )
        self.object_finalized = FunctionsServer(
            OBJECT_FINALIZED_TARGET,
            self.source,
            self.env(),
            ports.object_finalized,
            workdir=self.workdir,
            start_timeout=start_timeout,
        )
        self.message_published = FunctionsServer(
            MESSAGE_PUBLISHED_TARGET,
            self.source,
            self.env(),
            ports.message_published,
            workdir=self.workdir,
            start_timeout=start_timeout,
        )
        self.run_ended = (
            FunctionsServer(
                RUN_ENDED_TARGET, self.source, self.env(), workdir=self.workdir, start_timeout=start_timeout
            )
            if notify_topic and self.pubsub
            else None
        )
        self.bridge = StorageEventBridge(self.object_finalized.url, host=LOOPBACK, port=ports.bridge or 0)
        self.direct = DirectDelivery(self.object_finalized.url, self.trigger_push_endpoint)

    # -- what callers need -----------------------------------------------------------------------------

    @property
    def storage_url(self) -> str:
        """STORAGE_EMULATOR_HOST value, e.g. http://127.0.0.1:4443."""
        return self.storage.url

    @property
    def pubsub_host(self) -> str:
        """PUBSUB_EMULATOR_HOST value, e.g. 127.0.0.1:8085."""
        if self.pubsub is None:
            raise RuntimeError("this stack runs without the Pub/Sub emulator")
        return self.pubsub.host_port

    @property
    def object_finalized_url(self) -> str:
        return self.object_finalized.url

    @property
    def message_published_url(self) -> str:
        return self.message_published.url

    @property
    def bridge_url(self) -> str:
        return self.bridge.url

    @property
    def trigger_push_endpoint(self) -> str:
        # functions-framework names the topic in the CloudEvent source only if the push path carries it.
        return f"{self.message_published.url}/projects/{self.project}/topics/{self.trigger_topic}"

    def env(self) -> dict[str, str]:
        """What a process needs to talk to this stack: the emulator hosts plus `function_env`, and where its
        functions' logs are (RELAY_LOGS: `relay why` reads their outcome lines there).

        The emulator hosts win over `function_env`, so the functions always see this stack.
        """
        emulator = {"PUBSUB_EMULATOR_HOST": self.pubsub.host_port} if self.pubsub else {}
        return {**self.function_env, **self.storage.env(), **emulator, "RELAY_LOGS": str(self.workdir)}

    def storage_client(self) -> Any:
        """A google.cloud.storage.Client for this stack's fake-gcs-server (close() it when done)."""
        return storage_client(self.storage_url, self.project)

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str] | None = None) -> str:
        """Publish on `topic` in this stack's project; return the message id."""
        if self.pubsub is None:
            if topic != self.trigger_topic:
                raise RuntimeError(f"without the Pub/Sub emulator only {self.trigger_topic} can be delivered")
            return self.direct.message(data, attributes or {})
        return publish(self.pubsub_host, self.project, topic, data, attributes)

    def drop(self, name: str, data: bytes, content_type: str = "application/json") -> int:
        """Upload `name` to the trigger bucket (its finalized event follows); return the generation."""
        blob = self.storage_client().bucket(self.trigger_bucket).blob(name)
        blob.upload_from_string(data, content_type=content_type)
        if self.pubsub is None:
            self.direct.storage_event(blob._properties)  # a notification's resource (test_library_contracts)
        return int(blob.generation)

    def summary(self) -> str:
        delivery = f"via bridge {self.bridge_url}" if self.pubsub else "delivered directly: no Pub/Sub emulator"
        lines = [
            f"STORAGE_EMULATOR_HOST={self.storage_url}",
            *([f"PUBSUB_EMULATOR_HOST={self.pubsub.host_port}"] if self.pubsub else []),
            f"{OBJECT_FINALIZED_TARGET}: {self.object_finalized_url} ({delivery})",
            f"{MESSAGE_PUBLISHED_TARGET}: {self.message_published_url}",
            *([f"{RUN_ENDED_TARGET}: {self.run_ended.url} (topic {self.notify_topic})"] if self.run_ended else []),
            f"trigger bucket gs://{self.trigger_bucket}, trigger topic {self.trigger_topic}",
            f"logs: {self.workdir}",
        ]
        return "\n".join(lines)

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._exit_stack is not None:
            raise RuntimeError("stack is already running")
        started = time.monotonic()
        with contextlib.ExitStack() as stack:
            # Launch every process first, then wait for each; a failure unwinds what was launched.
            launched: list[ManagedProcess] = []
            # One callback for all: SIGTERM everything at once, in reverse start order, then reap.
            stack.callback(lambda: stop_all(launched[::-1]))
            services = (self.pubsub, self.object_finalized, self.message_published, self.run_ended, self.storage)
            for service in (s for s in services if s is not None):
                service.launch()
                launched.append(service.process)
            if self.pubsub is None:
                self.direct.start()
                stack.callback(self.direct.stop)
            else:
                self.bridge.start()
                stack.callback(self.bridge.stop)
                self.pubsub.wait_ready()
                # Topics before the first upload: fake-gcs-server silently drops events for a missing topic.
                self._create_topics()

            self.storage.wait_ready()
            for bucket in self.buckets:
                create_bucket(self.storage_url, bucket, self.project)

            self.object_finalized.wait_ready()
            self.message_published.wait_ready()
            if self.run_ended is not None:
                self.run_ended.wait_ready()
            if self.pubsub is not None:
                self._create_subscriptions()
            local_root = setting(self.function_env, "LOCAL_ROOT")
            if local_root:
                # Closed first: pipelines the local backend started finish (and record) while storage still runs.
                stack.callback(stop_local_runs, Path(local_root))
            self._exit_stack = stack.pop_all()
        self.startup_seconds = time.monotonic() - started
        return self

    def restart_pubsub(self) -> None:
        """Stop the Pub/Sub emulator and start a new one on its port, with the topics and subscriptions made again;
        the rest keeps running. The emulator keeps nothing across a restart, and numbers messages from 1 again."""
        if self.pubsub is None or self._exit_stack is None:
            raise RuntimeError("only a running stack with the Pub/Sub emulator can restart it")
        self.pubsub.stop()
        self.pubsub.start()
        self._create_topics()
        self._create_subscriptions()

    def _create_topics(self) -> None:
        topics = [GCS_EVENTS_TOPIC, self.trigger_topic, DEAD_LETTER]
        if self.notify_topic:
            topics.append(self.notify_topic)
        for topic in dict.fromkeys(topics):
            create_topic(self.pubsub_host, self.project, topic)

    def _create_subscriptions(self) -> None:
        create_push_subscription(
            self.pubsub_host,
            self.project,
            f"{GCS_EVENTS_TOPIC}-bridge",
            topic=GCS_EVENTS_TOPIC,
            endpoint=self.bridge.url,
            ack_deadline_seconds=self.ack_deadline_seconds,
        )
        # An empty push endpoint makes a pull subscription (Pub/Sub's rule): it keeps dead letters to list.
        create_push_subscription(self.pubsub_host, self.project, DEAD_LETTER, topic=DEAD_LETTER, endpoint="")
        create_push_subscription(
            self.pubsub_host,
            self.project,
            f"{self.trigger_topic}-push",
            topic=self.trigger_topic,
            endpoint=self.trigger_push_endpoint,
            ack_deadline_seconds=self.ack_deadline_seconds,
        )
        if self.run_ended is not None and self.notify_topic:
            # Beside `make up`'s own pull subscription of the feed: each subscription gets every record.
            create_push_subscription(
                self.pubsub_host,
                self.project,
                f"{self.notify_topic}-ended",
                topic=self.notify_topic,
                endpoint=f"{self.run_ended.url}/projects/{self.project}/topics/{self.notify_topic}",
                ack_deadline_seconds=self.ack_deadline_seconds,
            )

    def stop(self) -> None:
        exit_stack, self._exit_stack = self._exit_stack, None
        if exit_stack is None:
            return
        started = time.monotonic()
        exit_stack.close()
        self.teardown_seconds = time.monotonic() - started


def _check_names(project: str, buckets: Sequence[str], topics: Sequence[str]) -> None:
    """The names Relay's policy and events take, refused here before anything starts: the emulators take more
    (a one-letter bucket, say) and the stack would then deliver what Relay skips."""
    if not naming.PROJECT_ID.match(project):
        raise ValueError(f"project: expected {naming.PROJECT_ID_RULE}, found {project!r}")
    for bucket in buckets:
        if not naming.is_bucket_name(bucket):
            raise ValueError(f"bucket: expected {naming.BUCKET_RULE}, found {bucket!r}")
    for topic in topics:
        if not naming.is_pubsub_name(topic):
            raise ValueError(f"topic: expected a topic name: {naming.PUBSUB_NAME_RULE}, found {topic!r}")
