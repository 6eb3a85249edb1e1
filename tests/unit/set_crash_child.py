"""A delivery in a process of its own that dies (SIGKILL, no cleanup) right after a set's closed.json is written:
between set-complete and launch. Run by tests/unit/test_set_crash.py as `python -m tests.unit.set_crash_child
ROOT NAME GENERATION`."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from relay.adapters.localfs import LocalBlobStore
from relay.catalog import Catalog
from relay.config import Settings
from relay.events import EventInfo, Message, ObjectDelivery
from relay.ports import Blob, BlobInfo
from relay.service import Relay, handle_delivery
from tests.conftest import CATALOG, NOW
from tests.fakes import FakeBackend
from tests.unit.test_service_sets import POLICY, TOPIC

RESULTS = "gs://results/relay"


class FolderStore:
    """gs://BUCKET/NAME as ROOT/BUCKET/NAME on a LocalBlobStore: Cloud Storage's create-only and generation rules,
    shared by every process using the same folder."""

    def __init__(self, root: Path) -> None:
        self._root, self._files = root, LocalBlobStore(root)

    def _path(self, uri: str) -> str:
        return str(self._root / uri.removeprefix("gs://"))

    def read(self, uri: str, *, generation: int | None = None) -> Blob:
        return self._files.read(self._path(uri), generation=generation)

    def stat(self, uri: str, *, generation: int | None = None) -> BlobInfo:
        return self._files.stat(self._path(uri), generation=generation)

    def write(self, uri: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        return self._files.write(self._path(uri), data, if_generation_match=if_generation_match)

    def delete(self, uri: str, *, if_generation_match: int | None = None) -> None:
        self._files.delete(self._path(uri), if_generation_match=if_generation_match)

    def list(self, prefix: str) -> Iterator[str]:
        root = str(self._root) + "/"
        return ("gs://" + path.removeprefix(root) for path in self._files.list(self._path(prefix)))


class DiesAfterClosing(FolderStore):
    """The test hook: the process is killed the moment a set's closed.json is on disk."""

    def write(self, uri: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        generation = super().write(uri, data, if_generation_match=if_generation_match)
        if uri.endswith("/closed.json"):
            os.kill(os.getpid(), signal.SIGKILL)
        return generation


def relay_on(store: FolderStore, backend: FakeBackend) -> Relay:
    settings = Settings(results_uri=RESULTS, catalog_uri="gs://catalog", max_event_age=3600)
    store.write("gs://catalog/echo.yaml", (CATALOG / "echo.yaml").read_bytes())
    relay = Relay(settings=settings, store=store, catalog=Catalog(store, settings.catalog_uri), backend=backend)
    return replace(relay, policy=POLICY, clock=lambda: NOW)


def notification(name: str, generation: int) -> ObjectDelivery:
    event = EventInfo(id=f"m-{name}", type="google.cloud.pubsub.topic.v1.messagePublished", source="s", time=NOW)
    return ObjectDelivery(event, "lab-data", name, generation, None, "storage-notification", Message(TOPIC, name))


if __name__ == "__main__":
    root, name, generation = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    handle_delivery(relay_on(DiesAfterClosing(root), FakeBackend()), notification(name, generation))
    sys.exit("not killed: the set did not close")
