"""BlobStore on a local folder, with the same create-only and generation semantics as Cloud Storage."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from relay.errors import BlobNotFoundError, PreconditionFailedError, StorageUnavailableError
from relay.ports import Blob, BlobInfo

_LOCK_NAME = ".relay-blobstore.lock"


def local_path(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


class LocalBlobStore:
    """Paths or file:// URIs. A generation is the file's mtime in ns, kept strictly rising per write.

    Conditional writes across processes are serialised by one flock on `lock_dir`.
    """

    def __init__(self, lock_dir: str | Path) -> None:
        self._lock_path = Path(lock_dir) / _LOCK_NAME

    def read(self, uri: str, *, generation: int | None = None) -> Blob:
        path = local_path(uri)
        try:
            with path.open("rb") as handle:
                data = handle.read()
                current = os.fstat(handle.fileno()).st_mtime_ns
        except FileNotFoundError as exc:
            raise BlobNotFoundError(f"{uri}: no such file") from exc
        if generation is not None and generation != current:
            raise BlobNotFoundError(f"{uri}: no version at generation {generation} (now {current})")
        return Blob(data=data, generation=current)

    def stat(self, uri: str, *, generation: int | None = None) -> BlobInfo:
        """A file has no content type or metadata of its own; only its current version exists."""
        try:
            info = local_path(uri).stat()
        except FileNotFoundError as exc:
            raise BlobNotFoundError(f"{uri}: no such file") from exc
        if generation is not None and generation != info.st_mtime_ns:
            raise BlobNotFoundError(f"{uri}: no version at generation {generation} (now {info.st_mtime_ns})")
        return BlobInfo(
            size=info.st_size, generation=info.st_mtime_ns, updated=datetime.fromtimestamp(info.st_mtime, UTC)
        )

    def write(self, uri: str, data: bytes, *, if_generation_match: int | None = None) -> int:
        path = local_path(uri)
        with self._locked():
            current = _generation(path)
            if if_generation_match is not None and if_generation_match != current:
                raise PreconditionFailedError(f"{uri}: expected generation {if_generation_match}, found {current}")
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write aside and rename, so readers never see half a record.
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            written = os.stat(temporary).st_mtime_ns
            if written <= current:
                written = current + 1
                os.utime(temporary, ns=(written, written))
            os.replace(temporary, path)
            return written

    def delete(self, uri: str, *, if_generation_match: int | None = None) -> None:
        path = local_path(uri)
        with self._locked():
            current = _generation(path)
            if current == 0:
                return
            if if_generation_match is not None and if_generation_match != current:
                raise PreconditionFailedError(f"{uri}: expected generation {if_generation_match}, found {current}")
            path.unlink()

    def list(self, prefix: str) -> Iterator[str]:
        """Files under the folder `prefix` names (or beside it, sharing its start); a file:// prefix lists URIs."""
        path = local_path(prefix)
        folder = path if prefix.endswith("/") or path.is_dir() else path.parent
        scheme = "file://" if prefix.startswith("file://") else ""
        found = sorted(str(p) for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        return iter(scheme + p for p in found if p.startswith(str(path)))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self._lock_path.parent.mkdir(parents=True, exist_ok=True)
            with self._lock_path.open("a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                yield
        except OSError as exc:
            raise StorageUnavailableError(f"{self._lock_path}: local folder store failed: {exc}") from exc


def _generation(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0
