"""A GCE metadata server speaking the protocol google-auth's compute_engine module uses."""

from __future__ import annotations

import time
from collections.abc import Sequence

from tests.servers.base import LoopbackServer, Request, Response
from tests.servers.tokens import Clock, TokenAuthority, TokenIssuer, numeric_id

_ROOT = "/computeMetadata/v1/"
_SA_PREFIX = _ROOT + "instance/service-accounts/"
_FLAVOR = {"Metadata-Flavor": "Google"}
# The real server labels plain values this way; google-auth only parses bodies typed application/json.
_TEXT = "application/text"


class MetadataServer(TokenAuthority, LoopbackServer):
    """The GCE metadata server for one service account.

    google-auth reads the metadata host when `google.auth.compute_engine._metadata` is first imported, so
    set `GCE_METADATA_HOST` and `GCE_METADATA_IP` to `server.host_port` (see `env()`) *before* anything
    imports google.auth -- in practice, run the code under test in a subprocess with that environment.
    `import kfp` (any kfp module, kfp.pipeline_spec included) counts: kfp/__init__ imports kfp.client, which
    imports google.auth.compute_engine.
    """

    # Every answer carries the flavor header: google-auth's probe treats its absence as "not on GCE".
    always_headers = _FLAVOR

    def __init__(
        self,
        *,
        email: str = "relay-fn@relay-test.iam.gserviceaccount.com",
        project_id: str = "relay-test",
        numeric_project_id: str = "123456789012",
        scopes: Sequence[str] = ("https://www.googleapis.com/auth/cloud-platform",),
        token_lifetime: int = 3600,
        id_token_lifetime: int = 3600,
        clock: Clock = time.time,
    ) -> None:
        super().__init__()
        self.email = email
        self.project_id = project_id
        self.numeric_project_id = numeric_project_id
        self.scopes = list(scopes)
        self.token_lifetime = token_lifetime
        self.id_token_lifetime = id_token_lifetime
        self.subject = numeric_id(email)
        self._issuer = TokenIssuer("access", clock)

    def env(self) -> dict[str, str]:
        """Environment variables that point google-auth (in a fresh process) at this server."""
        return {"GCE_METADATA_HOST": self.host_port, "GCE_METADATA_IP": self.host_port}

    def fault_response(self, status: int) -> Response:
        return Response.text(status, "injected fault")

    def handle(self, request: Request) -> Response:
        if request.header("Metadata-Flavor") != "Google":
            return Response.text(403, "Missing required header: Metadata-Flavor: Google", "text/html")
        if request.header("X-Forwarded-For") is not None:
            # The real server refuses proxied requests (an SSRF guard); a client must never send it.
            return Response.text(403, "Request contains X-Forwarded-For header", "text/html")
        if request.method != "GET":
            return Response.text(405, f"Method {request.method} not allowed", "text/html")
        path = request.path
        if path == "/":
            return Response.text(200, "computeMetadata/\n", _TEXT)
        plain = {
            _ROOT + "project/project-id": self.project_id,
            _ROOT + "project/numeric-project-id": self.numeric_project_id,
            _ROOT + "universe/universe-domain": "googleapis.com",
            _SA_PREFIX: "default/\n" + self.email + "/\n",
        }
        if path in plain:
            return Response.text(200, plain[path], _TEXT)
        if path.startswith(_SA_PREFIX):
            account, _, leaf = path[len(_SA_PREFIX) :].partition("/")
            if account in ("default", self.email):
                return self._service_account(leaf, request)
        return Response.text(404, f"Not Found: {path}", "text/html")

    def _service_account(self, leaf: str, request: Request) -> Response:
        if leaf == "":
            if request.param("recursive") == "true":
                info = {"aliases": ["default"], "email": self.email, "scopes": self.scopes}
                return Response.json(200, info)
            return Response.text(200, "aliases\nemail\nidentity\nscopes\ntoken\n", _TEXT)
        if leaf == "email":
            return Response.text(200, self.email, _TEXT)
        if leaf == "scopes":
            return Response.text(200, "\n".join(self.scopes) + "\n", _TEXT)
        if leaf == "token":
            token = self._issuer.access_token(self.token_lifetime)
            body = {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}
            return Response.json(200, body)
        if leaf == "identity":
            return self._identity(request)
        return Response.text(404, f"Not Found: {request.path}", "text/html")

    def _identity(self, request: Request) -> Response:
        audience = request.param("audience")
        if not audience:
            return Response.text(400, "non-empty audience parameter required", "text/html")
        token_format = request.param("format") or "standard"
        if token_format not in ("standard", "full"):
            return Response.text(400, f"invalid format {token_format!r}: want standard or full", "text/html")
        extra = {}
        if token_format == "full":
            extra["google"] = {
                "compute_engine": {
                    "project_id": self.project_id,
                    "project_number": int(self.numeric_project_id),
                    "zone": "us-central1-a",
                    "instance_id": "1234567890123456789",
                    "instance_name": "relay-test-instance",
                }
            }
        token = self._issuer.id_token(
            audience=audience,
            email=self.email,
            subject=self.subject,
            lifetime=self.id_token_lifetime,
            extra=extra,
        )
        return Response.text(200, token, "text/html")
