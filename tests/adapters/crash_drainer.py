"""The drainer the crash tests kill: `python -m tests.adapters.crash_drainer SPEC` drains the queue of a capped
tenant on fake-gcs-server and the loopback KFP (SPEC: JSON with gcs, kfp, results, triggers, state, after) and,
at its hook point, the first launch record written in `state` (after it lands with `after`, else before it is
sent), prints HOOK and waits to be killed. It never gets past the hook on its own: whatever ends it is the test."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator

from relay import drain
from relay.adapters.gcs import GcsBlobStore
from relay.adapters.kfp_backend import KfpBackend
from relay.adapters.tokens import NoTokenSource, StaticTokenSource
from relay.catalog import Catalog
from relay.config import Settings
from relay.ports import Blob, BlobInfo, BlobStore
from relay.service import Relay
from tests.policies import policy


def capped_policy(triggers: str) -> str:
    return f"tenants:\n  - name: lab\n    triggers: [{triggers}]\n    caps: {{max_in_flight: 1}}\n"


def relay_for(spec: dict[str, str], store: BlobStore) -> Relay:
    settings = Settings(results_uri=spec["results"], catalog_uri=spec["catalog"], backend="kfp", max_event_age=3600)
    return Relay(
        settings=settings,
        store=store,
        catalog=Catalog(store, settings.catalog_uri),
        backend=KfpBackend(spec["kfp"], "relay", StaticTokenSource("crash-test")),
        policy=policy(capped_policy(spec["triggers"])),
    )


class HookedStore:
    """The store, with the process stopping for good at the hook point (see the module docstring)."""

    def __init__(self, store: BlobStore, state: str, *, after: bool) -> None:
        self._store, self._state, self._after = store, state, after

    def _hook(self) -> None:
        print("HOOK", flush=True)
        time.sleep(600)
        sys.exit("the crash test did not kill the drainer at its hook")

    def write(self, uri: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        at_hook = uri.endswith("/launch.json") and json.loads(data).get("state") == self._state
        if at_hook and not self._after:
            self._hook()
        generation = self._store.write(uri, data, if_generation_match=if_generation_match)
        if at_hook:
            self._hook()
        return generation

    def read(self, uri: str, *, generation: int | None = None) -> Blob:
        return self._store.read(uri, generation=generation)

    def stat(self, uri: str, *, generation: int | None = None) -> BlobInfo:
        return self._store.stat(uri, generation=generation)

    def list(self, prefix: str) -> Iterator[str]:
        return self._store.list(prefix)

    def delete(self, uri: str, *, if_generation_match: int | None = None) -> None:
        self._store.delete(uri, if_generation_match=if_generation_match)


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    store = GcsBlobStore(endpoint=spec["gcs"], tokens=NoTokenSource())
    hooked = HookedStore(store, spec["state"], after=bool(spec["after"]))
    drain.drain(relay_for(spec, hooked))
    return 3  # the drain ended without reaching the hook


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
