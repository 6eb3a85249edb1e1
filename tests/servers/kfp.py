"""A Kubeflow Pipelines v2beta1 REST API server, as kfp.Client (2.17) talks to it."""

from __future__ import annotations

import base64
import copy
import json
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser
from typing import Any

import kfp_server_api
import yaml

from tests.servers.base import LoopbackServer, Request, Response, TokenCheck, any_token, bearer_token
from tests.servers.spec import SpecError, check_parameters, parse_kfp_pipeline_spec

_API = "/apis/v2beta1"
# grpc status codes the real server puts in "code".
INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, UNIMPLEMENTED, UNAUTHENTICATED = 3, 5, 6, 12, 16
_HTTP = {INVALID_ARGUMENT: 400, NOT_FOUND: 404, ALREADY_EXISTS: 409, UNIMPLEMENTED: 501, UNAUTHENTICATED: 401}
# Filter.proto enum numbers, as kfp.Client sends them (client._FILTER_OPERATIONS); names are accepted too.
_OPERATIONS = dict(enumerate(("OPERATION_UNSPECIFIED", "EQUALS", "NOT_EQUALS", "GREATER_THAN")))
_OPERATIONS |= {5: "GREATER_THAN_EQUALS", 6: "LESS_THAN", 7: "LESS_THAN_EQUALS", 8: "IN", 9: "IS_SUBSTRING"}
_STRING_OPERATIONS: dict[str, Callable[[str, str], bool]] = {
    "EQUALS": lambda actual, want: actual == want,
    "NOT_EQUALS": lambda actual, want: actual != want,
    "IS_SUBSTRING": lambda actual, want: want in actual,
}
_PREDICATE_SNAKE = (
    "key operation int_value long_value string_value timestamp_value int_values long_values string_values"
)
# protojson accepts a field's proto name and its JSON (lowerCamel) name; kfp.Client itself sends `stringValue`.
_PREDICATE_FIELDS = {
    name
    for snake in _PREDICATE_SNAKE.split()
    for name in (snake, re.sub(r"_(\w)", lambda m: m.group(1).upper(), snake))
}
_FILTER_KEYS = ("display_name", "storage_state")
_SORT_KEYS = ("display_name", "created_at")
_TERMINAL = {"SUCCEEDED", "FAILED", "SKIPPED", "CANCELED"}
_RUN_FIELDS = set(kfp_server_api.V2beta1Run.attribute_map.values())
_EXPERIMENT_FIELDS = set(kfp_server_api.V2beta1Experiment.attribute_map.values())
_RUNTIME_CONFIG_FIELDS = set(kfp_server_api.V2beta1RuntimeConfig.attribute_map.values())
_RUN_STATES = set(kfp_server_api.V2beta1RuntimeState.allowable_values)


class ApiError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def response(self) -> Response:
        # The grpc-gateway error shape KFP answers with.
        body = {"error": self.message, "code": self.code, "message": self.message, "details": []}
        return Response.json(_HTTP[self.code], body)


@dataclass
class _StoredRun:
    run: dict[str, Any]
    request_body: dict[str, Any]


@dataclass
class _Stall:
    remaining: int
    create: bool
    release: threading.Event


