"""PipelineBackend on Vertex AI Pipelines, over REST; the pipeline job id is the run key."""

from __future__ import annotations

from collections.abc import Callable
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
from relay.adapters.states import VERTEX_STATES, backend_time, failure_kind, relay_state, short_line
from relay.adapters.tokens import bearer, call_with_token
from relay.errors import BackendUnavailableError, LaunchRejectedError, UnauthorizedError
from relay.ports import RUN_FAILED, RUN_MISSING, LaunchedRun, LaunchRequest, RunState, TokenSource


class VertexBackend:
    """`pipelineJobs.create` with `pipelineJobId` = run key, so the server itself refuses a second run, and a
    failed submit can be retried at once (no SubmitUncertainError here).

    Plain REST keeps cold start small (the aiplatform SDK imports ~2 s of modules).
    """

    name = "vertex"

    def __init__(
        self,
        *,
        project: str,
        location: str,
        pipeline_root: str,
        tokens: TokenSource,
        service_account: str = "",
        endpoint: str = "",
        http: HttpClient | None = None,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
    ) -> None:
        self._project = project
        self._location = location
        self._pipeline_root = pipeline_root
        self._service_account = service_account
        self._tokens = tokens
        self._jobs = (
            f"{endpoint or f'https://{location}-aiplatform.googleapis.com'}"
            f"/v1/projects/{project}/locations/{location}/pipelineJobs"
        )
        self._http = http or HttpClient()
        self._specs = EncodedOnce()
        self._timeouts = timeouts

    def launch(self, request: LaunchRequest) -> LaunchedRun:
        body: dict[str, Any] = {
            "displayName": request.run_key,
            "pipelineSpec": self._specs(request.spec),
            "runtimeConfig": {
                "gcsOutputDirectory": self._pipeline_root,
                "parameterValues": dict(request.parameters),
            },
            "labels": dict(request.labels),
        }
        if self._service_account:
            body["serviceAccount"] = self._service_account
        url = f"{self._jobs}?pipelineJobId={quote(request.run_key)}"
        what = f"create pipeline job {request.run_key}"
        response = self._request("POST", url, body, what, before_send=request.check_deadline)
        if response.status == 409 and error_detail(response).startswith("ALREADY_EXISTS"):
            # This key was launched before; the GET confirms it (409 also carries ABORTED, which is retryable).
            existing = self.find_run(request.run_key)
            if existing is None:
                raise BackendUnavailableError(f"{url}: 409 ALREADY_EXISTS, yet no job {request.run_key} is found")
            return existing
        self._raise_for(response, f"create pipeline job {request.run_key}")
        return self._run(request.run_key)

    def find_run(self, run_key: str) -> LaunchedRun | None:
        response = self._request("GET", f"{self._jobs}/{quote(run_key)}", None, f"get pipeline job {run_key}")
        if response.status == 404:
            return None
        self._raise_for(response, f"get pipeline job {run_key}")
        return self._run(run_key)

    def run_state(self, run_key: str, run_id: str) -> RunState:
        what = f"get pipeline job {run_id}"
        response = self._request("GET", f"{self._jobs}/{quote(run_id)}", None, what)
        if response.status == 404:
            return RunState(RUN_MISSING, f"Vertex AI has no pipeline job {run_id}")
        self._raise_for(response, what)
        try:
            job = response.json()
        except ValueError:
            job = None
        if not isinstance(job, dict):
            raise BackendUnavailableError(f"{self._jobs}: {what}: not a JSON object")
        error = job.get("error") or {}
        state = relay_state(VERTEX_STATES, job.get("state"))
        return RunState(
            state=state,
            message=short_line(error.get("message") if isinstance(error, dict) else ""),
            started_at=backend_time(job.get("startTime") or job.get("createTime")),
            finished_at=backend_time(job.get("endTime")),
            failure=failure_kind(error) if state == RUN_FAILED else "",
        )

    def terminate(self, run_key: str, run_id: str) -> None:
        what = f"cancel pipeline job {run_id}"
        response = self._request("POST", f"{self._jobs}/{quote(run_id)}:cancel", {}, what)
        if response.status == 400 and error_detail(response).startswith("FAILED_PRECONDITION"):
            return  # it ended before the cancel arrived: nothing is left to stop
        self._raise_for(response, what)

    def _run(self, run_key: str) -> LaunchedRun:
        url = (
            f"https://console.cloud.google.com/vertex-ai/locations/{self._location}"
            f"/pipelines/runs/{run_key}?project={self._project}"
        )
        return LaunchedRun(run_id=run_key, url=url)

    def _request(
        self,
        method: str,
        url: str,
        body: dict[str, Any] | None,
        what: str,
        before_send: Callable[[], None] | None = None,
    ) -> Response:
        """The request with the cached token (a fresh one after a 401); `before_send` runs right before each try."""

        def send(token: str) -> Response:
            if before_send is not None:
                before_send()
            try:
                response = self._http.request(method, url, json=body, headers=bearer(token), timeouts=self._timeouts)
            except NoAnswerError as exc:
                raise BackendUnavailableError(f"{url}: {what}: Vertex AI did not answer: {exc}") from exc
            if response.status == 401:
                raise UnauthorizedError(f"{url}: {what}: 401 {error_detail(response)}")
            return response

        return call_with_token(self._tokens, send)

    def _raise_for(self, response: Response, what: str) -> None:
        if response.ok:
            return
        status = response.status
        detail = f"{self._jobs}: {what}: Vertex AI answered {status}: {error_detail(response)}"
        busy = refused_for_load(response, detail)  # 429 RESOURCE_EXHAUSTED: the instance holds submits back
        if busy is not None:
            raise busy
        if status == 400:
            raise LaunchRejectedError(detail)
        # 403/404 are IAM or project settings: fixing them makes a redelivery succeed. The status tells the
        # reconciler a per-run answer (a 4xx) from the API's own trouble (a 5xx).
        raise BackendUnavailableError(detail, status=status, retry_after=retry_after(response))
