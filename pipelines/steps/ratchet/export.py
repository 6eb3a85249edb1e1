"""Export: an algorithm's code and data files read from the source, with generic names made the destination's.

Where things are under the source prefix (gs://, s3:// or file://):

- data files: `data://.my/<collection>/<file>` is read from `<source>/data/<collection>/<file>` (`<algo>` as the
  algorithm) and lands, as the seed put it, in the algorithm's own collection: `<algorithm>/<file name>`;
- code: `code_path`/`code` when given (a `data://.my/...` URI as above, a path relative to the source, or a full
  URI), else the folder `<source>/algorithms/<name>/`. A folder is taken whole; a `.tar.gz`/`.tgz` is unpacked
  (files and folders only, no path may leave the tree); any other single file is the whole tree.

Code comes from whoever wrote the trigger, so it is read within `CodeLimits`, counted as it is read: an archive is
inflated as a stream and refused at the first byte over a limit, never unpacked whole first.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from pipelines.steps.errors import StepError
from pipelines.steps.objects import ObjectStore, SourceObject, store_for
from pipelines.steps.ratchet.clusters import ExportedFile
from pipelines.steps.ratchet.placeholders import (
    ALGO_PLACEHOLDER,
    Names,
    called_algorithms,
    data_files_of,
    data_parts,
    has_placeholders,
    rewrite_text,
)
from pipelines.steps.ratchet.workflow import Algorithm

MAX_FILE_BYTES = 256 * 1024 * 1024  # a file is held in memory on its way to the destination
_ARCHIVES = (".tar.gz", ".tgz")
_MiB = 1024 * 1024
# What a tar may hold besides its files' bytes, per file: its header, padding, a long name's or pax headers.
_TAR_OVERHEAD = 4096
_RATIO_AFTER = _MiB  # the compression ratio is judged once this much is inflated: tiny archives compress oddly


class ExportError(Exception):
    """An algorithm's code or data could not be read from the source."""


@dataclass(frozen=True)
class CodeLimits:
    """Ceilings on an algorithm's code (a folder, a file, or an archive's content), checked while it is read."""

    max_bytes: int = 64 * _MiB  # all its files together, unpacked
    max_files: int = 2000
    max_file_bytes: int = 32 * _MiB
    max_ratio: int = 200  # bytes inflated per byte of an archive (a zip bomb's is about 1000)


DEFAULT_CODE_LIMITS = CodeLimits()


@dataclass(frozen=True)
class Export:
    algorithm: str
    files: tuple[ExportedFile, ...]
    calls: frozenset[str]  # algorithms its code calls through algo://.my/<name>
    receipts: tuple[dict[str, Any], ...]


def export_algorithm(
    algorithm: Algorithm,
    source: str,
    stores: Mapping[str, ObjectStore],
    names: Names,
    limits: CodeLimits = DEFAULT_CODE_LIMITS,
) -> Export:
    """Read the algorithm's files from `source` and rewrite their generic names to `names`'."""
    try:
        return _export(algorithm, source, stores, names, limits)
    except StepError as exc:  # the stores' "no such object" and scheme errors
        raise ExportError(str(exc)) from exc
    except (OSError, EOFError, zlib.error, tarfile.TarError) as exc:  # gzip's own errors are not all OSErrors
        raise ExportError(f"{algorithm.name}: cannot read from {source}: {type(exc).__name__}: {exc}") from exc


def _export(
    algorithm: Algorithm, source: str, stores: Mapping[str, ObjectStore], names: Names, limits: CodeLimits
) -> Export:
    code_uri = code_location(algorithm, source)
    files: list[ExportedFile] = []
    receipts: list[dict[str, Any]] = []
    calls: set[str] = set()
    landed = data_files_of(algorithm.name, algorithm.data_files)
    for path, data, uri in _code_files(code_uri, stores, limits):
        if has_placeholders(text := _text(data)):
            calls |= called_algorithms(text)
            data = rewrite_text(text, algorithm.name, names, landed).encode()
        files.append(ExportedFile(kind="code", path=path, data=data))
        receipts.append({"kind": "code", "source": uri, "destination": path, "bytes": len(data)})
    for generic in algorithm.data_files:
        collection, path = landed[generic.replace(ALGO_PLACEHOLDER, algorithm.name)]
        uri = data_location(source, *data_parts(generic, algorithm.name))
        items = list(store_for(uri, stores).list(uri))
        if len(items) != 1:
            raise ExportError(f"{algorithm.name}: {generic}: expected one object at {uri}, found {len(items)}")
        data = _read(store_for(uri, stores), items[0], MAX_FILE_BYTES)
        name = names.data_name(collection, path)
        files.append(ExportedFile(kind="data", path=path, data=data, collection=collection, name=name))
        receipts.append({"kind": "data", "source": items[0].uri, "destination": name, "bytes": len(data)})
    calls.discard(algorithm.name)
    return Export(algorithm.name, tuple(files), frozenset(calls), tuple(receipts))


def code_location(algorithm: Algorithm, source: str) -> str:
    if algorithm.code is None:
        return join(source, f"algorithms/{algorithm.name}/")
    if algorithm.code.startswith("data://.my/"):
        collection, path = data_parts(algorithm.code, algorithm.name)
        return data_location(source, collection, path)
    if urlsplit(algorithm.code).scheme in ("gs", "s3", "file"):
        return algorithm.code
    return join(source, algorithm.code)


