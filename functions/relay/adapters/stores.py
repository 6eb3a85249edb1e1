"""The results store a location names: gs:// through Cloud Storage, a path on the disk.

Its own module so that the runtime's factory, the local backend, the steps and the CLI open it alike, and the local
backend needs nothing that builds it (the runtime importing local_backend importing the runtime was a circle).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from relay import audit
from relay.adapters.audited import AGE, AuditedStore
from relay.adapters.localfs import LocalBlobStore
from relay.adapters.routing import RoutingBlobStore
from relay.config import setting
from relay.ports import BlobStore

if TYPE_CHECKING:
    from relay.adapters.http import HttpClient


def results_store(
    results_uri: str,
    local_root: str,
    http: HttpClient | None = None,
    *,
    audit_uri: str | None = None,
    watched: tuple[str, ...] = (),
    audit_age: float | None = None,
) -> BlobStore:
    """gs:// to Cloud Storage, paths to the disk; local conditional writes lock inside the results folder. Every
    write of a ledger record under `results_uri` is audited (relay.adapters.audited), by whoever this process acts
    for, in `audit_uri` (default: RELAY_AUDIT_URI, else the results' audit/); reads of `watched` (the policy) are
    recorded as seen; `audit_age`: how long a buffered entry waits for others (RELAY_AUDIT_AGE, default AGE)."""
    from relay.adapters.gcs import GcsBlobStore  # on first use rather than when main.py loads (cold start)

    lock_dir = local_root if results_uri.startswith("gs://") else results_uri
    routed = RoutingBlobStore(GcsBlobStore(http), LocalBlobStore(Path(lock_dir)))
    where = audit.location(results_uri, setting(os.environ, "AUDIT_URI") if audit_uri is None else audit_uri)
    return AuditedStore(routed, results_uri, where, audit.actor(os.environ), watched=watched, age=audit_age or AGE)
