"""PipelineBackend on a Kubeflow Pipelines installation, through its v2beta1 REST API."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from json import dumps
from typing import Any
from urllib.parse import quote

from relay.adapters.http import (
    DEFAULT_TIMEOUTS,
    EncodedOnce,
    HttpClient,
    NoAnswerError,
    Response,
    Timeouts,
    error_detail,
    refused_for_load,
    retry_after,
)
from relay.adapters.states import KFP_STATES, backend_time, failure_kind, relay_state, short_line
from relay.adapters.tokens import bearer, call_with_token
from relay.errors import BackendUnavailableError, LaunchRejectedError, SubmitUncertainError, UnauthorizedError
from relay.ports import RUN_FAILED, RUN_MISSING, LaunchedRun, LaunchRequest, RunState, TokenSource

_API = "/apis/v2beta1"
# At most a lookup, a create and (after a 409) a lookup again: how long waiting for another event's lookup may take.
_LOOKUP_REQUESTS = 3


class KfpBackend:
    """Runs go into one experiment, looked up (or created) once per instance; the run key is the display name.

    The catalog's spec is sent as parsed, encoded once (kfp.Client would re-read and re-parse the package on every
    submit, and importing kfp pulls in the kubernetes client). KFP has no idempotency key: a submit that fails after
    it may have reached the server is a SubmitUncertainError, never retried at once. No lock is held across I/O: calls
    share only the HTTP client's connection pool, so one hung request holds up nobody but the events waiting for
    the same experiment lookup, and those only until its timeouts.
    """

    name = "kfp"

    def __init__(
        self,
        host: str,
        experiment: str,
        tokens: TokenSource,
        *,
        http: HttpClient | None = None,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
    ) -> None:
        self._host = host.rstrip("/")
        self._experiment = experiment
        self._tokens = tokens
        self._http = http or HttpClient()
        self._timeouts = timeouts
        # Kept across errors: only an answer saying the experiment is gone makes it be looked up again.
        self._experiment_id: str | None = None
        self._specs = EncodedOnce()
        self._lookup: Future[str] | None = None  # the lookup in flight, which concurrent first events wait for
        self._lock = threading.Lock()

    def launch(self, request: LaunchRequest) -> LaunchedRun:
        experiment_id = self._experiment_id_for()
        body = {
            "experiment_id": experiment_id,
            "display_name": request.run_key,
            # A v2beta1 run has no labels: its description, which the KFP UI shows, carries them.
            "description": " ".join(f"{key}={value}" for key, value in request.labels.items()),
            "pipeline_spec": self._specs(request.spec),
            "runtime_config": {"parameters": dict(request.parameters)},
        }
        what = f"create run {request.run_key}"
        response = self._send("POST", "/runs", what, json=body, before_send=request.check_deadline)
        if response.status == 404:
            self._experiment_id = None  # deleted under us: the next launch looks it up (or makes it) afresh
        run = self._json(response, what, submit=True)
        return LaunchedRun(run_id=str(run["run_id"]), url=self.run_url(str(run["run_id"])))

    def find_run(self, run_key: str) -> LaunchedRun | None:
        params = {
            "experiment_id": self._experiment_id_for(),
            "filter": _display_name_is(run_key),
            "page_size": "5",
        }
        what = f"look up run {run_key}"
        found = self._json(self._send("GET", "/runs", what, params=params), what)
        runs = [run for run in found.get("runs") or [] if run.get("display_name") == run_key]
        return LaunchedRun(run_id=str(runs[0]["run_id"]), url=self.run_url(str(runs[0]["run_id"]))) if runs else None

    def run_state(self, run_key: str, run_id: str) -> RunState:
        what = f"get run {run_key} ({run_id})"
        response = self._send("GET", f"/runs/{quote(run_id, safe='')}", what)
        if response.status == 404:
            return RunState(RUN_MISSING, f"the KFP API has no run {run_id}")
        run = self._json(response, what)
        state = relay_state(KFP_STATES, run.get("state"))
        history = run.get("state_history") or []
        # When it started running, if the history says; else when it was created.
        started = next((h.get("update_time") for h in history if h.get("state") == "RUNNING"), None)
        error = run.get("error") or {}
        return RunState(
            state=state,
            message=short_line(error.get("message") if isinstance(error, dict) else ""),
            started_at=backend_time(started or run.get("created_at")),
            finished_at=backend_time(run.get("finished_at")),
            failure=failure_kind(error) if state == RUN_FAILED else "",
        )

    def terminate(self, run_key: str, run_id: str) -> None:
        what = f"terminate run {run_key} ({run_id})"
        self._json(self._send("POST", f"/runs/{quote(run_id, safe='')}:terminate", what), what)

    def run_url(self, run_id: str) -> str:
        return f"{self._host}/#/runs/details/{run_id}"

    def _experiment_id_for(self) -> str:
        known = self._experiment_id
        if known is not None:
            return known
        # Single flight: the first event looks the experiment up (or makes it), concurrent ones wait for its answer
        # rather than each send a lookup and a create; the lock guards only who leads, never the I/O.
        with self._lock:
            lookup = self._lookup
            leading = lookup is None
            if lookup is None:
                lookup = self._lookup = Future()
        if not leading:
            try:
                return lookup.result(timeout=_LOOKUP_REQUESTS * (self._timeouts.connect + self._timeouts.read))
            except FutureTimeout:
                raise BackendUnavailableError(f"{self._host}: no answer to the experiment lookup in time") from None
        try:
            # A lost race with another instance to create it is a 409, then a lookup.
            known = self._find_experiment() or self._create_experiment()
            self._experiment_id = known  # before the lookup is let go: an event arriving then needs none
        except BaseException as exc:
            lookup.set_exception(exc)  # the waiters fail as the leader did; the next event looks it up again
            raise
        finally:
            with self._lock:
                self._lookup = None
        lookup.set_result(known)
        return known

    def _find_experiment(self) -> str | None:
        what = f"look up experiment {self._experiment!r}"
        params = {"filter": _display_name_is(self._experiment), "page_size": "2"}
        found = self._json(self._send("GET", "/experiments", what, params=params), what)
        named = [e for e in found.get("experiments") or [] if e.get("display_name") == self._experiment]
        if len(named) > 1:
            raise BackendUnavailableError(f"{self._host}: {len(named)} experiments are named {self._experiment!r}")
        return str(named[0]["experiment_id"]) if named else None

    def _create_experiment(self) -> str:
        what = f"create experiment {self._experiment!r}"
        response = self._send("POST", "/experiments", what, json={"display_name": self._experiment})
        if response.status == 409:  # another instance made it first: use theirs
            made = self._find_experiment()
            if made is None:
                raise BackendUnavailableError(f"{self._host}: {what}: 409, yet no experiment by that name is found")
            return made
        return str(self._json(response, what)["experiment_id"])

    def _send(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        before_send: Callable[[], None] | None = None,
    ) -> Response:
        """The request with the cached token (a fresh one after a 401); `before_send` runs right before each try."""
        submit = method == "POST" and path == "/runs"

        def attempt(token: str) -> Response:
            if before_send is not None:
                before_send()
            try:
                response = self._http.request(
                    method,
                    self._host + _API + path,
                    params=params,
                    json=json,
                    headers=bearer(token),
                    timeouts=self._timeouts,
                )
            except NoAnswerError as exc:
                # Once the request may have left, a run may exist: only the takeover's lookup can tell.
                error = SubmitUncertainError if submit and exc.sent else BackendUnavailableError
                raise error(f"{self._host}: {what}: the KFP API did not answer: {exc}") from exc
            if response.status == 401:
                raise UnauthorizedError(f"{self._host}: {what}: 401 {error_detail(response)}")
            return response

        return call_with_token(self._tokens, attempt)

    def _json(self, response: Response, what: str, *, submit: bool = False) -> dict[str, Any]:
        status = response.status
        if response.ok:
            try:
                body = response.json()
            except ValueError:
                body = None
            if isinstance(body, dict):
                return body
            error = SubmitUncertainError if submit else BackendUnavailableError
            answered = f"the KFP API answered {status}: {response.text[:200]}"
            raise error(f"{self._host}: {what}: {answered}: not a JSON object")
        detail = f"{self._host}: {what}: the KFP API answered {status}: {error_detail(response)}"
        busy = refused_for_load(response, detail)
        if busy is not None:
            raise busy
        if submit and status in (400, 422):
            raise LaunchRejectedError(detail)
        if submit and status not in (403, 404):  # refused before any run was made: surely not created
            raise SubmitUncertainError(detail)
        # The status tells the reconciler a per-run answer (a 4xx) from the API's own trouble (a 5xx).
        raise BackendUnavailableError(detail, status=status, retry_after=retry_after(response))


def _display_name_is(name: str) -> str:
    return dumps({"predicates": [{"key": "display_name", "operation": "EQUALS", "string_value": name}]})
