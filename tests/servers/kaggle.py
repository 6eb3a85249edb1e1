"""The Kaggle API as kagglesdk calls it: POST /v1/<service>/<method> with JSON and HTTP Basic, and blob PUTs."""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import google_crc32c

from tests.servers.base import LoopbackServer, Request, Response

LICENCES = frozenset({"CC0-1.0", "CC-BY-4.0", "CC-BY-SA-4.0", "CC-BY-NC-SA-4.0", "ODbL-1.0", "GPL-2.0", "other"})
_SERVICE = "/v1/datasets.DatasetApiService/"
_BLOBS = "/v1/blobs.BlobApiService/"
_NEW_FILE_FIELDS = {"token", "description", "columns"}
_DIRECTORY_FIELDS = {"name", "directories", "files"}
_CONTENT_FIELDS = {"files", "directories", "subtitle", "description", "categoryIds"}


class _Invalid(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Blob:
    name: str
    size: int
    content_type: str | None
    data: bytes | None = None  # None until the PUT arrives
    used: bool = False


@dataclass(frozen=True)
class Version:
    number: int
    notes: str | None
    files: Mapping[str, bytes]  # path in the dataset -> content


@dataclass
class Dataset:
    owner: str
    slug: str
    title: str
    licence: str
    private: bool
    versions: list[Version] = field(default_factory=list)

    @property
    def files(self) -> Mapping[str, bytes]:
        return self.versions[-1].files if self.versions else {}


class KaggleServer(LoopbackServer):
    """Datasets of one user, who authenticates with a username and legacy API key (HTTP Basic), as kaggle.json holds.

    Owners other than that user are refused (403): the server knows no organisations.
    """

    def __init__(self, *, username: str = "lab-bot", key: str = "kaggle-key") -> None:
        super().__init__()
        self.username = username
        self.key = key
        # Tests may set this: the upload answers a hash of other bytes than those received (corruption in storage).
        self.misstate_hashes = False
        self._state_lock = threading.Lock()
        self._datasets: dict[str, Dataset] = {}
        self._blobs: dict[str, Blob] = {}
        self._tokens = itertools.count(1)
        self._routes: dict[str, Callable[[Any], Response]] = {
            _SERVICE + "GetDatasetStatus": self._status,
            _SERVICE + "CreateDataset": self._create,
            _SERVICE + "CreateDatasetVersion": self._new_version,
            _BLOBS + "StartBlobUpload": self._start_upload,
        }

    @property
    def datasets(self) -> dict[str, Dataset]:
        """Datasets by "owner/slug", with their versions."""
        with self._state_lock:
            return copy.deepcopy(self._datasets)

    def add_dataset(self, ref: str, title: str, files: Mapping[str, bytes]) -> None:
        owner, _, slug = ref.partition("/")
        with self._state_lock:
            dataset = Dataset(owner, slug, title, "CC0-1.0", private=True)
            dataset.versions.append(Version(1, None, dict(files)))
            self._datasets[ref] = dataset

    def fault_response(self, status: int) -> Response:
        return _error(status, "injected fault")

    # --- request path ----------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        try:
            if request.method == "PUT" and request.path.startswith("/upload/"):
                return self._put(request)
            route = self._routes.get(request.path)
            if route is None or request.method != "POST":
                raise _Invalid(404, f"no such method: {request.method} {request.path}")
            self._authenticate(request)
            if not (request.header("Content-Type") or "").startswith("application/json"):
                raise _Invalid(400, f"expected a JSON body, found Content-Type {request.header('Content-Type')!r}")
            if not isinstance(request.json, dict):
                raise _Invalid(400, "expected a JSON object")
            with self._state_lock:
                return route(request.json)
        except _Invalid as invalid:
            return _error(invalid.status, str(invalid))

    def _authenticate(self, request: Request) -> None:
        scheme, _, encoded = (request.header("Authorization") or "").partition(" ")
        try:
            username, _, key = base64.b64decode(encoded, validate=True).decode().partition(":")
        except ValueError:
            username = key = ""
        if scheme != "Basic" or (username, key) != (self.username, self.key):
            raise _Invalid(401, "Unauthenticated: expected HTTP Basic with the username and API key")

    # --- datasets --------------------------------------------------------------------------------------

    def _status(self, body: dict[str, Any]) -> Response:
        _only(body, {"ownerSlug", "datasetSlug"})
        dataset = self._datasets.get(f"{_text(body, 'ownerSlug')}/{_text(body, 'datasetSlug')}")
        if dataset is None:
            raise _Invalid(404, "Not found")
        return Response.json(200, {"status": "READY"})

    def _create(self, body: dict[str, Any]) -> Response:
        _only(body, {"id", "ownerSlug", "slug", "title", "licenseName", "isPrivate"} | _CONTENT_FIELDS)
        owner, slug, title = _text(body, "ownerSlug"), _text(body, "slug"), _text(body, "title")
        if owner != self.username:
            raise _Invalid(403, f"{self.username} may not create datasets for {owner}")
        if not 6 <= len(slug) <= 50 or not 6 <= len(title) <= 50:
            raise _Invalid(400, "slug and title must be 6 to 50 characters")
        licence = _text(body, "licenseName")
        if licence not in LICENCES:
            raise _Invalid(400, f"unknown licenseName {licence!r}")
        ref = f"{owner}/{slug}"
        if ref in self._datasets:
            return Response.json(200, {"status": "error", "error": f"The dataset {ref} already exists"})
        files = self._files(body)
        dataset = Dataset(owner, slug, title, licence, private=bool(body.get("isPrivate", False)))
        dataset.versions.append(Version(1, None, files))
        self._datasets[ref] = dataset
        return Response.json(200, {"ref": ref, "url": f"{self.url}/datasets/{ref}", "status": "ok"})

    def _new_version(self, body: dict[str, Any]) -> Response:
        _only(body, {"ownerSlug", "datasetSlug", "body"})
        ref = f"{_text(body, 'ownerSlug')}/{_text(body, 'datasetSlug')}"
        dataset = self._datasets.get(ref)
        if dataset is None:
            raise _Invalid(404, "Not found")
        if dataset.owner != self.username:
            raise _Invalid(403, f"{self.username} may not change {ref}")
        content = body.get("body")
        if not isinstance(content, dict):
            raise _Invalid(400, "body: expected an object")
        _only(content, {"versionNotes", "deleteOldVersions"} | _CONTENT_FIELDS)
        notes = content.get("versionNotes")
        if notes is not None and not isinstance(notes, str):
            raise _Invalid(400, "versionNotes: expected a string")
        files = self._files(content)
        dataset.versions.append(Version(len(dataset.versions) + 1, notes, files))
        return Response.json(200, {"ref": ref, "url": f"{self.url}/datasets/{ref}", "status": "ok"})

    def _files(self, content: dict[str, Any]) -> dict[str, bytes]:
        """The dataset's files from `files` (top level) and `directories` (nested), each naming an uploaded blob."""
        found: dict[str, bytes] = {}
        tokens: list[str] = []

        def add(entries: object, folder: str) -> None:
            for entry in _list(entries, "files"):
                _only(entry, _NEW_FILE_FIELDS)
                token = _text(entry, "token")
                blob = self._blobs.get(token)
                if blob is None or blob.data is None or blob.used or token in tokens:
                    raise _Invalid(400, f"files: token {token!r} names no uploaded, unused blob")
                path = f"{folder}{blob.name}"
                if path in found:
                    raise _Invalid(400, f"files: {path} appears twice")
                found[path] = blob.data
                tokens.append(token)

        def walk(directories: object, folder: str) -> None:
            for directory in _list(directories, "directories"):
                _only(directory, _DIRECTORY_FIELDS)
                name = _text(directory, "name")
                if "/" in name or name in (".", ".."):
                    raise _Invalid(400, f"directories: invalid name {name!r}")
                add(directory.get("files", []), f"{folder}{name}/")
                walk(directory.get("directories", []), f"{folder}{name}/")

        add(content.get("files", []), "")
        walk(content.get("directories", []), "")
        if not found:
            raise _Invalid(400, "a dataset version needs at least one file")
        for token in tokens:
            self._blobs[token].used = True  # a blob becomes one file of one version
        return found

    # --- blobs -----------------------------------------------------------------------------------------

    def _start_upload(self, body: dict[str, Any]) -> Response:
        _only(body, {"type", "name", "contentType", "contentLength", "lastModifiedEpochSeconds"})
        if body.get("type") != "DATASET":
            raise _Invalid(400, f"type: expected DATASET, found {body.get('type')!r}")
        name = _text(body, "name")
        if "/" in name:
            raise _Invalid(400, f"name: a blob name is a file name, found {name!r}")
        size = body.get("contentLength", 0)  # kagglesdk leaves out fields at their default (0)
        if not isinstance(size, int) or size < 0:
            raise _Invalid(400, f"contentLength: expected a size in bytes, found {size!r}")
        token = f"blob-{next(self._tokens)}"
        self._blobs[token] = Blob(name, size, body.get("contentType"))
        return Response.json(200, {"token": token, "createUrl": f"{self.url}/upload/{token}?upload_id=u{token}"})

    def _put(self, request: Request) -> Response:
        if request.header("Authorization") is not None:
            raise _Invalid(400, "credentials were sent to a storage upload URL")
        token = request.path.removeprefix("/upload/")
        with self._state_lock:
            blob = self._blobs.get(token)
            if blob is None or request.param("upload_id") != f"u{token}":
                raise _Invalid(404, "no such upload")
            if len(request.body) != blob.size:
                raise _Invalid(400, f"expected {blob.size} bytes, received {len(request.body)}")
            blob.data = request.body
        stated = request.body + b"!" if self.misstate_hashes else request.body
        crc = base64.b64encode(google_crc32c.Checksum(stated).digest()).decode()
        md5 = base64.b64encode(hashlib.md5(stated, usedforsecurity=False).digest()).decode()
        return Response(200, b"", {"x-goog-hash": f"crc32c={crc},md5={md5}"})


def _error(status: int, message: str) -> Response:
    """Kaggle's error shape: kagglesdk raises on a JSON body whose `code` is 400 or more."""
    return Response.json(status, {"code": status, "message": message})


def _only(body: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _Invalid(400, f"unknown fields: {', '.join(unknown)}")


def _text(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise _Invalid(400, f"{name}: expected a non-empty string, found {value!r}")
    return value


def _list(value: object, name: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise _Invalid(400, f"{name}: expected a list of objects")
    return value
