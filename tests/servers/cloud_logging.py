"""Cloud Logging's entries.list (POST /v2/entries:list) on loopback, for the filters `relay logs` sends."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from typing import Any

from tests.servers.base import LoopbackServer, Request, Response, TokenCheck, any_token, bearer_token, google_error

# The filter shapes served: a resource type and one resource label, as the Logs Explorer writes them (`relay logs`);
# and structured lines that have a field, with any of some fields' values (`relay why`: the functions' outcome lines).
_FILTER = re.compile(r'^resource\.type="([^"]+)" AND resource\.labels\.([a-z_]+)="([^"]+)"$')
_PAYLOAD_FILTER = re.compile(r"^jsonPayload\.([a-z_]+):\* AND \((.+)\)$")
_PAYLOAD_TERM = re.compile(r'^jsonPayload\.([a-z_]+)=("(?:[^"\\]|\\.)*")$')
_ORDERS = ("timestamp asc", "timestamp desc")
_FIELDS = {"resourceNames", "filter", "orderBy", "pageSize", "pageToken"}


class CloudLoggingServer(LoopbackServer):
    """Entries of one or more projects; pages as the real service pages them (pageSize, nextPageToken)."""

    def __init__(self, *, token_check: TokenCheck = any_token) -> None:
        super().__init__()
        self.token_check = token_check
        self._lock = threading.Lock()
        self._entries: list[dict[str, Any]] = []

    def add(self, project: str, resource_type: str, labels: dict[str, str], **entry: Any) -> None:
        """One entry in `project`'s log, on a resource of `resource_type` with `labels`."""
        with self._lock:
            self._entries.append(
                {
                    "logName": f"projects/{project}/logs/aiplatform.googleapis.com%2Fpipeline_job_events",
                    "resource": {"type": resource_type, "labels": dict(labels)},
                    **entry,
                }
            )

    def handle(self, request: Request) -> Response:
        if request.path != "/v2/entries:list" or request.method != "POST":
            return google_error(404, "NOT_FOUND", f"The requested URL {request.path} was not found.")
        token = bearer_token(request)
        if token is None or not self.token_check(token):
            return google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        body = request.json if isinstance(request.json, dict) else {}
        unknown = sorted(set(body) - _FIELDS)
        if unknown:
            return google_error(400, "INVALID_ARGUMENT", f'Invalid JSON payload received. Unknown name "{unknown[0]}"')
        names = body.get("resourceNames") or []
        projects = [name.removeprefix("projects/") for name in names if name.startswith("projects/")]
        if not names or len(projects) != len(names):
            return google_error(400, "INVALID_ARGUMENT", "resourceNames: expected projects/PROJECT names")
        wanted = _selection(str(body.get("filter") or ""))
        if wanted is None:
            return google_error(400, "INVALID_ARGUMENT", f"Unparseable filter: {body.get('filter')!r}")
        order = body.get("orderBy", "timestamp asc")
        if order not in _ORDERS:
            return google_error(400, "INVALID_ARGUMENT", f"orderBy: expected one of {_ORDERS}, found {order!r}")
        size = int(body.get("pageSize") or 50)
        if not 0 < size <= 1000:
            return google_error(400, "INVALID_ARGUMENT", f"pageSize: expected 1 to 1000, found {size}")
        with self._lock:
            chosen = [entry for entry in self._entries if entry["logName"].split("/")[1] in projects and wanted(entry)]
        chosen.sort(key=lambda entry: str(entry.get("timestamp", "")), reverse=order == "timestamp desc")
        start = int(body.get("pageToken") or 0)
        page: dict[str, Any] = {"entries": chosen[start : start + size]}
        if start + size < len(chosen):
            page["nextPageToken"] = str(start + size)
        return Response.json(200, page)


def _selection(text: str) -> Callable[[dict[str, Any]], bool] | None:
    """What a filter of a served shape selects; None for any other filter."""
    by_resource = _FILTER.match(text)
    if by_resource is not None:
        resource_type, label, value = by_resource.groups()
        return lambda entry: (
            entry["resource"]["type"] == resource_type and entry["resource"]["labels"].get(label) == value
        )
    by_payload = _PAYLOAD_FILTER.match(text)
    if by_payload is None:
        return None
    present, terms = by_payload[1], [_PAYLOAD_TERM.match(term) for term in by_payload[2].split(" OR ")]
    if not all(terms):
        return None
    pairs = [(term[1], json.loads(term[2])) for term in terms if term is not None]

    def selects(entry: dict[str, Any]) -> bool:
        payload = entry.get("jsonPayload")
        if not isinstance(payload, dict) or present not in payload:
            return False
        return any(payload.get(field) == value for field, value in pairs)

    return selects
