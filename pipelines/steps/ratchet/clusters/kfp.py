"""Algorithms are pipelines on a destination KFP: deploy uploads the compiled package, a call is a run.

How a platform team checks a new KFP cluster's health: each algorithm's code holds its compiled pipeline
(`<name>.yaml`); a call runs it with the payload (an object) as the run's parameters and waits up to the timeout,
terminating a run still going then. The latency is the run's own duration (created to finished, as KFP records
it). Names here: `algo://.my/<name>` becomes the pipeline's display name (`<prefix><name>`) and
`data://.my/<c>/<f>` becomes `<data_uri>/<c>/<f>`, where deploy copies data files (gs:// or a local folder).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from pipelines.steps.egress import Egress, EgressError, client_failure, status_line
from pipelines.steps.ratchet.clusters import (
    CODE,
    DATA,
    CallResult,
    ClusterConfigError,
    ClusterContext,
    ClusterError,
    ExportedFile,
    ca_bundle,
    options_of,
    require_secure,
)
from relay.ports import BlobStore

_OPTIONS = ("host", "token", "experiment", "prefix", "poll_seconds", "ca_cert", "data_uri")
_TERMINAL = {"SUCCEEDED", "FAILED", "SKIPPED", "CANCELED", "CANCELING"}
_RETRYABLE = {429, 502, 503, 504}
MAX_POLL_SECONDS = 600.0  # the adapter's own ceiling: a poll past a call's timeout would only delay its verdict
ClientFactory = Callable[[], Any]


class KfpCluster:
    kind = "kfp"

    def __init__(
        self,
        host: str,
        *,
        workdir: Path,
        client_factory: ClientFactory,
        experiment: str = "relay-ratchet",
        prefix: str = "ratchet-",
        poll_seconds: float = 2.0,
        data_uri: str = "",
        blobs: BlobStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.host = host.rstrip("/")
        self._workdir = workdir
        self._client_factory = client_factory
        self._client: Any = None
        self._unreachable: ClusterError | None = None  # a failed connection is not retried within one run
        self._experiment = experiment
        self._experiment_id: str | None = None
        self._prefix = prefix
        self._poll = poll_seconds
        self._data_uri = data_uri.rstrip("/")
        self._blobs = blobs
        self._clock = clock
        self._sleep = sleep
        self._deployed: dict[str, tuple[str, str]] = {}  # algorithm -> (pipeline id, version id)

    @classmethod
    def from_options(cls, config: Mapping[str, Any], context: ClusterContext) -> KfpCluster:
        options = options_of(config, _OPTIONS, "kfp")
        host = options.get("host")
        if not isinstance(host, str):
            raise ClusterConfigError(f"destination.host: expected the KFP API URL, found {host!r}")
        token = options.get("token") or None
        require_secure(host, token is not None, "destination.host")
        ca = ca_bundle(options.get("ca_cert"), context, "destination.ca_cert")
        poll = options.get("poll_seconds", 2.0)
        if not isinstance(poll, int | float) or isinstance(poll, bool) or not 0 < poll <= MAX_POLL_SECONDS:
            raise ClusterConfigError(
                f"destination.poll_seconds: expected seconds above 0, at most {MAX_POLL_SECONDS:g}, found {poll!r}"
            )
        egress = context.egress
        egress.check(host)  # refused now, before any deploy

        def client() -> Any:
            import kfp

            _check_token(host, token, ca, egress)
            # existing_token: KFP's documented way to pass a bearer token minted elsewhere (kfp#3363).
            made = kfp.Client(host=host, existing_token=token, ssl_ca_cert=ca)
            _pin(made, egress)
            return made

        return cls(
            host,
            workdir=context.workdir,
            client_factory=client,
            experiment=str(options.get("experiment") or "relay-ratchet"),
            prefix=str(options.get("prefix", "ratchet-")),
            poll_seconds=float(poll),
            data_uri=str(options.get("data_uri") or ""),
            blobs=context.blobs,
        )

    def data_name(self, collection: str, path: str) -> str:
        return f"{self._data_uri}/{collection}/{path}" if self._data_uri else f"data://.my/{collection}/{path}"

    def algo_name(self, name: str, version: str | None) -> str:
        return self._prefix + name

    def deploy(self, algorithm: str, files: Sequence[ExportedFile]) -> None:
        self._copy_data(algorithm, [f for f in files if f.kind == DATA])
        wanted = (f"{algorithm}.yaml", f"{algorithm}.yml", "pipeline.yaml")
        packages = [f for f in files if f.kind == CODE and PurePosixPath(f.path).name in wanted]
        if not packages:
            shown = sorted(f.path for f in files if f.kind == CODE)[:10]
            raise ClusterError(f"{algorithm}: expected its compiled pipeline {algorithm}.yaml, found {shown}")
        package = packages[0].data
        display = self._prefix + algorithm
        self._workdir.mkdir(parents=True, exist_ok=True)
        path = self._workdir / f"{display}.yaml"
        path.write_bytes(package)
        with _api_errors(f"{algorithm}: upload to {self.host}"):
            client = self._connected()
            pipeline_id = client.get_pipeline_id(display)
            if pipeline_id is None:
                pipeline = client.upload_pipeline(str(path), pipeline_name=display, description=_DESCRIPTION)
                pipeline_id = str(pipeline.pipeline_id)
                version_id = self._latest_version(pipeline_id)
            else:
                # A version per distinct package: re-deploying the same code reuses the version it made.
                version_name = f"{display}-{hashlib.sha256(package).hexdigest()[:12]}"
                version_id = self._version_named(pipeline_id, version_name) or str(
                    client.upload_pipeline_version(
                        str(path), pipeline_version_name=version_name, pipeline_id=pipeline_id
                    ).pipeline_version_id
                )
        self._deployed[algorithm] = (pipeline_id, version_id)

    def close(self) -> None:
        """Nothing to let go of: each call's run ends (or is terminated) within the call."""

    def call(self, name: str, payload: Any, timeout: float) -> CallResult:
        if not isinstance(payload, Mapping):
            return CallResult(ok=False, error=f"{name}: a payload is the run's parameters: expected an object")
        started = self._clock()
        try:
            with _api_errors(f"{name}: run on {self.host}"):
                pipeline_id, version_id = self._deployed.get(name) or self._existing(name)
                run = self._connected().run_pipeline(
                    experiment_id=self._experiment_id_for(),
                    job_name=f"{self._prefix}{name}-{uuid.uuid4().hex[:8]}",
                    params=dict(payload),
                    pipeline_id=pipeline_id,
                    version_id=version_id,
                )
                while str(run.state or "").upper() not in _TERMINAL:
                    left = started + timeout - self._clock()
                    if left <= 0:
                        self._terminate(run.run_id)
                        elapsed = self._clock() - started
                        error = f"timed out after {timeout:g} s: run {run.run_id} terminated"
                        return CallResult(ok=False, error=error, seconds=elapsed, timed_out=True)
                    self._sleep(min(self._poll, left))
                    run = self._connected().get_run(run.run_id)
        except ClusterError as exc:
            return CallResult(ok=False, error=str(exc), retryable=exc.retryable)
        state = str(run.state).upper()
        duration = _duration(run)
        seconds = duration if duration is not None else self._clock() - started
        run_id = _run_id(run.run_id)
        output = {"run_id": run_id, "state": state}
        if state != "SUCCEEDED":
            # The run's error message is the API's text: the state says what happened, the KFP UI says why.
            return CallResult(ok=False, output=output, error=f"run {run_id}: the run ended {state}", seconds=seconds)
        return CallResult(ok=True, output=output, seconds=seconds)

    # --- helpers ---------------------------------------------------------------------------------------

    def _connected(self) -> Any:
        if self._client is None:
            if self._unreachable is not None:
                raise self._unreachable
            try:
                with _api_errors(f"{self.host}: connect"):
                    self._client = self._client_factory()
            except ClusterError as exc:
                self._unreachable = ClusterError(str(exc))  # not retryable any more: kfp.Client retried already
                raise self._unreachable from exc
        return self._client

    def _experiment_id_for(self) -> str:
        if self._experiment_id is None:
            experiment = self._connected().create_experiment(name=self._experiment)  # gets it when it exists
            self._experiment_id = str(experiment.experiment_id)
        return self._experiment_id

    def _existing(self, name: str) -> tuple[str, str]:
        """A pipeline deployed earlier (`run_only`): its latest version."""
        display = self._prefix + name
        pipeline_id = self._connected().get_pipeline_id(display)
        if pipeline_id is None:
            raise ClusterError(f"{name}: no pipeline {display!r} on {self.host}")
        self._deployed[name] = (str(pipeline_id), self._latest_version(str(pipeline_id)))
        return self._deployed[name]

    def _latest_version(self, pipeline_id: str) -> str:
        found = self._connected().list_pipeline_versions(pipeline_id, page_size=1, sort_by="created_at desc")
        versions = found.pipeline_versions or []
        if not versions:
            raise ClusterError(f"pipeline {pipeline_id} on {self.host} has no version")
        return str(versions[0].pipeline_version_id)

    def _version_named(self, pipeline_id: str, display: str) -> str | None:
        by_name = json.dumps({"predicates": [{"key": "display_name", "operation": "EQUALS", "string_value": display}]})
        found = self._connected().list_pipeline_versions(pipeline_id, filter=by_name, page_size=5)
        matches = [v for v in found.pipeline_versions or [] if v.display_name == display]
        return str(matches[0].pipeline_version_id) if matches else None

    def _terminate(self, run_id: str) -> None:
        # Best effort: the call has failed either way, and says so.
        with contextlib.suppress(Exception):
            self._connected().terminate_run(run_id)

    def _copy_data(self, algorithm: str, files: Sequence[ExportedFile]) -> None:
        if not files:
            return
        if not self._data_uri or self._blobs is None:
            raise ClusterError(f"{algorithm}: {len(files)} data file(s) to copy, but the destination has no data_uri")
        for item in files:
            target = f"{self._data_uri}/{item.collection}/{item.path}"
            try:
                self._blobs.write(target, item.data)
            except Exception as exc:  # storage adapters raise their own errors; each is a failed deploy
                raise ClusterError(f"{algorithm}: cannot copy {item.path} to {target}: {exc}") from exc


