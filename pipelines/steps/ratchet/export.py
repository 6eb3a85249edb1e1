"""Export: an algorithm's code and data files read from the source, with generic names made the destination's.

Where things are under the source prefix (gs://, s3:// or file://):

- data files: `data://.my/<collection>/<file>` is `<source>/data/<collection>/<file>` (`<algo>` as the algorithm);
- code: `code_path`/`code` when given (a `data://.my/...` URI as above, a path relative to the source, or a full
  URI), else the folder `<source>/algorithms/<name>/`. A folder is taken whole; a `.tar.gz`/`.tgz` is unpacked
  (regular files only, no path may leave the tree); any other single file is the whole tree.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from pipelines.steps.contract import StepError
from pipelines.steps.objects import ObjectStore, SourceObject, store_for
from pipelines.steps.ratchet.clusters import ExportedFile
from pipelines.steps.ratchet.placeholders import Names, called_algorithms, data_parts, has_placeholders, rewrite_text
from pipelines.steps.ratchet.workflow import Algorithm

MAX_FILE_BYTES = 256 * 1024 * 1024  # a file is held in memory on its way to the destination
_ARCHIVES = (".tar.gz", ".tgz")


class ExportError(Exception):
    """An algorithm's code or data could not be read from the source."""


@dataclass(frozen=True)
class Export:
    algorithm: str
    files: tuple[ExportedFile, ...]
    calls: frozenset[str]  # algorithms its code calls through algo://.my/<name>
    receipts: tuple[dict[str, Any], ...]


def export_algorithm(algorithm: Algorithm, source: str, stores: Mapping[str, ObjectStore], names: Names) -> Export:
    """Read the algorithm's files from `source` and rewrite their generic names to `names`'."""
    try:
        return _export(algorithm, source, stores, names)
    except StepError as exc:  # the stores' "no such object" and scheme errors
        raise ExportError(str(exc)) from exc
    except (OSError, tarfile.TarError) as exc:
        raise ExportError(f"{algorithm.name}: cannot read from {source}: {type(exc).__name__}: {exc}") from exc


def _export(algorithm: Algorithm, source: str, stores: Mapping[str, ObjectStore], names: Names) -> Export:
    code_uri = code_location(algorithm, source)
    files: list[ExportedFile] = []
    receipts: list[dict[str, Any]] = []
    calls: set[str] = set()
    for path, data, uri in _code_files(code_uri, stores):
        if has_placeholders(text := _text(data)):
            calls |= called_algorithms(text)
            data = rewrite_text(text, algorithm.name, names).encode()
        files.append(ExportedFile(kind="code", path=path, data=data))
        receipts.append({"kind": "code", "source": uri, "destination": path, "bytes": len(data)})
    for generic in algorithm.data_files:
        collection, path = data_parts(generic, algorithm.name)
        uri = data_location(source, collection, path)
        items = list(store_for(uri, stores).list(uri))
        if len(items) != 1:
            raise ExportError(f"{algorithm.name}: {generic}: expected one object at {uri}, found {len(items)}")
        data = _read(store_for(uri, stores), items[0])
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


def _code_files(uri: str, stores: Mapping[str, ObjectStore]) -> list[tuple[str, bytes, str]]:
    store = store_for(uri, stores)
    items = list(store.list(uri))
    if not items:
        raise ExportError(f"no code at {uri}")
    if not uri.endswith("/") and uri.endswith(_ARCHIVES):
        return _unpacked(_read(store, items[0]), items[0].uri)
    return [(item.name, _read(store, item), item.uri) for item in items]


def _unpacked(archive: bytes, uri: str) -> list[tuple[str, bytes, str]]:
    files: list[tuple[str, bytes, str]] = []
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue  # folders are implied; links and devices are refused by leaving them out
            path = PurePosixPath(member.name)
            if path.is_absolute() or ".." in path.parts:
                raise ExportError(f"{uri}: {member.name!r} would land outside the algorithm's tree")
            if member.size > MAX_FILE_BYTES:
                raise ExportError(f"{uri}: {member.name} is {member.size} bytes, over {MAX_FILE_BYTES}")
            handle = tar.extractfile(member)
            if handle is not None:
                files.append((path.as_posix().removeprefix("./"), handle.read(), f"{uri}#{member.name}"))
    if not files:
        raise ExportError(f"{uri}: the archive holds no files")
    return files


def _read(store: ObjectStore, item: SourceObject) -> bytes:
    if item.size > MAX_FILE_BYTES:
        raise ExportError(f"{item.uri}: {item.size} bytes, over the {MAX_FILE_BYTES} a file may have")
    with store.open(item) as stream:
        return stream.read()


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return ""  # binary (a model file): copied as it is
