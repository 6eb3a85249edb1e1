"""Cloud Logging's entries.list (POST /v2/entries:list) on loopback, for the filters `relay logs` sends."""

from __future__ import annotations

import re
import threading
from typing import Any

from tests.servers.base import LoopbackServer, Request, Response, TokenCheck, any_token, bearer_token, google_error

# The one filter shape served: a resource type and one resource label, as the Logs Explorer writes them.
_FILTER = re.compile(r'^resource\.type="([^"]+)" AND resource\.labels\.([a-z_]+)="([^"]+)"$')
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
        match = _FILTER.match(str(body.get("filter") or ""))
        if match is None:
            return google_error(400, "INVALID_ARGUMENT", f"Unparseable filter: {body.get('filter')!r}")
        order = body.get("orderBy", "timestamp asc")
        if order not in _ORDERS:
            return google_error(400, "INVALID_ARGUMENT", f"orderBy: expected one of {_ORDERS}, found {order!r}")
        size = int(body.get("pageSize") or 50)
        if not 0 < size <= 1000:
            return google_error(400, "INVALID_ARGUMENT", f"pageSize: expected 1 to 1000, found {size}")
        resource_type, label, value = match.groups()
        with self._lock:
            chosen = [
                entry
                for entry in self._entries
                if entry["logName"].split("/")[1] in projects
                and entry["resource"]["type"] == resource_type
                and entry["resource"]["labels"].get(label) == value
            ]
        chosen.sort(key=lambda entry: str(entry.get("timestamp", "")), reverse=order == "timestamp desc")
        start = int(body.get("pageToken") or 0)
        page: dict[str, Any] = {"entries": chosen[start : start + size]}
        if start + size < len(chosen):
            page["nextPageToken"] = str(start + size)
        return Response.json(200, page)
