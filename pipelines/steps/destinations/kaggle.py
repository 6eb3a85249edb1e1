"""Destination: a Kaggle dataset, created or given a new version, through kagglesdk (the `kaggle` package's client)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

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

API = "https://api.kaggle.com"
WEB = "https://www.kaggle.com"
# A blob PUT carries a whole object: allow a slow link, never hang forever (seconds to connect, between reads).
UPLOAD_TIMEOUT = (30, 600)

T = TypeVar("T")


@dataclass(frozen=True)
class _Spooled:
    item: SourceObject
    path: str  # where the file goes in the dataset: folders are kept, as `directories` of the request
    file: Path
    bytes: int
    checksums: Checksums


@dataclass
class _Folder:
    tokens: list[str] = field(default_factory=list)
    folders: dict[str, _Folder] = field(default_factory=dict)


class KaggleDestination:
    """One push makes one dataset version, holding exactly the objects pushed: Kaggle versions are snapshots.

    The username and key go to the client object only (HTTP Basic), never to `os.environ` or a kaggle.json.
    `send` spools each object into a private temporary folder; `close` uploads the blobs, then creates the dataset
    (when absent) or a new version, and removes the folder whatever happens. `check` answers ABSENT: Kaggle lists
    file names and sizes but states no checksum a re-run could compare, so every push makes a version. `overwrite`
    changes nothing: a new version replaces no file of the earlier ones, which stay downloadable. Every request,
    kagglesdk's and the blob uploads, goes through `egress`: to checked addresses only, with no proxy.
    """

    def __init__(
        self,
        dataset: str,
        *,
        username: str,
        key: str,
        title: str | None = None,
        licence: str | None = None,
        endpoint: str = API,
        version_notes: str | None = None,
        public: bool = False,
        temp_root: str | None = None,
        egress: Egress = STRICT,
    ) -> None:
        owner, slug = owned_name(dataset, "dataset", "owner/slug", "kaggle")
        self._owner, self._slug = owner, slug
        self._username, self._key = username, key
        self._title, self._licence = title, licence
        # Every request carries the username and key (HTTP Basic).
        self._endpoint = credentials_endpoint(endpoint, "kaggle")
        self._egress = egress
        self._notes = version_notes
        self._public = public
        self._temp_root = temp_root
        web = WEB if self._endpoint == API else self._endpoint
        self.url = f"{web}/datasets/{owner}/{slug}"
        self._exists: bool | None = None
        self._problem: StepError | None = None
        self._scratch = spool.Spool("relay-kaggle-", temp_root)
        self._spooled: list[_Spooled] = []
        self._failed = 0

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], *, temp_root: str | None = None, egress: Egress = STRICT
    ) -> KaggleDestination:
        known_options(
            options,
            frozenset({"dataset", "username", "key", "title", "licence", "endpoint", "version_notes", "public"}),
        )
        public = options.get("public", False)
        if not isinstance(public, bool):
            raise StepError(400, f"destination.public: expected true or false for kaggle, found {public!r}")
        return cls(
            required(options, "dataset", "kaggle"),
            username=required(options, "username", "kaggle"),
            key=required(options, "key", "kaggle"),
            title=optional(options, "title", "kaggle"),
            licence=optional(options, "licence", "kaggle"),
            endpoint=optional(options, "endpoint", "kaggle") or API,
            version_notes=optional(options, "version_notes", "kaggle"),
            public=public,
            temp_root=temp_root,
            egress=egress,
        )

    # --- the Destination protocol ----------------------------------------------------------------------

    def check(self, item: SourceObject, checksums: Checksums) -> Presence:
        self._dataset_exists()  # fails fast (credentials, metadata for a new dataset) before any byte is read
        return Presence.ABSENT

    def send(self, item: SourceObject, stream: HashingReader, *, overwrite: bool) -> Receipt:
        try:
            path = _dataset_path(item)
            if any(s.path == path for s in self._spooled):
                raise StepError(409, f"{item.uri}: another object of this push is already {path} in {self.url}")
            target = self._spool_folder() / f"{len(self._spooled):06d}"  # never the object's name: no path tricks
            try:
                spool.write(stream, target)
                check_read(item, stream)
            except BaseException:
                target.unlink(missing_ok=True)
                raise
        except BaseException:
            self._failed += 1
            raise
        spooled = _Spooled(item, path, target, stream.bytes, stream.checksums)
        self._spooled.append(spooled)
        return replace(self._receipt(spooled), pending=True)

    def close(self, message: str, *, failed: int = 0) -> list[Receipt]:
        try:
            if not self._spooled:
                return []
            failed = max(failed, self._failed)  # failures before `send` (a select, a source read) count too
            if failed:
                # A version holds only what is uploaded with it: publishing the rest would drop the failed files.
                raise StepError(
                    424,
                    f"{self.url}: no version published: {failed} object(s) of this push failed, and a Kaggle "
                    "version holds only the files pushed with it",
                )
            exists = self._dataset_exists()
            with self._client() as kaggle:
                entries = [(s.path, self._upload(kaggle, s)) for s in self._spooled]
                files, directories = _layout(entries)
                if exists:
                    response = self._api("new version", lambda: self._new_version(kaggle, files, directories, message))
                else:
                    response = self._api("create", lambda: self._create(kaggle, files, directories))
            error, status = response.error, response.status
            if error or status.lower() != "ok":
                # Its status and error text are Kaggle's words: neither is shown.
                action = "a new version" if exists else "the dataset"
                raise StepError(502, f"{self.url}: Kaggle refused {action} (its status and error not shown)")
            # The response states no version number (the version is built asynchronously), so none is claimed.
            return [self._receipt(s) for s in self._spooled]
        finally:
            self._discard()

    # --- Kaggle calls ----------------------------------------------------------------------------------

    @contextmanager
    def _client(self) -> Iterator[Any]:
        from kagglesdk import KaggleClient, KaggleEnv

        with KaggleClient(env=KaggleEnv.PROD, username=self._username, password=self._key) as client:
            http = client.http_client()
            # Private attributes, no public equivalent: pinned by tests/pipelines/test_library_contracts.py.
            # kagglesdk has no endpoint URL setting, only KaggleEnv's fixed hosts (api.kaggle.com, localhost:7777...);
            # for PROD it calls `<_endpoint>/v1/<service>/<method>`, so another host is set on that attribute.
            http._endpoint = self._endpoint
            # kagglesdk prefers a token from KAGGLE_API_TOKEN or ~/.kaggle/access_token to the username and key it
            # is given: the configured identity must be the one that publishes, so the session's auth is pinned.
            http._session.auth = (self._username, self._key)
            # Its session dials checked addresses only, redirects included, and takes no proxy from the environment.
            self._egress.mount(http._session)
            yield client

    def _api(self, what: str, call: Callable[[], T]) -> T:
        import requests

        try:
            return call()
        except requests.HTTPError as exc:
            # The status line only, and not chained: kagglesdk makes the answer's message the exception's.
            response = exc.response
            said = status_line(response.status_code) if response is not None else "no status"
            status = response.status_code if response is not None else 0
            raise StepError(_status(status), f"{self.url}: Kaggle {what} failed: {said}") from None
        except requests.RequestException as exc:
            raise StepError(502, f"{self.url}: Kaggle {what} failed: {client_failure(exc)}") from None

    def _dataset_exists(self) -> bool:
        if self._problem is not None:
            raise StepError(self._problem.status, str(self._problem))
        if self._exists is None:
            try:
                self._exists = self._lookup()
                if not self._exists:
                    self._require_metadata()
            except StepError as problem:
                self._problem = problem
                raise
        return self._exists

    def _lookup(self) -> bool:
        import requests
        from kagglesdk.datasets.types.dataset_api_service import ApiGetDatasetStatusRequest

        request = ApiGetDatasetStatusRequest()
        request.owner_slug = self._owner
        request.dataset_slug = self._slug
        with self._client() as kaggle:

            def status() -> bool:
                try:
                    kaggle.datasets.dataset_api_client.get_dataset_status(request)
                except requests.HTTPError as exc:
                    if exc.response is not None and exc.response.status_code == 404:
                        return False
                    raise
                return True

            return self._api("dataset status", status)

    def _require_metadata(self) -> None:
        """A new dataset needs a title and a licence; Kaggle's own client checks these lengths before uploading."""
        if self._title is None or self._licence is None:
            raise StepError(400, f"{self.url}: no such dataset; creating it needs destination.title and .licence")
        for name, value in (("title", self._title), ("dataset slug", self._slug)):
            if not 6 <= len(value) <= 50:
                raise StepError(400, f"{self.url}: the {name} must be 6 to 50 characters, found {len(value)}")

    def _upload(self, kaggle: Any, spooled: _Spooled) -> str:
        """One blob: a start call for an upload URL and token, then a PUT of the bytes; returns the token."""
        import requests
        from kagglesdk.blobs.types.blob_api_service import ApiBlobType, ApiStartBlobUploadRequest

        request = ApiStartBlobUploadRequest()
        request.type = ApiBlobType.DATASET
        request.name = PurePosixPath(spooled.path).name
        request.content_length = spooled.bytes
        request.content_type = spooled.item.content_type
        start = self._api(f"upload of {spooled.path}", lambda: kaggle.blobs.blob_api_client.start_blob_upload(request))
        # The upload URL is a capability (a signed storage URL): it appears in no message, and no Kaggle credential
        # is sent to it.
        try:
            with self._egress.session() as session, spooled.file.open("rb") as body:
                # requests sends an empty file chunked, which storage may refuse: an empty body is sent as such.
                data = body if spooled.bytes else b""
                response = session.put(start.create_url, data=data, timeout=UPLOAD_TIMEOUT)
        except requests.RequestException as exc:
            raise StepError(502, f"{self.url}: upload of {spooled.path} failed: {type(exc).__name__}") from exc
        if response.status_code not in (200, 201):
            raise StepError(502, f"{self.url}: upload of {spooled.path} failed: HTTP {response.status_code}")
        stored = _stored_checksums(response)
        if spooled.checksums.matches(stored) is False:
            raise StepError(
                502,
                f"{self.url}: {spooled.path} arrived with {stored.describe()}, sent {spooled.checksums.describe()}",
            )
        return str(start.token)

    def _create(self, kaggle: Any, files: list[Any], directories: list[Any]) -> Any:
        from kagglesdk.datasets.types.dataset_api_service import ApiCreateDatasetRequest

        request = ApiCreateDatasetRequest()
        request.owner_slug = self._owner
        request.slug = self._slug
        request.title = self._title
        request.license_name = self._licence
        request.is_private = not self._public
        request.files = files
        request.directories = directories
        return kaggle.datasets.dataset_api_client.create_dataset(request)

    def _new_version(self, kaggle: Any, files: list[Any], directories: list[Any], message: str) -> Any:
        from kagglesdk.datasets.types.dataset_api_service import (
            ApiCreateDatasetVersionRequest,
            ApiCreateDatasetVersionRequestBody,
        )

        body = ApiCreateDatasetVersionRequestBody()
        body.version_notes = self._notes or message
        body.files = files
        body.directories = directories
        request = ApiCreateDatasetVersionRequest()
        request.owner_slug = self._owner
        request.dataset_slug = self._slug
        request.body = body
        return kaggle.datasets.dataset_api_client.create_dataset_version(request)

    # --- the spool ---------------------------------------------------------------------------------------

    def _spool_folder(self) -> Path:
        return self._scratch.folder()

    def _discard(self) -> None:
        self._scratch.discard()
        self._spooled, self._failed = [], 0

    def _receipt(self, spooled: _Spooled) -> Receipt:
        return Receipt(spooled.item.uri, self.url, spooled.bytes, spooled.checksums.describe())


