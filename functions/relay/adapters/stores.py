"""The results store a location names: gs:// through Cloud Storage, a path on the disk.

Its own module so that the runtime's factory, the local backend, the steps and the CLI open it alike, and the local
backend needs nothing that builds it (the runtime importing local_backend importing the runtime was a circle).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from relay.adapters.localfs import LocalBlobStore
from relay.adapters.routing import RoutingBlobStore
from relay.ports import BlobStore

if TYPE_CHECKING:
    from relay.adapters.http import HttpClient


def results_store(results_uri: str, local_root: str, http: HttpClient | None = None) -> BlobStore:
    """gs:// to Cloud Storage, paths to the disk; local conditional writes lock inside the results folder."""
    from relay.adapters.gcs import GcsBlobStore  # on first use rather than when main.py loads (cold start)

    lock_dir = local_root if results_uri.startswith("gs://") else results_uri
    return RoutingBlobStore(GcsBlobStore(http), LocalBlobStore(Path(lock_dir)))
