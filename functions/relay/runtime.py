"""Builds Relay from Settings, once per instance (lazily: the first event pays, not the import); the adapters
come from relay.adapters.factory, the one place they are chosen."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from relay import naming
from relay.adapters import factory
from relay.catalog import Catalog
from relay.config import Settings
from relay.policy import Policy, read_policy
from relay.ports import BlobStore
from relay.service import Relay

_current: Relay | None = None
_lock = threading.Lock()


def policy_uri(settings: Settings) -> str:
    return naming.policy_location(settings.policy_uri, settings.catalog_uri)


def load_policy(settings: Settings, store: BlobStore) -> Policy:
    """The deployment's policy: RELAY_POLICY_URI (which must exist), else the catalog's policy.yaml if it has one."""
    return read_policy(store, policy_uri(settings), required=bool(settings.policy_uri))


def build_relay(settings: Settings) -> Relay:
    http = factory.http_client()
    store = factory.blob_store(settings, http)
    return Relay(
        settings=settings,
        store=store,
        catalog=Catalog(store, settings.catalog_uri),
        backend=factory.backend(settings, http),
        notifier=factory.notifier_for(settings.notify_topic),
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