_DESCRIPTION = "Deployed by Relay's ratchet pipeline"
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@contextlib.contextmanager
def _api_errors(context: str) -> Iterator[None]:
    """The KFP client's failures as ClusterError, with the API's own message."""
    import kfp_server_api
    import urllib3

    try:
        yield
    except EgressError as exc:
        raise ClusterError(f"{context}: {exc}") from None
    except kfp_server_api.ApiException as exc:
        # The status line only, and not chained: the exception holds the answer's body, the server's text.
        status = int(exc.status or 0)
        message = f"{context}: the KFP API answered {status_line(status)}"
        raise ClusterError(message, retryable=status in _RETRYABLE) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise ClusterError(f"{context}: {client_failure(exc)}", retryable=True) from None
    except ValueError as exc:  # kfp.Client's own checks, e.g. "Multiple pipelines with the name"
        raise ClusterError(f"{context}: {exc}") from exc


def _run_id(value: object) -> str:
    """A run id the API answered, as records show it: an id, or a placeholder (it is the server's word)."""
    text = str(value)
    return text if _RUN_ID.fullmatch(text) else "(an id that is not one)"


def _check_token(host: str, token: str | None, ca: str | None, egress: Egress) -> None:
    """Refuse a rejected token at once: kfp.Client's own health check retries 5 times, 5 s apart, before failing."""
    import requests

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with egress.session() as session:
            answer = session.get(
                f"{host.rstrip('/')}/apis/v2beta1/healthz", headers=headers, verify=ca or session.verify, timeout=30
            )
    except requests.RequestException:
        return  # unreachable for now: kfp.Client's retries decide
    if answer.status_code in (401, 403):
        raise ClusterError(f"the KFP API refused the token ({status_line(answer.status_code)})")


def _pin(client: Any, egress: Egress) -> None:
    """Send the client's every later request to checked addresses only, with the same TLS settings.

    kfp.Client takes no connection pool of its own: its API objects share one ApiClient, whose urllib3 pool
    manager is replaced. Left open: the health check kfp.Client makes while it is built, which resolves the host
    itself (checked just before, by `egress.check` and `_check_token`). `_healthz_api` is private, with no public
    equivalent: pinned by tests/pipelines/test_library_contracts.py.
    """
    rest = client._healthz_api.api_client.rest_client
    old = rest.pool_manager
    rest.pool_manager = egress.pool_manager(num_pools=4, **old.connection_pool_kw)  # 4: kfp's own pools_size
    old.clear()


def _duration(run: Any) -> float | None:
    created, finished = getattr(run, "created_at", None), getattr(run, "finished_at", None)
    if created is None or finished is None:
        return None
    return max(0.0, float((finished - created).total_seconds()))
