"""PipelineBackend on a Kubeflow Pipelines installation, through kfp.Client."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from relay.adapters.tokens import call_with_token
from relay.errors import BackendUnavailableError, LaunchRejectedError, SubmitUncertainError, UnauthorizedError
from relay.ports import LaunchedRun, LaunchRequest, TokenSource

T = TypeVar("T")
_PACKAGES = Path(tempfile.gettempdir()) / "relay-kfp-packages"


class KfpBackend:
    """Runs go into one experiment, looked up (or created) once per instance; the run key is the display name.

    kfp.Client never refreshes `existing_token`, so a new client is made whenever the TokenSource hands out a
    new token (about hourly), and the experiment id carries over. KFP has no idempotency key: a submit that
    fails after it may have reached the server is a SubmitUncertainError, never retried at once.
    """

    name = "kfp"

    def __init__(self, host: str, experiment: str, tokens: TokenSource) -> None:
        self._host = host.rstrip("/")
        self._experiment = experiment
        self._tokens = tokens
        self._lock = threading.Lock()  # kfp.Client is not documented as thread-safe
        self._client: Any = None
        self._client_token: str | None = None
        self._experiment_id: str | None = None

    def launch(self, request: LaunchRequest) -> LaunchedRun:
        package = _package_path(request.package)

        def create(client: Any) -> LaunchedRun:
            experiment_id = self._experiment_id_for(client)
            request.check_deadline()  # a lock wait or a slow lookup may have used up the lease
            with _kfp_errors(f"{self._host}: create run {request.run_key}", submit=True):
                run = client.run_pipeline(
                    experiment_id=experiment_id,
                    job_name=request.run_key,
                    pipeline_package_path=str(package),
                    params=dict(request.parameters),
                )
            return LaunchedRun(run_id=run.run_id, url=self.run_url(run.run_id))

        return self._call(create, f"create run {request.run_key}")

    def find_run(self, run_key: str) -> LaunchedRun | None:
        by_name = json.dumps({"predicates": [{"key": "display_name", "operation": "EQUALS", "string_value": run_key}]})

        def lookup(client: Any) -> LaunchedRun | None:
            found = client.list_runs(experiment_id=self._experiment_id_for(client), filter=by_name, page_size=5)
            runs = [run for run in found.runs or [] if run.display_name == run_key]
            return LaunchedRun(run_id=runs[0].run_id, url=self.run_url(runs[0].run_id)) if runs else None

        return self._call(lookup, f"look up run {run_key}")

    def run_url(self, run_id: str) -> str:
        return f"{self._host}/#/runs/details/{run_id}"

    def _experiment_id_for(self, client: Any) -> str:
        if self._experiment_id is None:
            try:
                experiment = client.create_experiment(name=self._experiment)  # get, or create if missing
            except ValueError as exc:  # e.g. "Multiple experiments with name ..."
                raise BackendUnavailableError(f"{self._host}: experiment {self._experiment!r}: {exc}") from exc
            self._experiment_id = str(experiment.experiment_id)
        return self._experiment_id

    def _call(self, operation: Callable[[Any], T], what: str) -> T:
        def attempt(token: str) -> T:
            with self._lock, _kfp_errors(f"{self._host}: {what}", submit=False):
                try:
                    return operation(self._client_for(token))
                except Exception:
                    # The experiment may be gone (404) or the client broken: look both up afresh next time.
                    self._experiment_id = None
                    raise

        return call_with_token(self._tokens, attempt)

    def _client_for(self, token: str) -> Any:
        if self._client is None or token != self._client_token:
            import kfp

            self._client = kfp.Client(host=self._host, existing_token=token or None)
            self._client_token = token
        return self._client


def _package_path(package: bytes) -> Path:
    """kfp.Client submits from a file: one per distinct package, named by its content, shared by instances."""
    path = _PACKAGES / f"{hashlib.sha256(package).hexdigest()[:32]}.yaml"
    if path.exists():
        return path
    try:
        _PACKAGES.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=_PACKAGES, suffix=".tmp")
        with os.fdopen(handle, "wb") as out:
            out.write(package)
        os.replace(temporary, path)  # concurrent writers each leave a complete file
    except OSError as exc:
        raise BackendUnavailableError(f"{_PACKAGES}: cannot stage the pipeline package: {exc}") from exc
    return path


@contextlib.contextmanager
def _kfp_errors(context: str, *, submit: bool) -> Iterator[None]:
    """Map kfp_server_api and urllib3 failures; during a submit, whatever may have reached the server is uncertain."""
    import kfp_server_api
    import urllib3

    try:
        yield
    except kfp_server_api.ApiException as exc:
        status = int(exc.status or 0)
        detail = f"{context}: the KFP API answered {status or 'nothing'}: {_error_message(exc)}"
        if status == 401:
            raise UnauthorizedError(detail) from exc
        if submit and status in (400, 422):
            raise LaunchRejectedError(detail) from exc
        if submit and status not in (403, 429):  # refused before any run was made: sure not created
            raise SubmitUncertainError(detail) from exc
        raise BackendUnavailableError(detail) from exc
    except (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError) as exc:
        raise BackendUnavailableError(f"{context}: could not connect to the KFP API: {exc}") from exc
    except urllib3.exceptions.MaxRetryError as exc:
        connect_failed = isinstance(
            exc.reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError
        )
        error = BackendUnavailableError if connect_failed or not submit else SubmitUncertainError
        raise error(f"{context}: the KFP API did not answer: {exc.reason}") from exc
    except (urllib3.exceptions.HTTPError, OSError, TimeoutError) as exc:
        error = SubmitUncertainError if submit else BackendUnavailableError
        raise error(f"{context}: the KFP API did not answer: {exc}") from exc


def _error_message(exc: Any) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        return str(exc.body or exc.reason)
    if not isinstance(body, dict):
        return str(body)
    return str(body.get("message") or body.get("error") or exc.reason)