class _RateLimit:
    """Admits `rate` run creations a second (a bucket of one second's worth); refuses the rest like a quota'd
    gateway: 429 with Retry-After, and every `quota_every`-th refusal a 503 "Quota exceeded" (RESOURCE_EXHAUSTED)
    without."""

    def __init__(self, rate: float, quota_every: int = 3) -> None:
        self.rate = rate
        self.quota_every = quota_every
        self._tokens = max(1.0, rate)
        self._last = time.monotonic()
        self.admitted = 0
        self.refused = 0

    def take(self) -> Response | None:
        now = time.monotonic()
        self._tokens = min(max(1.0, self.rate), self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            self.admitted += 1
            return None
        self.refused += 1
        if self.refused % self.quota_every == 0:
            message = "Quota exceeded for quota metric 'Run creations' (RESOURCE_EXHAUSTED)"
            return Response.json(503, {"error": message, "code": 8, "message": message, "details": []})
        wait = math.ceil((1 - self._tokens) / self.rate)  # whole seconds, as HTTP's Retry-After allows
        body = {"error": "rate limit exceeded", "code": 8, "message": "rate limit exceeded", "details": []}
        return Response.json(429, body, {"Retry-After": str(wait)})


class KfpApiServer(LoopbackServer):
    """Single-user KFP: healthz, experiments (create/get/list), runs (create/get/list/terminate), and pipelines
    (upload, upload a version, list, list versions): a run may name a stored pipeline version instead of a spec.

    List filters support EQUALS, NOT_EQUALS and IS_SUBSTRING on display_name and storage_state; other
    keys and operations get a 400 saying so, although a real server would accept some of them.
    """

    def __init__(
        self, *, token_check: TokenCheck = any_token, admit_rate: float | None = None, quota_every: int = 3
    ) -> None:
        """`admit_rate`: run creations admitted per second, the rest refused (see `_RateLimit`, which answers every
        `quota_every`-th refusal with a quota 503); None: all."""
        super().__init__()
        self.token_check = token_check
        self._state_lock = threading.Lock()
        self._limit = _RateLimit(admit_rate, quota_every) if admit_rate else None
        self._stalls: list[_Stall] = []
        self._releases: list[threading.Event] = []  # every stall's, so stop() frees held requests too
        self._stalled = 0
        self._experiments: dict[str, dict[str, Any]] = {}
        self._runs: dict[str, _StoredRun] = {}
        self._pipelines: dict[str, dict[str, Any]] = {}
        self._versions: dict[str, dict[str, Any]] = {}  # version id -> version, its pipeline_spec included
        self._models = kfp_server_api.ApiClient()

    # --- for tests -------------------------------------------------------------------------------------

    @property
    def experiments(self) -> list[dict[str, Any]]:
        with self._state_lock:
            return copy.deepcopy(list(self._experiments.values()))

    @property
    def runs(self) -> list[dict[str, Any]]:
        """Stored runs as GET returns them, plus `request_body`: exactly what the client POSTed."""
        with self._state_lock:
            return [
                {**copy.deepcopy(s.run), "request_body": copy.deepcopy(s.request_body)} for s in self._runs.values()
            ]

    @property
    def pipelines(self) -> list[dict[str, Any]]:
        with self._state_lock:
            return copy.deepcopy(list(self._pipelines.values()))

    @property
    def pipeline_versions(self) -> list[dict[str, Any]]:
        with self._state_lock:
            return copy.deepcopy(list(self._versions.values()))

    def set_run_state(self, run_id: str, state: str, error: str | None = None, code: int = 2) -> None:
        """`error` and `code` (a google.rpc.Code: 2 UNKNOWN, 14 UNAVAILABLE, 3 INVALID_ARGUMENT) become the run's
        `error` Status."""
        if state not in _RUN_STATES:
            raise ValueError(f"state must be one of {sorted(_RUN_STATES)}, found {state!r}")
        now = _now()
        with self._state_lock:
            run = self._runs[run_id].run
            run["state"] = state
            run["state_history"].append({"update_time": now, "state": state})
            if state in _TERMINAL:
                run["finished_at"] = now
            if error is not None:
                run["error"] = {"code": code, "message": error}

    def fault_response(self, status: int) -> Response:
        return Response.json(status, {"error": "injected fault", "code": 14, "message": "injected fault"})

    def stall_next_run(self, *, create: bool, release: threading.Event, n: int = 1) -> None:
        """Hold the next `n` run creations until `release` is set (or the server stops). With `create` the run is
        made first and its answer comes late; without, nothing is made and the late answer is a 503."""
        with self._state_lock:
            self._stalls.append(_Stall(n, create, release))
            self._releases.append(release)

    @property
    def stalled(self) -> int:
        """How many run creations are being held right now."""
        with self._state_lock:
            return self._stalled

    @property
    def run_creations(self) -> tuple[int, int]:
        """(admitted, refused) by the rate limit."""
        with self._state_lock:
            limit = self._limit
            return (limit.admitted, limit.refused) if limit else (len(self._runs), 0)

    def stop(self) -> None:
        with self._state_lock:
            releases = list(self._releases)
        for release in releases:
            release.set()  # a held request must not keep stop() waiting for its thread
        super().stop()

    # --- wire ------------------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        try:
            self._authenticate(request)
            if request.method == "POST" and request.path == _API + "/runs":
                return self._throttled_create(request)
            return Response.json(200, self._route(request))
        except ApiError as exc:
            return exc.response()

    def _throttled_create(self, request: Request) -> Response:
        with self._state_lock:
            refusal = self._limit.take() if self._limit else None
            stall = self._stalls[0] if self._stalls and refusal is None else None
            if stall is not None:
                stall.remaining -= 1
                if stall.remaining == 0:
                    self._stalls.remove(stall)
                self._stalled += 1
        if refusal is not None:
            return refusal
        if stall is None:
            return Response.json(200, self._route(request))
        try:
            run = self._route(request) if stall.create else None
            stall.release.wait()
        finally:
            with self._state_lock:
                self._stalled -= 1
        if run is None:
            return Response.json(503, {"error": "upstream timed out", "code": 14, "message": "upstream timed out"})
        return Response.json(200, run)

    def _authenticate(self, request: Request) -> None:
        token = bearer_token(request)
        if token is None:
            raise ApiError(UNAUTHENTICATED, "Request header error: there is no user identity header.")
        if not self.token_check(token):
            raise ApiError(UNAUTHENTICATED, "Failed to authenticate: the bearer token was rejected.")

    def _route(self, request: Request) -> dict[str, Any]:
        path, method = request.path, request.method
        if not path.startswith(_API + "/"):
            raise ApiError(NOT_FOUND, "Not Found")
        resource, _, ident = path[len(_API) + 1 :].partition("/")
        special = self._route_pipelines(request, resource, ident) if resource in ("pipelines", "runs") else None
        if special is not None:
            return special()
        routes: dict[tuple[str, str, bool], Callable[[], dict[str, Any]]] = {
            ("GET", "healthz", False): lambda: {"multi_user": False, "pipeline_store": "database"},
            ("GET", "experiments", False): lambda: self._list_experiments(request),
            ("POST", "experiments", False): lambda: self._create_experiment(request),
            ("GET", "experiments", True): lambda: self._get_experiment(ident),
            ("GET", "runs", False): lambda: self._list_runs(request),
            ("POST", "runs", False): lambda: self._create_run(request),
            ("GET", "runs", True): lambda: self._get_run(ident),
            ("GET", "pipelines", False): lambda: self._list_pipelines(request),
            ("GET", "pipelines", True): lambda: self._get_pipeline(ident),
        }
        if "/" in ident or ":" in ident:
            raise ApiError(UNIMPLEMENTED, f"{method} {path} is not implemented by KfpApiServer")
        handler = routes.get((method, resource, bool(ident)))
        if handler is None:
            known = any(r == resource and i == bool(ident) for _, r, i in routes)
            raise ApiError(UNIMPLEMENTED if known else NOT_FOUND, f"{method} {path} is not served")
        return handler()

    # --- experiments -----------------------------------------------------------------------------------

    def _create_experiment(self, request: Request) -> dict[str, Any]:
        body = self._body(request, "V2beta1Experiment", _EXPERIMENT_FIELDS)
        name = body.get("display_name")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(INVALID_ARGUMENT, "Invalid input error: Experiment must have a non-empty name")
        with self._state_lock:
            if any(e["display_name"] == name for e in self._experiments.values()):
                raise ApiError(ALREADY_EXISTS, f"Failed to create a new experiment: name {name!r} already exists")
            return copy.deepcopy(self._add_experiment(name, body.get("description"), body.get("namespace")))

    def _add_experiment(self, name: str, description: str | None, namespace: str | None) -> dict[str, Any]:
        experiment_id = str(uuid.uuid4())
        experiment = {"experiment_id": experiment_id, "display_name": name, "created_at": _now()}
        # protojson omits empty strings, so a real response has no "namespace" in single-user mode.
        experiment.update({k: v for k, v in (("description", description), ("namespace", namespace)) if v})
        experiment["storage_state"] = "AVAILABLE"
        self._experiments[experiment_id] = experiment
        return experiment

    def _get_experiment(self, experiment_id: str) -> dict[str, Any]:
        with self._state_lock:
            if experiment_id not in self._experiments:
                raise ApiError(NOT_FOUND, f"Failed to get experiment: experiment {experiment_id!r} not found")
            return copy.deepcopy(self._experiments[experiment_id])

    def _list_experiments(self, request: Request) -> dict[str, Any]:
        # Single-user mode: the real server ignores `namespace` (kfp.Client sends `namespace=`).
        with self._state_lock:
            items = copy.deepcopy(list(self._experiments.values()))
        return _page(items, request, "experiments")

    # --- runs ------------------------------------------------------------------------------------------

    def _create_run(self, request: Request) -> dict[str, Any]:
        body = self._body(request, "V2beta1Run", _RUN_FIELDS)
        name = body.get("display_name")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(INVALID_ARGUMENT, "Invalid input error: The run must have a non-empty display_name")
        has_spec = body.get("pipeline_spec") is not None
        has_reference = body.get("pipeline_version_reference") is not None or bool(body.get("pipeline_version_id"))
        if has_spec == has_reference:
            raise ApiError(
                INVALID_ARGUMENT,
                "Invalid input error: a run needs exactly one of pipeline_spec and pipeline_version_reference",
            )
        reference: Any = body.get("pipeline_version_reference") or {
            "pipeline_version_id": body.get("pipeline_version_id")
        }
        runtime_config = body.get("runtime_config") or {}
        if not isinstance(runtime_config, dict):
            raise ApiError(INVALID_ARGUMENT, "runtime_config must be an object")
        unknown = sorted(set(runtime_config) - _RUNTIME_CONFIG_FIELDS)
        if unknown:
            raise ApiError(INVALID_ARGUMENT, f"unknown field(s) {unknown} in runtime_config")
        parameters = runtime_config.get("parameters") or {}
        with self._state_lock:
            stored_spec = body["pipeline_spec"] if has_spec else self._version_spec(reference)
        try:
            spec = parse_kfp_pipeline_spec(stored_spec)
            check_parameters(spec, parameters)
        except SpecError as exc:
            raise ApiError(INVALID_ARGUMENT, f"Invalid input error: {exc}") from exc
        with self._state_lock:
            experiment_id = body.get("experiment_id") or self._default_experiment_id()
            if experiment_id not in self._experiments:
                raise ApiError(NOT_FOUND, f"Failed to create a run: experiment {experiment_id!r} not found")
            now = _now()
            run = {
                "run_id": str(uuid.uuid4()),
                "experiment_id": experiment_id,
                "display_name": name,
                **{k: body[k] for k in ("description", "service_account") if body.get(k)},
                **({"pipeline_spec": body["pipeline_spec"]} if has_spec else {"pipeline_version_reference": reference}),
                "runtime_config": runtime_config,
                "storage_state": "AVAILABLE",
                "created_at": now,
                "scheduled_at": now,
                "state": "PENDING",
                "state_history": [{"update_time": now, "state": "PENDING"}],
            }
            self._runs[run["run_id"]] = _StoredRun(run, body)
            self._experiments[experiment_id]["last_run_created_at"] = now
            return copy.deepcopy(run)

    def _default_experiment_id(self) -> str:
        # Like the real server, a run without experiment_id lands in (a lazily created) "Default".
        for experiment in self._experiments.values():
            if experiment["display_name"] == "Default":
                return str(experiment["experiment_id"])
        default = self._add_experiment("Default", "All runs created without specifying an experiment", None)
        return str(default["experiment_id"])

    def _get_run(self, run_id: str) -> dict[str, Any]:
        with self._state_lock:
            if run_id not in self._runs:
                raise ApiError(NOT_FOUND, f"Failed to get run: run {run_id!r} not found")
            return copy.deepcopy(self._runs[run_id].run)

    def _list_runs(self, request: Request) -> dict[str, Any]:
        experiment_id = request.param("experiment_id")
        with self._state_lock:
            items = [
                copy.deepcopy(s.run)
                for s in self._runs.values()
                if not experiment_id or s.run["experiment_id"] == experiment_id
            ]
        return _page(items, request, "runs")

    # --- pipelines -------------------------------------------------------------------------------------

    def _route_pipelines(self, request: Request, resource: str, ident: str) -> Callable[[], dict[str, Any]] | None:
        """The routes whose path has more than one segment: uploads, a pipeline's versions, run termination."""
        method = request.method
        if resource == "runs" and ident.endswith(":terminate") and method == "POST":
            return lambda: self._terminate_run(ident.removesuffix(":terminate"))
        if resource != "pipelines":
            return None
        if method == "POST" and ident == "upload":
            return lambda: self._upload_pipeline(request)
        if method == "POST" and ident == "upload_version":
            return lambda: self._upload_version(request)
        pipeline_id, _, rest = ident.partition("/")
        if method == "GET" and rest == "versions":
            return lambda: self._list_versions(request, pipeline_id)
        return None

    def _upload_pipeline(self, request: Request) -> dict[str, Any]:
        name = request.param("display_name") or request.param("name")
        if not name or not name.strip():
            raise ApiError(INVALID_ARGUMENT, "Invalid input error: a pipeline needs a name")
        spec = _uploaded_spec(request)
        with self._state_lock:
            if any(p["display_name"] == name for p in self._pipelines.values()):
                raise ApiError(ALREADY_EXISTS, f"Failed to create a pipeline: name {name!r} already exists")
            pipeline = {"pipeline_id": str(uuid.uuid4()), "display_name": name, "name": name, "created_at": _now()}
            pipeline.update({k: v for k in ("description", "namespace") if (v := request.param(k))})
            self._pipelines[pipeline["pipeline_id"]] = pipeline
            # Like the real server, the upload makes the pipeline's first version, named after it.
            self._add_version(pipeline["pipeline_id"], name, request.param("description"), spec)
            return copy.deepcopy(pipeline)

    def _upload_version(self, request: Request) -> dict[str, Any]:
        name = request.param("display_name") or request.param("name")
        pipeline_id = request.param("pipelineid")
        if not name or not pipeline_id:
            raise ApiError(INVALID_ARGUMENT, "Invalid input error: a pipeline version needs a name and a pipelineid")
        spec = _uploaded_spec(request)
        with self._state_lock:
            if pipeline_id not in self._pipelines:
                raise ApiError(NOT_FOUND, f"Failed to create a pipeline version: pipeline {pipeline_id!r} not found")
            if any(v["pipeline_id"] == pipeline_id and v["display_name"] == name for v in self._versions.values()):
                raise ApiError(ALREADY_EXISTS, f"Failed to create a pipeline version: name {name!r} already exists")
            version = self._add_version(pipeline_id, name, request.param("description"), spec)
            return copy.deepcopy(version)

    def _add_version(
        self, pipeline_id: str, name: str, description: str | None, spec: dict[str, Any]
    ) -> dict[str, Any]:
        version_id = str(uuid.uuid4())
        version: dict[str, Any] = {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": version_id,
            "display_name": name,
            "name": name,
            "created_at": _now(),
            "pipeline_spec": spec,
        }
        if description:
            version["description"] = description
        self._versions[version_id] = version
        return version

    def _version_spec(self, reference: Any) -> Any:
        if not isinstance(reference, dict) or not reference.get("pipeline_version_id"):
            raise ApiError(INVALID_ARGUMENT, "Invalid input error: pipeline_version_reference needs a version id")
        version = self._versions.get(str(reference["pipeline_version_id"]))
        if version is None or reference.get("pipeline_id") not in (None, version["pipeline_id"]):
            raise ApiError(NOT_FOUND, f"Pipeline version not found: {reference}")
        return version["pipeline_spec"]

    def _get_pipeline(self, pipeline_id: str) -> dict[str, Any]:
        with self._state_lock:
            if pipeline_id not in self._pipelines:
                raise ApiError(NOT_FOUND, f"Failed to get pipeline: pipeline {pipeline_id!r} not found")
            return copy.deepcopy(self._pipelines[pipeline_id])

    def _list_pipelines(self, request: Request) -> dict[str, Any]:
        with self._state_lock:
            items = copy.deepcopy(list(self._pipelines.values()))
        return _page(items, request, "pipelines")

    def _list_versions(self, request: Request, pipeline_id: str) -> dict[str, Any]:
        with self._state_lock:
            if pipeline_id not in self._pipelines:
                raise ApiError(NOT_FOUND, f"Failed to list pipeline versions: pipeline {pipeline_id!r} not found")
            items = [copy.deepcopy(v) for v in self._versions.values() if v["pipeline_id"] == pipeline_id]
        return _page(items, request, "pipeline_versions")

    def _terminate_run(self, run_id: str) -> dict[str, Any]:
        with self._state_lock:
            if run_id not in self._runs:
                raise ApiError(NOT_FOUND, f"Failed to terminate run: run {run_id!r} not found")
            finished = self._runs[run_id].run["state"] in _TERMINAL
        if not finished:
            self.set_run_state(run_id, "CANCELED")
        return {}

    # --- helpers ---------------------------------------------------------------------------------------

    def _body(self, request: Request, model: str, fields: set[str]) -> dict[str, Any]:
        if not isinstance(request.json, dict):
            raise ApiError(INVALID_ARGUMENT, "Invalid input error: request body must be a JSON object")
        unknown = sorted(set(request.json) - fields)
        if unknown:
            # grpc-gateway unmarshals with protojson, which rejects unknown fields.
            raise ApiError(INVALID_ARGUMENT, f"proto: unknown field(s) {unknown}; known: {sorted(fields)}")
        try:
            # The generated models check shapes and timestamps (crashing on a list where a map belongs);
            # enum values pass through unchecked, so they are checked below.
            self._models.deserialize(_Raw(request.body), model)
        except (ValueError, TypeError, AttributeError, kfp_server_api.ApiException) as exc:
            raise ApiError(INVALID_ARGUMENT, f"Invalid input error: {exc}") from exc
        model_class = getattr(kfp_server_api, model)
        for attr, type_name in model_class.openapi_types.items():
            allowed = getattr(getattr(kfp_server_api, type_name, None), "allowable_values", None)
            value = request.json.get(model_class.attribute_map[attr])
            if allowed and value is not None and value not in allowed:
                raise ApiError(INVALID_ARGUMENT, f"proto: invalid value for enum field {attr}: {value!r}")
        return dict(request.json)


@dataclass(frozen=True)
class _Raw:
    """The one attribute ApiClient.deserialize reads from a response."""

    data: bytes


def _uploaded_spec(request: Request) -> dict[str, Any]:
    """The PipelineSpec in a multipart upload's `uploadfile` part, checked like a run's spec."""
    content_type = request.header("Content-Type") or ""
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(INVALID_ARGUMENT, f"Invalid input error: expected multipart/form-data, found {content_type!r}")
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = BytesParser(policy=policy.HTTP).parsebytes(head + request.body)
    files: dict[str, bytes] = {}
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        files[str(part.get_param("name", header="content-disposition"))] = (
            payload if isinstance(payload, bytes) else b""
        )
    if "uploadfile" not in files:
        raise ApiError(INVALID_ARGUMENT, f"Invalid input error: no uploadfile part, found {sorted(files)}")
    try:
        documents = [d for d in yaml.safe_load_all(files["uploadfile"]) if d is not None]
        parse_kfp_pipeline_spec(documents[0] if documents else None)  # refuse what the real server would
    except (yaml.YAMLError, SpecError) as exc:
        raise ApiError(INVALID_ARGUMENT, f"Invalid input error: the uploaded file is no pipeline: {exc}") from exc
    return dict(documents[0])


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _page(items: list[dict[str, Any]], request: Request, field: str) -> dict[str, Any]:
    for predicate in _parse_filter(request.param("filter")):
        items = [i for i in items if predicate(i)]
    key, descending = _parse_sort(request.param("sort_by"))
    items.sort(key=lambda i: str(i.get(key, "")), reverse=descending)
    size = _int_param(request.param("page_size"), "page_size") or 20
    offset = _decode_page_token(request.param("page_token"))
    page = items[offset : offset + size]
    result: dict[str, Any] = {}
    # protojson omits empty lists and zeros: an empty listing is "{}", so clients must accept None.
    if page:
        result[field] = page
        result["total_size"] = len(items)
    if offset + size < len(items):
        result["next_page_token"] = base64.urlsafe_b64encode(str(offset + size).encode()).decode()
    return result


def _parse_filter(raw: str | None) -> list[Callable[[Mapping[str, Any]], bool]]:
    if not raw:
        return []
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        raise ApiError(INVALID_ARGUMENT, f"Invalid input error: filter is not JSON: {exc}") from exc
    if not isinstance(parsed, dict) or set(parsed) - {"predicates"}:
        raise ApiError(INVALID_ARGUMENT, f"Invalid input error: filter must be {{predicates: [...]}}, found {raw}")
    return [_predicate(p) for p in parsed.get("predicates") or []]


def _predicate(p: Any) -> Callable[[Mapping[str, Any]], bool]:
    if not isinstance(p, dict) or set(p) - _PREDICATE_FIELDS:
        raise ApiError(INVALID_ARGUMENT, f"Invalid input error: malformed filter predicate {p!r}")
    operation = p.get("operation")
    operation = _OPERATIONS.get(operation, operation) if isinstance(operation, int) else operation
    key = p.get("key")
    if key not in _FILTER_KEYS:
        raise ApiError(INVALID_ARGUMENT, f"Invalid input error: filter key {key!r} is not one of {_FILTER_KEYS}")
    if operation not in _STRING_OPERATIONS:
        raise ApiError(INVALID_ARGUMENT, f"Invalid input error: filter operation {operation!r} is not supported")
    want = p.get("string_value", p.get("stringValue"))
    if not isinstance(want, str):
        raise ApiError(INVALID_ARGUMENT, f"Invalid input error: filter on {key!r} needs a string_value")
    compare = _STRING_OPERATIONS[operation]
    return lambda item: compare(str(item.get(key, "")), want)


def _parse_sort(raw: str | None) -> tuple[str, bool]:
    if not raw:
        return "created_at", False
    parts = raw.split()
    if len(parts) > 2 or parts[0] not in _SORT_KEYS or (len(parts) == 2 and parts[1] not in ("asc", "desc")):
        raise ApiError(INVALID_ARGUMENT, f"Invalid input error: invalid sort_by {raw!r}; keys: {_SORT_KEYS}")
    return parts[0], len(parts) == 2 and parts[1] == "desc"


def _int_param(raw: str | None, name: str) -> int:
    try:
        value = int(raw or 0)
    except ValueError as exc:
        raise ApiError(INVALID_ARGUMENT, f"Invalid input error: {name} must be an integer, found {raw!r}") from exc
    if value < 0:
        raise ApiError(INVALID_ARGUMENT, f"Invalid input error: {name} must not be negative, found {value}")
    return value


def _decode_page_token(raw: str | None) -> int:
    if not raw:
        return 0
    try:
        return int(base64.urlsafe_b64decode(raw.encode()).decode())
    except ValueError as exc:
        raise ApiError(INVALID_ARGUMENT, f"Invalid input error: invalid page_token {raw!r}") from exc
