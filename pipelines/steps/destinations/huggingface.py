"""Destination: a dataset repository on the Hugging Face Hub (or a private Hub), one commit per push."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from pipelines.steps.checksums import Checksums, HashingReader
from pipelines.steps.destinations import (
    Presence,
    Receipt,
    check_read,
    credentials_endpoint,
    known_options,
    optional,
    owned_name,
    required,
    spool,
)
from pipelines.steps.egress import STRICT, Egress, client_failure, status_line
from pipelines.steps.errors import StepError
from pipelines.steps.objects import SourceObject

HUB = "https://huggingface.co"

T = TypeVar("T")


@dataclass(frozen=True)
class _Spooled:
    path: str  # in the repository
    file: Path
    receipt: Receipt


class HuggingFaceDestination:
    """Objects are spooled by `send`; `close` makes one commit of them all, named by the push's message.

    `check` cannot compare checksums: the Hub states a git SHA-1 (or the SHA-256 of an LFS file), the source a CRC32C
    or MD5. It answers DIFFERENT when the sizes differ, else ABSENT, and `send` compares once the spooled bytes are
    hashed: the same file is skipped, a different one is replaced only with `overwrite`. The commit names as its
    parent the commit those comparisons were made against, so the Hub refuses it if the branch moved meanwhile.
    """

    def __init__(
        self,
        repo: str,
        token: str,
        *,
        endpoint: str | None = None,
        path_in_repo: str = "",
        revision: str | None = None,
        create: bool = False,
        private: bool = True,
        temp_root: str | None = None,
        egress: Egress = STRICT,
    ) -> None:
        owned_name(repo, "repo", "owner/name", "huggingface")
        self._repo = repo
        self._token = token
        # Every request carries the token.
        self._endpoint = HUB if endpoint is None else credentials_endpoint(endpoint, "huggingface")
        self._prefix = path_in_repo.strip("/")
        self._revision = revision
        self._create = create
        self._private = private
        self._temp_root = temp_root
        self._egress = egress
        self._hf: Any = None
        self._base: str | None = None  # the commit the revision pointed at when first looked at
        self._missing = False  # the repository does not exist (yet): `create` makes it in `close`
        self._problem: StepError | None = None
        self._remote: dict[str, Any] = {}  # path -> RepoFile / RepoFolder, or None when absent
        self._scratch = spool.Spool("relay-hf-", temp_root)
        self._spooled: list[_Spooled] = []

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], *, temp_root: str | None = None, egress: Egress = STRICT
    ) -> HuggingFaceDestination:
        known_options(
            options, frozenset({"repo", "token", "endpoint", "path_in_repo", "revision", "create", "private"})
        )
        flags = {name: options.get(name, default) for name, default in (("create", False), ("private", True))}
        for name, value in flags.items():
            if not isinstance(value, bool):
                raise StepError(400, f"destination.{name}: expected true or false for huggingface, found {value!r}")
        return cls(
            required(options, "repo", "huggingface"),
            required(options, "token", "huggingface"),
            endpoint=optional(options, "endpoint", "huggingface"),
            path_in_repo=optional(options, "path_in_repo", "huggingface") or "",
            revision=optional(options, "revision", "huggingface"),
            create=flags["create"],
            private=flags["private"],
            temp_root=temp_root,
            egress=egress,
        )

    @property
    def repo_url(self) -> str:
        return f"hf://datasets/{self._repo}" if self._endpoint == HUB else f"{self._endpoint}/datasets/{self._repo}"

    def destination(self, path: str) -> str:
        if self._endpoint == HUB:
            at = "@" + quote(self._revision, safe="") if self._revision else ""  # as HfFileSystem writes it
            return f"{self.repo_url}{at}/{path}"
        return f"{self.repo_url}/blob/{quote(self._revision or 'main', safe='')}/{quote(path)}"

    # --- the Destination protocol ----------------------------------------------------------------------

    def check(self, item: SourceObject, checksums: Checksums) -> Presence:
        entry = self._entry(self._path(item))
        if entry is None:
            return Presence.ABSENT
        size = entry.lfs.size if getattr(entry, "lfs", None) else getattr(entry, "size", None)
        return Presence.DIFFERENT if size != item.size else Presence.ABSENT

    def send(self, item: SourceObject, stream: HashingReader, *, overwrite: bool) -> Receipt:
        path = self._path(item)
        if any(s.path == path for s in self._spooled):
            raise StepError(409, f"{item.uri}: another object of this push is already {self.destination(path)}")
        entry = self._entry(path)
        target = self._spool_folder() / f"{len(self._spooled):06d}"  # never the object's name: no path tricks
        try:
            sha256, git_sha1 = _spool(stream, target, item.size)
            check_read(item, stream)
            receipt = Receipt(item.uri, self.destination(path), stream.bytes, stream.checksums.describe())
            if entry is not None:
                lfs = getattr(entry, "lfs", None)
                same = lfs.sha256 == sha256 if lfs else getattr(entry, "blob_id", None) == git_sha1
                if same:
                    target.unlink()
                    return replace(receipt, bytes=0, skipped=True)
                if not overwrite:
                    raise StepError(
                        409, f"{item.uri}: a different {path} is at {self.repo_url}; set overwrite to replace it"
                    )
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        self._spooled.append(_Spooled(path, target, receipt))
        return replace(receipt, pending=True)

    def close(self, message: str, *, failed: int = 0) -> list[Receipt]:
        try:
            if not self._spooled:
                return []
            from huggingface_hub import CommitOperationAdd

            hf = self._api()
            if self._missing:
                self._call("create", lambda: hf.create_repo(self._repo, repo_type="dataset", private=self._private))
            operations = [CommitOperationAdd(path_in_repo=s.path, path_or_fileobj=str(s.file)) for s in self._spooled]
            commit = self._call(
                "commit",
                lambda: hf.create_commit(
                    self._repo,
                    operations,
                    commit_message=message,
                    repo_type="dataset",
                    revision=self._revision,
                    parent_commit=self._base,
                ),
            )
            # The Hub's word for the commit: kept when it is a commit id (hex), nothing else of it.
            oid = str(commit.oid)
            version = oid if 7 <= len(oid) <= 64 and all(c in "0123456789abcdef" for c in oid) else None
            return [replace(s.receipt, version=version) for s in self._spooled]
        finally:
            self._discard()

    # --- Hub calls -------------------------------------------------------------------------------------

    def _api(self) -> Any:
        if self._hf is None:
            from huggingface_hub import HfApi

            # huggingface_hub dials out through its own process-wide client: the endpoint is checked here, before
            # the token is sent. Left open: a DNS answer that changes after this check (rebinding), and redirects
            # the client follows (to LFS storage), which carry no token to another host.
            self._egress.check(self._endpoint)
            # The token goes to this client object only: HF_TOKEN and the token file are neither read nor written.
            self._hf = HfApi(endpoint=self._endpoint, token=self._token)
        return self._hf

    def _call(self, what: str, call: Callable[[], T]) -> T:
        import httpx2
        from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

        try:
            return call()
        except OfflineModeIsEnabled as exc:
            raise StepError(
                503, f"{self.repo_url}: {what}: HF_HUB_OFFLINE is set, so huggingface_hub sends nothing"
            ) from exc
        except HfHubHTTPError as exc:
            # The status line only, and not chained: the Hub's message is the server's text, and may quote the request.
            response = exc.response
            status = response.status_code if response is not None else 0
            said = status_line(status)
            raise StepError(
                _status(status), f"{self.repo_url}: {what} failed: {said}{_MEANING.get(status, '')}"
            ) from None
        except httpx2.HTTPError as exc:
            raise StepError(502, f"{self.repo_url}: {what} failed: {client_failure(exc)}") from None

    def _entry(self, path: str) -> Any:
        """What the repository holds at `path` at the base revision, looked up once; None when nothing."""
        if self._problem is not None:
            raise StepError(self._problem.status, str(self._problem))
        try:
            if self._base is None and not self._missing:
                self._look_at_repo()
            if self._missing:
                return None
            if path not in self._remote:
                hf = self._api()
                found = self._call(
                    f"looking up {path}",
                    lambda: hf.get_paths_info(self._repo, [path], repo_type="dataset", revision=self._base),
                )
                self._remote[path] = found[0] if found else None
        except StepError as problem:
            self._problem = problem  # credentials or the repository: every object would fail the same way
            raise
        return self._remote[path]

    def _look_at_repo(self) -> None:
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

        hf = self._api()

        def info() -> Any:
            try:
                return hf.dataset_info(self._repo, revision=self._revision)
            except RevisionNotFoundError:
                raise StepError(404, f"{self.repo_url}: no revision {self._revision!r}") from None
            except RepositoryNotFoundError:
                if not self._create:
                    raise StepError(
                        404, f"{self.repo_url}: no such dataset repository (set destination.create to make it)"
                    ) from None
                return None

        found = self._call("looking up the repository", info)
        if found is None:
            self._missing = True
        else:
            self._base = str(found.sha)

    # --- the spool ---------------------------------------------------------------------------------------

    def _path(self, item: SourceObject) -> str:
        path = f"{self._prefix}/{item.name}" if self._prefix else item.name
        parts = path.split("/")
        if any(part in ("", ".", "..", ".git") for part in parts):
            raise StepError(400, f"{item.uri}: {path!r} is no file path a Hub repository can hold")
        return path

    def _spool_folder(self) -> Path:
        return self._scratch.folder()

    def _discard(self) -> None:
        self._scratch.discard()
        self._spooled = []


def _spool(stream: HashingReader, target: Path, size: int) -> tuple[str, str]:
    """Copy the stream into `target`; the SHA-256 and git blob SHA-1 of what was written, as the Hub states them."""
    sha256 = hashlib.sha256()
    # git hashes "blob <size>\0" then the bytes: the size stated by the source; a short read fails the send anyway.
    git = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)
    spool.write(stream, target, sha256, git)
    return sha256.hexdigest(), git.hexdigest()


_status = spool.upstream_status


# Relay's own explanation of the statuses that mean something specific here.
_MEANING = {
    401: ": the token was refused",
    403: ": the token may not do this",
    412: ": a commit has happened since the repository was looked at; not committed",
}
