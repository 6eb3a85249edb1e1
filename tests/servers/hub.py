"""The Hugging Face Hub API as huggingface_hub calls it for dataset repositories: info, create, paths, commits."""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from tests.servers.base import LoopbackServer, Request, Response, bearer_token

_REPO = r"(?P<repo>[^/]+/[^/]+)"
_INFO = re.compile(rf"^/api/datasets/{_REPO}(?:/revision/(?P<rev>[^/]+))?$")
_CALL = re.compile(rf"^/api/datasets/{_REPO}/(?P<call>paths-info|preupload|commit)/(?P<rev>[^/]+)$")
_SHA = re.compile(r"^[0-9a-f]{40}$")
INVALID_TOKEN = "Invalid credentials in Authorization header"


class _Invalid(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Commit:
    sha: str
    parent: str | None
    summary: str
    description: str
    files: Mapping[str, bytes]  # the whole tree at this commit: path -> content


@dataclass
class Repo:
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit sha
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit:
        sha = self.branches.get(revision, revision)
        if sha not in self.commits:
            raise _Invalid(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return self.commits[sha]

    def head(self, branch: str = "main") -> Commit:
        return self.commits[self.branches[branch]]


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


class HubServer(LoopbackServer):
    """Dataset repositories of the users a token may write for; every file is a regular (non-LFS) one.

    Preupload answers "regular" for every file, so the client sends contents base64 in the commit NDJSON and needs
    neither LFS nor Xet storage.
    """

    def __init__(self, *, token: str = "hf_test_token", owners: frozenset[str] = frozenset({"lab-bot"})) -> None:
        super().__init__()
        self.token = token
        self.owners = owners
        self._state_lock = threading.Lock()
        self._repos: dict[str, Repo] = {}

    @property
    def repos(self) -> dict[str, Repo]:
        with self._state_lock:
            return copy.deepcopy(self._repos)

    def add_repo(self, repo_id: str, files: Mapping[str, bytes], *, branches: tuple[str, ...] = ("main",)) -> str:
        """A repository whose branches all point at one commit holding `files`; returns that commit's sha."""
        with self._state_lock:
            repo = Repo(private=True)
            commit = self._commit(repo, None, "initial commit", "", dict(files))
            repo.branches = dict.fromkeys(branches, commit.sha)
            self._repos[repo_id] = repo
            return commit.sha

    def add_commit(self, repo_id: str, files: Mapping[str, bytes], branch: str = "main") -> str:
        """Somebody else commits `files` (over the branch's tree) meanwhile."""
        with self._state_lock:
            repo = self._repos[repo_id]
            parent = repo.head(branch)
            commit = self._commit(repo, parent.sha, "another writer", "", {**parent.files, **files})
            repo.branches[branch] = commit.sha
            return commit.sha

    def fault_response(self, status: int) -> Response:
        return _error(_Invalid(status, "injected fault"))

    # --- request path ----------------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        try:
            if bearer_token(request) != self.token:
                raise _Invalid(401, INVALID_TOKEN)
            with self._state_lock:
                if request.path == "/api/repos/create" and request.method == "POST":
                    return self._create(request)
                info = _INFO.match(request.path)
                if info and request.method == "GET":
                    return self._info(info["repo"], unquote(info["rev"] or "main"))
                call = _CALL.match(request.path)
                if call and request.method == "POST":
                    repo, revision = self._repo(call["repo"]), unquote(call["rev"])
                    if call["call"] == "paths-info":
                        return self._paths_info(repo, revision, request)
                    if call["call"] == "preupload":
                        return self._preupload(repo, revision, request)
                    return self._commit_call(call["repo"], repo, revision, request)
            raise _Invalid(404, f"no such route: {request.method} {request.path}")
        except _Invalid as invalid:
            return _error(invalid)

    def _repo(self, repo_id: str) -> Repo:
        repo = self._repos.get(repo_id)
        if repo is None:
            raise _Invalid(404, "Repository not found", code="RepoNotFound")
        return repo

    def _create(self, request: Request) -> Response:
        body = _json_object(request)
        _only(body, {"name", "organization", "visibility", "type"})
        if body.get("type") != "dataset":
            raise _Invalid(400, f"type: expected dataset, found {body.get('type')!r}")
        owner, name = body.get("organization"), body.get("name")
        if not isinstance(name, str) or not isinstance(owner, str) or owner not in self.owners:
            raise _Invalid(403, f"You don't have the rights to create a dataset under the namespace {owner!r}")
        if body.get("visibility", "public") not in ("public", "private"):
            raise _Invalid(400, f"visibility: expected public or private, found {body.get('visibility')!r}")
        repo_id = f"{owner}/{name}"
        if repo_id in self._repos:
            raise _Invalid(409, "You already created this dataset repo")
        repo = Repo(private=body.get("visibility") == "private")
        gitattributes = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"
        repo.branches["main"] = self._commit(repo, None, "initial commit", "", {".gitattributes": gitattributes}).sha
        self._repos[repo_id] = repo
        return Response.json(200, {"url": f"{self.url}/datasets/{repo_id}", "name": repo_id})

    def _info(self, repo_id: str, revision: str) -> Response:
        repo = self._repo(repo_id)
        commit = repo.resolve(revision)
        siblings = [{"rfilename": path} for path in sorted(commit.files)]
        return Response.json(200, {"id": repo_id, "sha": commit.sha, "private": repo.private, "siblings": siblings})

    def _paths_info(self, repo: Repo, revision: str, request: Request) -> Response:
        if request.header("Content-Type") != "application/x-www-form-urlencoded":
            raise _Invalid(400, f"expected a form, found {request.header('Content-Type')!r}")
        form = parse_qs(request.body.decode(), keep_blank_values=True)
        _only(form, {"paths", "expand"})
        files = repo.resolve(revision).files
        found: list[dict[str, Any]] = []
        for path in form.get("paths", []):
            if path in files:
                found.append({"type": "file", "path": path, "oid": git_sha1(files[path]), "size": len(files[path])})
            elif any(name.startswith(path + "/") for name in files):
                found.append({"type": "directory", "path": path, "oid": hashlib.sha1(path.encode()).hexdigest()})
        return Response.json(200, found)

    def _preupload(self, repo: Repo, revision: str, request: Request) -> Response:
        body = _json_object(request)
        _only(body, {"files", "gitIgnore"})
        files = repo.resolve(revision).files
        answers = []
        for entry in _list(body.get("files"), "files"):
            _only(entry, {"path", "sample", "size"})
            path, size = entry.get("path"), entry.get("size")
            if not isinstance(path, str) or not isinstance(size, int) or size < 0:
                raise _Invalid(400, f"files: expected a path and a size, found {entry!r}")
            if len(_base64(entry.get("sample"), "sample")) > 512:
                raise _Invalid(400, "sample: at most the first 512 bytes of the file")
            oid = git_sha1(files[path]) if path in files else None
            answers.append({"path": path, "uploadMode": "regular", "shouldIgnore": False, "oid": oid})
        return Response.json(200, {"files": answers, "commitOid": repo.resolve(revision).sha})

    def _commit_call(self, repo_id: str, repo: Repo, revision: str, request: Request) -> Response:
        if request.header("Content-Type") != "application/x-ndjson":
            raise _Invalid(400, f"expected NDJSON, found {request.header('Content-Type')!r}")
        if revision not in repo.branches:
            raise _Invalid(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        try:
            lines = [json.loads(line) for line in request.body.decode().splitlines() if line.strip()]
        except ValueError as exc:
            raise _Invalid(400, f"NDJSON: {exc}") from None
        if not lines or not isinstance(lines[0], dict) or lines[0].get("key") != "header":
            raise _Invalid(400, "the first NDJSON line must be the header")
        header = lines[0].get("value")
        if not isinstance(header, dict):
            raise _Invalid(400, "header: expected an object")
        _only(header, {"summary", "description", "parentCommit"})
        summary = header.get("summary")
        if not isinstance(summary, str) or not summary:
            raise _Invalid(400, "header.summary: a commit needs a summary")
        parent = repo.head(revision)
        expected = header.get("parentCommit")
        if expected is not None and expected != parent.sha:
            raise _Invalid(412, f"A commit has happened since {expected}: {revision} is now at {parent.sha}")
        files = dict(parent.files)
        for line in lines[1:]:
            if not isinstance(line, dict) or line.get("key") != "file":
                raise _Invalid(400, f"this server takes regular files only, found {line!r:.80}")
            value = line.get("value")
            if not isinstance(value, dict):
                raise _Invalid(400, "file: expected an object")
            _only(value, {"content", "path", "encoding"})
            path = value.get("path")
            if value.get("encoding") != "base64" or not isinstance(path, str) or not path:
                raise _Invalid(400, f"file: expected a path and base64 content, found {value!r:.80}")
            files[path] = _base64(value.get("content"), f"file {path}")
        commit = self._commit(repo, parent.sha, summary, str(header.get("description", "")), files)
        repo.branches[revision] = commit.sha
        url = f"{self.url}/datasets/{repo_id}/commit/{commit.sha}"
        return Response.json(200, {"success": True, "commitOid": commit.sha, "commitUrl": url, "hookOutput": ""})

    @staticmethod
    def _commit(repo: Repo, parent: str | None, summary: str, description: str, files: dict[str, bytes]) -> Commit:
        digest = hashlib.sha1(f"{parent}\n{summary}\n{len(repo.commits)}".encode(), usedforsecurity=False)
        for path in sorted(files):
            digest.update(f"{path}\0{git_sha1(files[path])}\n".encode())
        commit = Commit(digest.hexdigest(), parent, summary, description, files)
        repo.commits[commit.sha] = commit
        return commit


def _error(invalid: _Invalid) -> Response:
    """The Hub's error shape: an `error` message in the body, repeated in X-Error-Message, and an X-Error-Code."""
    headers = {"X-Error-Message": str(invalid)}
    if invalid.code is not None:
        headers["X-Error-Code"] = invalid.code
    return Response.json(invalid.status, {"error": str(invalid)}, headers)


def _json_object(request: Request) -> dict[str, Any]:
    if not (request.header("Content-Type") or "").startswith("application/json") or not isinstance(request.json, dict):
        raise _Invalid(400, "expected a JSON object")
    return request.json


def _only(body: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _Invalid(400, f"unknown fields: {', '.join(unknown)}")


def _list(value: object, name: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise _Invalid(400, f"{name}: expected a list of objects")
    return value


def _base64(value: object, name: str) -> bytes:
    if not isinstance(value, str):
        raise _Invalid(400, f"{name}: expected base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise _Invalid(400, f"{name}: not base64") from None
