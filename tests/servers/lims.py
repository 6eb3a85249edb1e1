"""A loopback ELN/LIMS-style REST endpoint: raw or multipart uploads behind a fixed Authorization header."""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from urllib.parse import quote, unquote

from tests.servers.base import LoopbackServer, Request, Response


@dataclass(frozen=True)
class Part:
    """One part of a multipart/form-data body."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass(frozen=True)
class Upload:
    """A POST or PUT that was accepted: the request as received, and its parts when it was multipart."""

    request: Request
    parts: tuple[Part, ...] = ()

    @property
    def data(self) -> bytes:
        """The uploaded bytes: the raw body, or the content of the single file part."""
        files = [part for part in self.parts if part.filename is not None]
        return files[0].data if len(files) == 1 else self.request.body


class LimsServer(LoopbackServer):
    """`POST /samples/...`: a new record, 201 with `{"id": "rec-N"}`.

    `PUT /files/<name>`: creates or replaces that file (If-None-Match: * refuses to replace, 412), 201 with a
    Location. `HEAD /files/<name>`: 200 with the file's MD5 as ETag, or 404. Every request must carry
    `Authorization: <authorization>`; others get a 401 that echoes what was sent, as careless servers do.
    """

    def __init__(self, authorization: str) -> None:
        super().__init__()
        self.authorization = authorization
        self.files: dict[str, bytes] = {}
        self._uploads: list[Upload] = []
        self._guard = threading.Lock()

    @property
    def uploads(self) -> list[Upload]:
        with self._guard:
            return list(self._uploads)

    def fault_response(self, status: int) -> Response:
        return Response.json(status, {"error": "injected fault"})

    def handle(self, request: Request) -> Response:
        sent = request.header("Authorization")
        if sent != self.authorization:
            return Response.json(401, {"error": f"invalid credentials: {sent}"})
        if request.method == "POST" and request.path.startswith("/samples/"):
            with self._guard:
                self._uploads.append(Upload(request, parts_of(request)))
                return Response.json(201, {"id": f"rec-{len(self._uploads)}"})
        if request.path.startswith("/files/"):
            return self._file(request, unquote(request.path.removeprefix("/files/")))
        return Response.json(404, {"error": f"no such endpoint: {request.method} {request.path}"})

    def _file(self, request: Request, name: str) -> Response:
        with self._guard:
            if request.method == "PUT":
                if request.header("If-None-Match") == "*" and name in self.files:
                    return Response.json(412, {"error": f"{name} exists"})
                upload = Upload(request, parts_of(request))
                self._uploads.append(upload)
                self.files[name] = upload.data
                return Response(201, b"", {"Location": f"/files/{quote(name, safe='')}"})
            if request.method in ("HEAD", "GET"):
                if name not in self.files:
                    return Response.json(404, {"error": f"no such file: {name}"})
                return Response(200, self.files[name], {"ETag": f'"{hashlib.md5(self.files[name]).hexdigest()}"'})
        return Response.json(405, {"error": f"{request.method} not allowed"})


def parts_of(request: Request) -> tuple[Part, ...]:
    """The parts of a multipart/form-data body, byte for byte (the email package would rewrite line ends)."""
    content_type = request.header("Content-Type") or ""
    boundary = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.startswith("multipart/form-data") or boundary is None:
        return ()
    delimiter = b"--" + boundary.group(1).encode()
    sections = request.body.split(b"\r\n" + delimiter)
    if not sections[0].startswith(delimiter) or not sections[-1].startswith(b"--"):
        raise ValueError("malformed multipart body: no opening or closing delimiter")
    parts = []
    for section in [sections[0].removeprefix(delimiter), *sections[1:-1]]:
        head, _, data = section.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        pairs = (line.split(":", 1) for line in head.decode().split("\r\n"))
        headers = {key.strip().lower(): value.strip() for key, value in pairs}
        disposition = headers.get("content-disposition", "")
        name = re.search(r'; name="([^"]*)"', disposition)
        filename = re.search(r'; filename="([^"]*)"', disposition)
        parts.append(
            Part(
                name=name.group(1) if name else "",
                filename=filename.group(1) if filename else None,
                content_type=headers.get("content-type"),
                data=data,
            )
        )
    return tuple(parts)
