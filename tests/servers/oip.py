"""An Open Inference Protocol (KServe v2) server: health, model repository load, and infer, bodies checked strictly."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from typing import Any

from tests.servers.base import LoopbackServer, Request, Response, TokenCheck, any_token, bearer_token

# The protocol's tensor data types.
DATATYPES = {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"}
DATATYPES |= {"BYTES"}
_REQUEST_KEYS = {"id", "parameters", "inputs", "outputs"}
_TENSOR_KEYS = {"name", "shape", "datatype", "data"}
_TENSOR_OPTIONAL = {"parameters"}

# A model takes the request's input tensors and returns its output tensors.
Model = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


def bytes_model(function: Callable[[str], str], name: str = "output") -> Model:
    """A model over one BYTES element in and one out, the shape Relay's http destination sends JSON payloads in."""

    def model(inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        (tensor,) = inputs
        if tensor["datatype"] != "BYTES" or len(tensor["data"]) != 1:
            raise ValueError(f"expected one BYTES element, found {tensor['datatype']} x{len(tensor['data'])}")
        return [{"name": name, "shape": [1], "datatype": "BYTES", "data": [function(tensor["data"][0])]}]

    return model


class OipServer(LoopbackServer):
    """Serves `models` by name; a model must be loaded through the repository API before it answers (unless
    `preloaded`). Errors are `{"error": "..."}` as the protocol defines them. `token_check=None` serves anyone,
    as an in-cluster server without authentication does.
    """

    def __init__(
        self, models: Mapping[str, Model], *, token_check: TokenCheck | None = any_token, preloaded: bool = False
    ) -> None:
        super().__init__()
        self.models = dict(models)
        self.token_check = token_check
        self._loaded: set[str] = set(models) if preloaded else set()
        self._state = threading.Lock()

    @property
    def loaded(self) -> set[str]:
        with self._state:
            return set(self._loaded)

    def fault_response(self, status: int) -> Response:
        return Response.json(status, {"error": "injected fault"})

    def handle(self, request: Request) -> Response:
        if request.path == "/v2/health/ready" and request.method == "GET":
            return Response.json(200, {"ready": True})
        token = bearer_token(request)
        if self.token_check is not None and (token is None or not self.token_check(token)):
            return Response.json(401, {"error": "missing or rejected bearer token"})
        parts = request.path.strip("/").split("/")
        if request.method == "POST" and parts[:3] == ["v2", "repository", "models"] and parts[4:] == ["load"]:
            return self._load(parts[3])
        if request.method == "POST" and parts[:2] == ["v2", "models"] and parts[3:] == ["infer"]:
            return self._infer(parts[2], request)
        return Response.json(404, {"error": f"{request.method} {request.path} is not served"})

    def _load(self, name: str) -> Response:
        if name not in self.models:
            return Response.json(404, {"error": f"failed to load '{name}': no such model in the repository"})
        with self._state:
            self._loaded.add(name)
        return Response.json(200, {})

    def _infer(self, name: str, request: Request) -> Response:
        if name not in self.models:
            return Response.json(404, {"error": f"model '{name}' is not in the repository"})
        if name not in self.loaded:
            return Response.json(400, {"error": f"model '{name}' is not ready: load it first"})
        problem = _request_problem(request.json)
        if problem:
            return Response.json(400, {"error": problem})
        try:
            outputs = self.models[name](request.json["inputs"])
        except Exception as exc:  # the model's own failure is an inference error, not a server crash
            return Response.json(400, {"error": f"{type(exc).__name__}: {exc}"})
        body: dict[str, Any] = {"model_name": name, "outputs": outputs}
        if "id" in request.json:
            body["id"] = request.json["id"]
        return Response.json(200, body)


def _request_problem(body: Any) -> str:
    """What is wrong with an inference request body, or '' when it is a valid one."""
    if not isinstance(body, dict):
        return "the request body must be a JSON object"
    unknown = set(body) - _REQUEST_KEYS
    if unknown:
        return f"unknown request field(s) {sorted(unknown)}"
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        return "inputs must be a non-empty list of tensors"
    for index, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            return f"inputs[{index}] must be an object"
        missing, unknown = _TENSOR_KEYS - set(tensor), set(tensor) - _TENSOR_KEYS - _TENSOR_OPTIONAL
        if missing or unknown:
            return f"inputs[{index}]: missing {sorted(missing)}, unknown {sorted(unknown)}"
        shape, data = tensor["shape"], tensor["data"]
        if not isinstance(tensor["name"], str) or tensor["datatype"] not in DATATYPES:
            return f"inputs[{index}]: name must be a string and datatype one of {sorted(DATATYPES)}"
        if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
            return f"inputs[{index}].shape must be a list of sizes"
        if not isinstance(data, list) or len(data) != math.prod(shape):
            return f"inputs[{index}].data must hold {math.prod(shape) if isinstance(shape, list) else '?'} elements"
        if tensor["datatype"] == "BYTES" and not all(isinstance(item, str) for item in data):
            return f"inputs[{index}]: BYTES data must be strings"
    return ""