def data_location(source: str, collection: str, path: str) -> str:
    return join(source, f"data/{collection}/{path}")


def join(source: str, relative: str) -> str:
    if not source:
        raise ExportError(f"{relative}: no source to read it from: set the `source` parameter")
    return source.rstrip("/") + "/" + relative.lstrip("/")


def _code_files(uri: str, stores: Mapping[str, ObjectStore], limits: CodeLimits) -> list[tuple[str, bytes, str]]:
    store = store_for(uri, stores)
    if not uri.endswith("/") and uri.endswith(_ARCHIVES):
        items = list(store.list(uri))
        if not items:
            raise ExportError(f"no code at {uri}")
        with store.open(items[0]) as stream:
            return _unpacked(stream, items[0].uri, _Tally(items[0].uri, limits))
    tally, files = _Tally(uri, limits), []
    for item in store.list(uri):
        tally.add(item.name, item.size)
        files.append((item.name, _read(store, item, limits.max_file_bytes), item.uri))
    if not files:
        raise ExportError(f"no code at {uri}")
    return files


def _unpacked(archive: BinaryIO, uri: str, tally: _Tally) -> list[tuple[str, bytes, str]]:
    files: list[tuple[str, bytes, str]] = []
    # A stream ("r|"): members are read in order and only once, so nothing but the current one is held.
    with tarfile.open(fileobj=_Inflated(archive, uri, tally.limits), mode="r|") as tar:
        for member in tar:
            path = PurePosixPath(member.name)
            if path.is_absolute() or ".." in path.parts:
                raise ExportError(f"{uri}: {member.name!r} would land outside the algorithm's tree")
            if member.isdir():
                continue  # folders are implied by their files' paths
            if not member.isfile():
                kind = "link" if member.issym() or member.islnk() else "device or pipe"
                raise ExportError(f"{uri}: expected only files and folders, found a {kind} at {member.name!r}")
            tally.add(member.name, member.size)
            handle = tar.extractfile(member)
            if handle is not None:
                files.append((path.as_posix().removeprefix("./"), handle.read(), f"{uri}#{member.name}"))
    if not files:
        raise ExportError(f"{uri}: the archive holds no files")
    return files


class _Tally:
    """The files of one code tree counted as they come, refusing the first that takes it over its limits."""

    def __init__(self, uri: str, limits: CodeLimits) -> None:
        self.uri, self.limits = uri, limits
        self.files = self.bytes = 0

    def add(self, name: str, size: int) -> None:
        self.files, self.bytes = self.files + 1, self.bytes + size
        limits = self.limits
        if self.files > limits.max_files:
            raise ExportError(f"{self.uri}: expected at most {limits.max_files} files of code, found more ({name})")
        if size > limits.max_file_bytes:
            raise ExportError(f"{self.uri}: expected files of at most {limits.max_file_bytes} bytes, {name} has {size}")
        if self.bytes > limits.max_bytes:
            raise ExportError(f"{self.uri}: expected at most {limits.max_bytes} bytes of code, found more by {name}")


class _Inflated(io.RawIOBase):
    """An archive's bytes inflated as tarfile reads them, refused past the limits' total or compression ratio."""

    def __init__(self, archive: BinaryIO, uri: str, limits: CodeLimits) -> None:
        super().__init__()
        self._compressed = _Counted(archive)
        self._gzip = gzip.GzipFile(fileobj=self._compressed, mode="rb")
        self._uri, self._limits = uri, limits
        self._ceiling = limits.max_bytes + limits.max_files * _TAR_OVERHEAD
        self._inflated = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        # Never inflate more than one byte past the ceiling, whatever size tarfile asks for (a pax header's own).
        room = self._ceiling - self._inflated + 1
        data = self._gzip.read(room if size < 0 else min(size, room))
        self._inflated += len(data)
        if self._inflated > self._ceiling:
            raise ExportError(f"{self._uri}: expected at most {self._ceiling} bytes once inflated, found more")
        ratio = self._inflated / max(self._compressed.count, 1)
        if self._inflated > _RATIO_AFTER and ratio > self._limits.max_ratio:
            raise ExportError(
                f"{self._uri}: expected at most {self._limits.max_ratio} bytes inflated per byte, found {ratio:.0f} "
                f"({self._inflated} from the first {self._compressed.count})"
            )
        return data


class _Counted(io.RawIOBase):
    """A stream that counts the bytes read from it."""

    def __init__(self, stream: BinaryIO) -> None:
        super().__init__()
        self._stream = stream
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        data = self._stream.read(size)
        self.count += len(data)
        return data


def _read(store: ObjectStore, item: SourceObject, limit: int) -> bytes:
    if item.size > limit:
        raise ExportError(f"{item.uri}: expected at most {limit} bytes, found {item.size}")
    with store.open(item) as stream:
        data = stream.read(limit + 1)  # the listing's size may be stale: never more than the limit is held
    if len(data) > limit:
        raise ExportError(f"{item.uri}: expected at most {limit} bytes, found more than the listing said")
    return data


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return ""  # binary (a model file): copied as it is
