"""The Vertex AI Pipelines REST surface: pipelineJobs.create with a caller-chosen ID, get and cancel."""

from __future__ import annotations

import copy
import re
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from tests.servers.base import LoopbackServer, Request, Response, TokenCheck, any_token, bearer_token, google_error
from tests.servers.spec import SpecError, check_parameters, parse_pipeline_spec

_PATH = re.compile(r"^/v1/projects/([^/]+)/locations/([^/]+)/pipelineJobs(?:/([^/]+))?$")
# aiplatform v1 pipelineJobs.create: pipelineJobId "should be less than 128 characters, and valid characters are
# /a-z-/" (the real service takes digits after the first letter too).
JOB_ID = re.compile(r"^[a-z][-a-z0-9]{0,126}\Z")
# PipelineJob.labels: keys and values of lower-case letters (international ones too), digits, _ and -; at most 64.
_LABEL_KEY = re.compile(r"^[^\W\d_A-Z][\w-]{0,62}\Z")
_LABEL_VALUE = re.compile(r"^[\w-]{0,63}\Z")
_NETWORK = re.compile(r"^projects/[0-9]+/global/networks/[^/]+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_INPUT_FIELDS = {
    "displayName",
    "pipelineSpec",
    "labels",
    "runtimeConfig",
    "encryptionSpec",
    "serviceAccount",
    "network",
    "reservedIpRanges",
    "templateUri",
    "preflightValidations",
    "pscInterfaceConfig",
}
# Output-only fields are known to the API, so sending them is not an error; the server ignores them.
_OUTPUT_FIELDS = {
    "name",
    "createTime",
    "startTime",
    "endTime",
    "updateTime",
    "state",
    "jobDetail",
    "error",
    "templateMetadata",
    "scheduleName",
    "satisfiesPzs",
    "satisfiesPzi",
    "originalPipelineJobId",
}
_RUNTIME_FIELDS = {
    "parameters",
    "gcsOutputDirectory",
    "parameterValues",
    "failurePolicy",
    "inputArtifacts",
    "defaultRuntime",
}
_FAILURE_POLICIES = {
    "PIPELINE_FAILURE_POLICY_UNSPECIFIED",
    "PIPELINE_FAILURE_POLICY_FAIL_SLOW",
    "PIPELINE_FAILURE_POLICY_FAIL_FAST",
}
_QUERY_PARAMS = {"pipelineJobId", "alt", "$alt", "prettyPrint", "$prettyPrint"}
STATES = {
    f"PIPELINE_STATE_{s}"
    for s in ("UNSPECIFIED", "QUEUED", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLING", "CANCELLED", "PAUSED")
}
_TERMINAL = {"PIPELINE_STATE_SUCCEEDED", "PIPELINE_STATE_FAILED", "PIPELINE_STATE_CANCELLED"}
BILLING_LABEL = "vertex-ai-pipelines-run-billing-id"


class _Invalid(Exception):
    pass


class VertexServer(LoopbackServer):
    """pipelineJobs for one project and location; job names use the project *number*, as Vertex does."""

    def __init__(
        self,
        *,
        project: str = "relay-test",
        project_number: str = "123456789012",
        location: str = "us-central1",
        token_check: TokenCheck = any_token,
    ) -> None:
        super().__init__()
        self.project = project
        self.project_number = project_number
        self.location = location
        self.token_check = token_check
        self._state_lock = threading.Lock()
        self._jobs: dict[str, dict[str, Any]] = {}

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"

    def job_name(self, job_id: str) -> str:
        return f"projects/{self.project_number}/locations/{self.location}/pipelineJobs/{job_id}"

    @property
    def jobs(self) -> dict[str, dict[str, Any]]:
        """job id -> the stored PipelineJob, as GET returns it."""
        with self._state_lock:
            return copy.deepcopy(self._jobs)

    def set_state(self, job_id: str, state: str, error: str | None = None, code: int = 9) -> None:
        """`error` and `code` (a google.rpc.Code; 9 FAILED_PRECONDITION is a job whose task failed) become the
        job's `error` Status."""
        if state not in STATES:
            raise ValueError(f"state must be one of {sorted(STATES)}, found {state!r}")
        now = _now()
        with self._state_lock:
            job = self._jobs[job_id]
            job.update(state=state, updateTime=now)
            if state == "PIPELINE_STATE_RUNNING":
                job.setdefault("startTime", now)
            if state in _TERMINAL:
                job["endTime"] = now
            if error is not None:
                job["error"] = {"code": code, "message": error}

    def fault_response(self, status: int) -> Response:
        return google_error(status, "UNAVAILABLE" if status >= 500 else "RESOURCE_EXHAUSTED", "injected fault")

    def handle(self, request: Request) -> Response:
        match = _PATH.match(request.path)
        if match is None:
            return google_error(404, "NOT_FOUND", f"The requested URL {request.path} was not found.")
        token = bearer_token(request)
        if token is None or not self.token_check(token):
            return _unauthenticated()
        project, location, job_id = match.groups()
        if project not in (self.project, self.project_number):
            return google_error(403, "PERMISSION_DENIED", f"Permission denied on resource project {project}.")
        if location != self.location:
            return google_error(400, "INVALID_ARGUMENT", f"Location {location} does not match {self.location}.")
        if request.method == "POST" and job_id is None:
            return self._create(request)
        if request.method == "POST" and job_id is not None and job_id.endswith(":cancel"):
            return self._cancel(job_id.removesuffix(":cancel"))
        if request.method == "GET" and job_id is not None:
            with self._state_lock:
                job = copy.deepcopy(self._jobs.get(job_id))
            if job is None:
                return google_error(404, "NOT_FOUND", f'PipelineJob "{self.job_name(job_id)}" not found.')
            return Response.json(200, job)
        return google_error(405, "UNIMPLEMENTED", f"{request.method} {request.path} is not served by VertexServer")

    def _create(self, request: Request) -> Response:
        unknown_params = sorted(set(request.query) - _QUERY_PARAMS)
        if unknown_params:
            return google_error(
                400,
                "INVALID_ARGUMENT",
                f'Invalid JSON payload received. Unknown name "{unknown_params[0]}": Cannot bind query parameter.',
            )
        job_id = request.param("pipelineJobId")
        if job_id is None:
            job_id = str(uuid.uuid4().int)[:19]  # the real server picks a numeric id when none is given
        elif not JOB_ID.match(job_id):
            return google_error(400, "INVALID_ARGUMENT", f"Pipeline job ID {job_id!r} must match {JOB_ID.pattern}.")
        try:
            job = self._validated_job(request.json)
        except _Invalid as exc:
            return google_error(400, "INVALID_ARGUMENT", str(exc))
        now = _now()
        job.update(name=self.job_name(job_id), createTime=now, updateTime=now, state="PIPELINE_STATE_PENDING")
        # Vertex stamps every job with its own billing label: callers' labels come back with one more.
        job["labels"] = {**job.get("labels", {}), BILLING_LABEL: uuid.uuid4().hex[:19]}
        with self._state_lock:
            if job_id in self._jobs:
                return google_error(409, "ALREADY_EXISTS", "Pipeline job with the specified ID already exists")
            self._jobs[job_id] = job
            return Response.json(200, copy.deepcopy(job))

    def _cancel(self, job_id: str) -> Response:
        """Like Vertex: a job that has ended cannot be cancelled (FAILED_PRECONDITION); a live one goes through
        CANCELLING to CANCELLED (at once here; a test may hold it in CANCELLING with set_state)."""
        with self._state_lock:
            job = self._jobs.get(job_id)
            state = job["state"] if job else None
        if job is None:
            return google_error(404, "NOT_FOUND", f'PipelineJob "{self.job_name(job_id)}" not found.')
        if state in _TERMINAL:
            return google_error(400, "FAILED_PRECONDITION", f"Cannot cancel a pipeline job in state {state}.")
        self.set_state(job_id, "PIPELINE_STATE_CANCELLED", "The pipeline job was cancelled.")
        return Response.json(200, {})

    def _validated_job(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _Invalid("Invalid JSON payload received: the body must be a PipelineJob JSON object.")
        # Google's JSON parsing accepts proto field names (display_name) as well as JSON names.
        body = {_camel(k): v for k, v in body.items()}
        unknown = sorted(set(body) - _INPUT_FIELDS - _OUTPUT_FIELDS)
        if unknown:
            raise _Invalid(
                f"Invalid JSON payload received. Unknown name \"{unknown[0]}\" at 'pipeline_job': Cannot find field."
            )
        job = {k: v for k, v in body.items() if k in _INPUT_FIELDS}
        if len(str(job.get("displayName", ""))) > 128:
            raise _Invalid("displayName must be at most 128 characters.")
        if "templateUri" in job:
            raise _Invalid("templateUri is not supported by VertexServer: send pipelineSpec.")
        if "pipelineSpec" not in job:
            raise _Invalid("pipeline_job.pipeline_spec is required.")
        runtime = job.get("runtimeConfig") or {}
        if not isinstance(runtime, dict):
            raise _Invalid("runtimeConfig must be a JSON object.")
        job["runtimeConfig"] = runtime = {_camel(k): v for k, v in runtime.items()}
        _check_runtime_config(runtime)
        try:
            spec = parse_pipeline_spec(job["pipelineSpec"], "pipelineSpec")
            check_parameters(spec, runtime.get("parameterValues") or {})
        except SpecError as exc:
            raise _Invalid(str(exc)) from exc
        _check_labels(job.get("labels", {}))
        if "serviceAccount" in job and not _EMAIL.match(str(job["serviceAccount"])):
            raise _Invalid(f"serviceAccount must be a service account email, found {job['serviceAccount']!r}.")
        if "network" in job and not _NETWORK.match(str(job["network"])):
            raise _Invalid(f"network must be projects/{{number}}/global/networks/{{name}}, found {job['network']!r}.")
        return job


def _unauthenticated() -> Response:
    error = google_error(
        401,
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
        "or other valid authentication credential.",
    )
    return Response(
        401, error.body, {**error.headers, "WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'}
    )


def _check_runtime_config(runtime: dict[str, Any]) -> None:
    unknown = sorted(set(runtime) - _RUNTIME_FIELDS)
    if unknown:
        raise _Invalid(
            f"Invalid JSON payload received. Unknown name \"{unknown[0]}\" at 'pipeline_job.runtime_config'."
        )
    directory = runtime.get("gcsOutputDirectory")
    if not isinstance(directory, str) or not directory.startswith("gs://"):
        raise _Invalid(f"runtimeConfig.gcsOutputDirectory must be a gs:// URI, found {directory!r}.")
    if "parameters" in runtime:
        raise _Invalid("runtimeConfig.parameters is for schema 2.0.0 pipelines; send parameterValues.")
    if runtime.get("failurePolicy", "PIPELINE_FAILURE_POLICY_UNSPECIFIED") not in _FAILURE_POLICIES:
        raise _Invalid(f"runtimeConfig.failurePolicy must be one of {sorted(_FAILURE_POLICIES)}.")


def _check_labels(labels: Any) -> None:
    if not isinstance(labels, dict) or len(labels) > 64:
        raise _Invalid("labels must be a map of at most 64 entries.")
    for key, value in labels.items():
        if key == BILLING_LABEL:
            # Vertex overrides a value sent for it; refused here so that a test sees Relay sent one.
            raise _Invalid(f"Label key {key!r} is reserved for Vertex AI Pipelines.")
        if not _LABEL_KEY.match(key) or key != key.lower():
            raise _Invalid(
                f"Label key {key!r} is invalid: 1-63 lowercase letters, digits, '_' or '-', starting with a letter."
            )
        if not isinstance(value, str) or not _LABEL_VALUE.match(value) or value != value.lower():
            raise _Invalid(
                f"Label value {value!r} (key {key!r}) is invalid: 0-63 lowercase letters, digits, '_' or '-'."
            )


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
