"""Secret Manager's REST surface for `versions.access`, as google-cloud-secret-manager's REST transport calls it."""

from __future__ import annotations

import base64
import re

from tests.servers.base import LoopbackServer, Request, Response, google_error

_ACCESS = re.compile(r"^/v1/(?P<name>projects/[^/]+/secrets/[^/]+/versions/[^/:]+):access$")


class SecretManagerServer(LoopbackServer):
    """Serves `secrets` ({"projects/P/secrets/S": value}); `latest` is the only version kept."""

    def __init__(self, secrets: dict[str, str]) -> None:
        super().__init__()
        self.secrets = secrets

    def handle(self, request: Request) -> Response:
        match = _ACCESS.match(request.path)
        if request.method != "GET" or not match:
            return google_error(404, "NOT_FOUND", f"no such method: {request.method} {request.path}")
        name = match.group("name")
        secret, _, version = name.rpartition("/versions/")
        if secret not in self.secrets or version not in ("latest", "1"):
            return google_error(404, "NOT_FOUND", f"Secret [{name}] not found or has no versions.")
        data = base64.b64encode(self.secrets[secret].encode()).decode()
        return Response.json(200, {"name": f"{secret}/versions/1", "payload": {"data": data}})
