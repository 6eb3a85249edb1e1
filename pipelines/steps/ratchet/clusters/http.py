"""Algorithms served over HTTP: a call path template, with presets for the Open Inference Protocol and the seed's API.

Names here: `data://.my/<c>/<f>` becomes `data://<owner>/<c>/<f>` and `algo://.my/<name>` becomes
`algo://<owner>/<name>/<version>`; `owner` defaults to `.my`, which the seed's platform itself resolves to the
API key's owner, so by default only `<algo>` changes.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import requests

from pipelines.steps.egress import STRICT, Egress, EgressError, client_failure, status_line
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

PRESETS: dict[str, dict[str, str]] = {
    # Open Inference Protocol (KServe v2): infer, and the model repository extension's load.
    "oip": {
        "protocol": "oip",
        "call_path": "/v2/models/{name}/infer",
        "load_path": "/v2/repository/models/{name}/load",
    },
    # The seed's algorithm API: POST the JSON payload; the server stops the call at `timeout` too.
    "algorithmia": {
        "protocol": "json",
        "call_path": "/v1/algo/{owner}/{name}/{version}?timeout={timeout}",
        "upload_path": "/v1/data/{owner}/{collection}/{path}",
    },
}
_OPTIONS = (
    "url",
    "preset",
    "protocol",
    "call_path",
    "load_path",
    "upload_path",
    "code_upload_path",
    "owner",
    "version",
    "api_key",
    "token",
    "ca_cert",
)
_RETRYABLE = {429, 502, 503, 504}
_DEPLOY_TIMEOUT = 120.0
_STILL_BUILDING = "version hash"  # the seed's answer while an algorithm builds: read to retry, never recorded


class HttpCluster:
    kind = "http"

    def __init__(
        self,
        url: str,
        *,
        call_path: str,
        protocol: str = "json",
        load_path: str = "",
        upload_path: str = "",
        code_upload_path: str = "",
        owner: str = ".my",
        version: str = "latestPrivate",
        headers: Mapping[str, str] | None = None,
        verify: str | bool = True,
        egress: Egress = STRICT,
    ) -> None:
        self.url = url.rstrip("/")
        self._call_path = call_path
        self._protocol = protocol
        self._load_path = load_path
        self._upload_path = upload_path
        self._code_upload_path = code_upload_path
        self.owner = owner
        self.version = version
        # Every connection (each redirect too) goes to an address `egress` checked; no proxy from the environment.
        self._session = egress.session()
        self._session.headers.update(headers or {})
        # True or a CA bundle path: certificates are always checked. Passed on each request, where it wins over the
        # session's; without a CA of its own, the session's (REQUESTS_CA_BUNDLE, as `egress.session()` reads it).
        self._verify = self._session.verify if verify is True else verify

    @classmethod
    def from_options(cls, config: Mapping[str, Any], context: ClusterContext) -> HttpCluster:
        options = options_of(config, _OPTIONS, "http")
        preset_name = options.pop("preset", None)
        if preset_name is not None and preset_name not in PRESETS:
            raise ClusterConfigError(f"destination.preset: expected one of {', '.join(PRESETS)}, found {preset_name!r}")
        merged = {**PRESETS.get(preset_name or "", {}), **{k: v for k, v in options.items() if v is not None}}
        url = merged.pop("url", None)
        if not isinstance(url, str):
            raise ClusterConfigError(f"destination.url: expected the server's base URL, found {url!r}")
        if not merged.get("call_path"):
            raise ClusterConfigError("destination.call_path: expected a template such as /predict/{name}, or a preset")
        if merged.get("protocol", "json") not in ("json", "oip"):
            raise ClusterConfigError(f"destination.protocol: expected json or oip, found {merged['protocol']!r}")
        headers = {}
        api_key, token = merged.pop("api_key", None), merged.pop("token", None)
        if api_key:
            headers["Authorization"] = f"Simple {api_key}"  # the seed platform's scheme for API keys
        if token:
            headers["Authorization"] = f"Bearer {token}"
        require_secure(url, bool(headers), "destination.url")
        verify = ca_bundle(merged.pop("ca_cert", None), context, "destination.ca_cert") or True
        context.egress.check(url)  # refused now, before any deploy; each connection is checked again
        strings = {k: str(v) for k, v in merged.items()}
        return cls(
            url,
            call_path=strings.pop("call_path"),
            headers=headers,
            verify=verify,
            protocol=strings.pop("protocol", "json"),
            load_path=strings.pop("load_path", ""),
            upload_path=strings.pop("upload_path", ""),
            code_upload_path=strings.pop("code_upload_path", ""),
            owner=strings.pop("owner", ".my"),
            version=strings.pop("version", "latestPrivate"),
            egress=context.egress,
        )

    def data_name(self, collection: str, path: str) -> str:
        return f"data://{self.owner}/{collection}/{path}"

    def algo_name(self, name: str, version: str | None) -> str:
        return f"algo://{self.owner}/{name}/{version or self.version}"

    def deploy(self, algorithm: str, files: Sequence[ExportedFile]) -> None:
        data = [f for f in files if f.kind == DATA]
        if data and not self._upload_path:
            raise ClusterError(f"{algorithm}: {len(data)} data file(s) to copy, but the destination has no upload_path")
        for item in files:
            template = self._upload_path if item.kind == DATA else self._code_upload_path
            if item.kind == CODE and not template:
                continue  # the server builds from its own repository; `load_path` tells it to (re)load
            path = template.format(
                owner=self.owner, collection=quote(item.collection), path=quote(item.path), name=quote(algorithm)
            )
            self._send("PUT", path, f"{algorithm}: upload {item.path}", data=item.data)
        if self._load_path:
            self._send("POST", self._load_path.format(name=quote(algorithm)), f"{algorithm}: load", json={})

    def close(self) -> None:
        self._session.close()

    def call(self, name: str, payload: Any, timeout: float) -> CallResult:
        path = self._call_path.format(
            name=quote(name), owner=self.owner, version=self.version, timeout=max(1, math.ceil(timeout))
        )
        body = _oip_request(payload) if self._protocol == "oip" else payload
        started = time.monotonic()
        try:
            # A read timeout bounds each wait on the socket; the elapsed check below bounds the whole call.
            response = self._session.post(self.url + path, json=body, timeout=timeout, verify=self._verify)
        except requests.Timeout:
            elapsed = time.monotonic() - started
            return CallResult(ok=False, error=f"timed out after {timeout:g} s", seconds=elapsed, timed_out=True)
        except requests.RequestException as exc:
            return CallResult(ok=False, error=f"{self.url}: {client_failure(exc)}", retryable=True)
        except EgressError as exc:
            return CallResult(ok=False, error=str(exc))
        elapsed = time.monotonic() - started
        if elapsed > timeout:
            return CallResult(ok=False, error=f"answered after {elapsed:.3f} s, past the {timeout:g} s timeout",
                              seconds=elapsed, timed_out=True)  # fmt: skip
        if not response.ok:
            error, building = _refusal(response)
            retry = response.status_code in _RETRYABLE or building
            return CallResult(ok=False, error=error, seconds=elapsed, retryable=retry)
        try:
            document = response.json()
        except ValueError:
            return CallResult(ok=True, output=response.text, seconds=elapsed)
        if self._protocol == "oip":
            return CallResult(ok=True, output=_oip_output(document), seconds=elapsed)
        if isinstance(document, dict) and "error" in document:
            building = _STILL_BUILDING in json.dumps(document["error"])
            error = "answered an error with HTTP 200 (its text is not recorded)"
            return CallResult(ok=False, error=error, seconds=elapsed, retryable=building)
        output = document["result"] if isinstance(document, dict) and "result" in document else document
        return CallResult(ok=True, output=output, seconds=elapsed)

    def _send(self, method: str, path: str, what: str, **kwargs: Any) -> None:
        try:
            response = self._session.request(
                method, self.url + path, timeout=_DEPLOY_TIMEOUT, verify=self._verify, **kwargs
            )
        except requests.RequestException as exc:
            raise ClusterError(f"{what}: {client_failure(exc)}") from None
        except EgressError as exc:
            raise ClusterError(f"{what}: {exc}") from None
        if not response.ok:
            raise ClusterError(f"{what}: {_refusal(response)[0]}")


def _oip_request(payload: Any) -> Any:
    """An inference request: the payload as is when it is one already, else one BYTES tensor holding it."""
    if isinstance(payload, Mapping) and "inputs" in payload:
        return payload
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return {"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "data": [text]}]}


def _oip_output(document: Any) -> Any:
    """One output's data (one element unwrapped), or {name: data} for several."""
    outputs = document.get("outputs") if isinstance(document, dict) else None
    if not isinstance(outputs, list):
        return document
    if len(outputs) == 1:
        data = outputs[0].get("data")
        return data[0] if isinstance(data, list) and len(data) == 1 else data
    return {str(o.get("name")): o.get("data") for o in outputs}


def _refusal(response: requests.Response) -> tuple[str, bool]:
    """An error answer as it is recorded, its status line, and whether it says the algorithm is still building.

    The body is the server's text (an algorithm's exception, a token echoed back): read for that one signal, never
    recorded.
    """
    building = _STILL_BUILDING in response.text
    line = status_line(response.status_code)
    return (f"{line}: the algorithm is still being built" if building else line), building
