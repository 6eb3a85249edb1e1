"""The seed's algorithm API, as far as the ratchet uses it: call an algorithm, upload a data file."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

from tests.servers.base import LoopbackServer, Request, Response


def _error(status: int, message: str) -> Response:
    return Response.json(status, {"error": {"message": message}})


class AlgorithmApiServer(LoopbackServer):
    """`POST /v1/algo/<owner>/<name>/<version>` runs `algorithms[name]` on the JSON body and answers
    `{result, metadata}` or `{error: {message}}`; `PUT /v1/data/<owner>/<collection>/<path>` keeps the bytes.
    Every request needs `Authorization: Simple <api_key>`, the platform's scheme.
    """

    def __init__(self, api_key: str, algorithms: Mapping[str, Callable[[Any], Any]]) -> None:
        super().__init__()
        self.api_key = api_key
        self.algorithms = dict(algorithms)
        self._data: dict[str, bytes] = {}
        self._state = threading.Lock()

    @property
    def data(self) -> dict[str, bytes]:
        with self._state:
            return dict(self._data)

    def fault_response(self, status: int) -> Response:
        return _error(status, "injected fault")

    def handle(self, request: Request) -> Response:
        if request.header("Authorization") != f"Simple {self.api_key}":
            return _error(401, "authorization required")
        parts = [unquote(p) for p in request.path.strip("/").split("/")]
        if request.method == "POST" and parts[:2] == ["v1", "algo"] and len(parts) in (4, 5):
            return self._call(parts[3], request)
        if request.method == "PUT" and parts[:2] == ["v1", "data"] and len(parts) >= 5:
            with self._state:
                self._data["/".join(parts[2:])] = request.body
            return Response.json(200, {"result": "data://" + "/".join(parts[2:])})
        return _error(404, f"{request.method} {request.path} is not served")

    def _call(self, name: str, request: Request) -> Response:
        if name not in self.algorithms:
            return _error(404, f"algorithm {name} not found")
        if request.header("Content-Type") != "application/json":
            return _error(400, f"expected application/json, found {request.header('Content-Type')}")
        started = time.perf_counter()
        try:
            result = self.algorithms[name](request.json)
        except Exception as exc:  # the algorithm's failure is the call's error, as the platform reports it
            return _error(400, f"{type(exc).__name__}: {exc}")
        metadata = {"content_type": "json", "duration": time.perf_counter() - started}
        return Response.json(200, {"result": result, "metadata": metadata})
