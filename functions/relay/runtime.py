"""Builds the ports from Settings, once per instance (lazily: the first event pays, not the import)."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from relay import naming
from relay.adapters.localfs import LocalBlobStore
from relay.adapters.routing import RoutingBlobStore
from relay.catalog import Catalog
from relay.config import Settings
from relay.errors import ConfigError
from relay.policy import Policy, read_policy
from relay.ports import BlobStore, Notifier, PipelineBackend
from relay.service import Relay, submit_margin

if TYPE_CHECKING:
    from relay.adapters.http import HttpClient

_current: Relay | None = None
_lock = threading.Lock()


def results_store(results_uri: str, local_root: str, http: HttpClient | None = None) -> BlobStore:
    """gs:// to Cloud Storage, paths to the disk; local conditional writes lock inside the results folder."""
    from relay.adapters.gcs import GcsBlobStore  # on first use rather than when main.py loads

    lock_dir = local_root if results_uri.startswith("gs://") else results_uri
    return RoutingBlobStore(GcsBlobStore(http), LocalBlobStore(Path(lock_dir)))


def blob_store(settings: Settings, http: HttpClient | None = None) -> BlobStore:
    return results_store(settings.results_uri, settings.local_root, http)


def backend(settings: Settings, http: HttpClient | None = None) -> PipelineBackend:
    if settings.backend == "local":
        # The local backend runs the spec with kfp.local, which the function upload does not carry.
        if importlib.util.find_spec("kfp") is None:
            raise ConfigError(["RELAY_BACKEND: expected kfp or vertex where kfp is not installed, found 'local'"])
        from relay.adapters.local_backend import LocalBackend

        return LocalBackend(settings.local_root, settings.results_uri)
    from relay.adapters.http import HttpClient, Timeouts
    from relay.adapters.tokens import token_source_for

    http = http or HttpClient()
    tokens = token_source_for(settings, http)
    # Every backend call ends within the submit margin, so a submit started in time ends before the lease does.
    timeouts = Timeouts.within(submit_margin(settings.claim_lease))
    if settings.backend == "kfp":
        from relay.adapters.kfp_backend import KfpBackend

        return KfpBackend(settings.kfp_host, settings.kfp_experiment, tokens, http=http, timeouts=timeouts)
    from relay.adapters.vertex_backend import VertexBackend

    return VertexBackend(
        project=settings.vertex_project,
        location=settings.vertex_location,
        pipeline_root=settings.vertex_pipeline_root,
        service_account=settings.vertex_service_account,
        endpoint=settings.vertex_endpoint,
        tokens=tokens,
        http=http,
        timeouts=timeouts,
    )


def notifier_for(topic: str) -> Notifier | None:
    if not topic:
        return None
    from relay.adapters.pubsub import PubSubNotifier

    return PubSubNotifier(topic)


def policy_uri(settings: Settings) -> str:
    return settings.policy_uri or naming.catalog_entry(settings.catalog_uri, naming.POLICY_ENTRY)


def load_policy(settings: Settings, store: BlobStore) -> Policy:
    """The deployment's policy: RELAY_POLICY_URI (which must exist), else the catalog's policy.yaml if it has one."""
    return read_policy(store, policy_uri(settings), required=bool(settings.policy_uri))


def build_relay(settings: Settings) -> Relay:
    from relay.adapters.http import HttpClient

    http = HttpClient()  # one pool of keep-alive connections for storage, tokens and the backend
    store = blob_store(settings, http)
    return Relay(
        settings=settings,
        store=store,
        catalog=Catalog(store, settings.catalog_uri),
        backend=backend(settings, http),
        notifier=notifier_for(settings.notify_topic),
        policy=load_policy(settings, store),
    )


def current(env: Mapping[str, str]) -> Relay:
    """This instance's Relay, built from `env` on first use."""
    global _current
    with _lock:
        if _current is None:
            _current = build_relay(Settings.from_env(env))
        return _current


def install(relay: Relay | None) -> None:
    """Use `relay` for the events that follow (tests pass one built on fakes; None rebuilds from env)."""
    global _current
    with _lock:
        _current = relay
