"""The one place the adapters are chosen from Settings: the HTTP pool, the results store, the pipeline backend and
the notifier. The runtime builds Relay from these, and the CLI builds its Relay the same way.

Each adapter's module is imported when it is chosen, not when this one loads: main.py's cold start loads none of
them (nor http.py), and the function upload, which has no kfp, never loads the local backend.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from relay import naming
from relay.adapters.stores import results_store
from relay.config import Settings
from relay.errors import ConfigError
from relay.ports import BlobStore, Notifier, PipelineBackend
from relay.service import submit_margin

if TYPE_CHECKING:
    from relay.adapters.http import HttpClient


def http_client() -> HttpClient:
    """One pool of keep-alive connections, for storage, tokens and the backend alike."""
    from relay.adapters.http import HttpClient

    return HttpClient()


def blob_store(settings: Settings, http: HttpClient | None = None) -> BlobStore:
    """The results store, which records the version of the policy this instance reads in the audit trail."""
    policy = naming.policy_location(settings.policy_uri, settings.catalog_uri)
    return results_store(
        settings.results_uri,
        settings.local_root,
        http,
        audit_uri=settings.audit_uri,
        watched=(policy,),
        audit_age=settings.audit_age,
    )


def backend(settings: Settings, http: HttpClient | None = None, store: BlobStore | None = None) -> PipelineBackend:
    """The backend RELAY_BACKEND names; `store`: where the local backend records (default: the results store)."""
    if settings.backend == "local":
        # The local backend runs the spec with kfp.local, which the function upload does not carry.
        if importlib.util.find_spec("kfp") is None:
            raise ConfigError(["RELAY_BACKEND: expected kfp or vertex where kfp is not installed, found 'local'"])
        from relay.adapters.local_backend import LocalBackend  # each adapter loads when chosen (cold start)

        return LocalBackend(settings.local_root, settings.results_uri, store)
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