def _dataset_path(item: SourceObject) -> str:
    parts = item.name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise StepError(400, f"{item.uri}: {item.name!r} is no file path a Kaggle dataset can hold")
    return item.name


def _layout(entries: list[tuple[str, str]]) -> tuple[list[Any], list[Any]]:
    """Files at the top of the dataset, and the folders (each with its files and folders) of the upload request."""
    from kagglesdk.datasets.types.dataset_api_service import ApiDatasetNewFile, ApiUploadDirectoryInfo

    root = _Folder()
    for path, token in entries:
        *parents, _ = path.split("/")
        folder = root
        for name in parents:
            folder = folder.folders.setdefault(name, _Folder())
        folder.tokens.append(token)

    def new_files(folder: _Folder) -> list[Any]:
        files = []
        for token in folder.tokens:
            new_file = ApiDatasetNewFile()
            new_file.token = token
            files.append(new_file)
        return files

    def directories(folder: _Folder) -> list[Any]:
        found = []
        for name, inner in sorted(folder.folders.items()):
            directory = ApiUploadDirectoryInfo()
            directory.name = name
            directory.files = new_files(inner)
            directory.directories = directories(inner)
            found.append(directory)
        return found

    return new_files(root), directories(root)


def _stored_checksums(response: Any) -> Checksums:
    """What the storage behind the upload URL says it stored: Cloud Storage's `x-goog-hash` or its JSON resource."""
    stated: dict[str, object] = {}
    for part in response.headers.get("x-goog-hash", "").split(","):
        name, _, value = part.strip().partition("=")  # base64 ends in "=": only the first one separates
        if value:
            stated[name] = value
    if not stated and "json" in response.headers.get("Content-Type", ""):
        try:
            resource = response.json()
        except ValueError:
            resource = None
        if isinstance(resource, dict):
            stated = {"crc32c": resource.get("crc32c"), "md5": resource.get("md5Hash")}
    return Checksums.stated(stated.get("crc32c"), stated.get("md5"))


_status = spool.upstream_status
