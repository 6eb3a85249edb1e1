"""The seed's generic names, `data://.my/<algo>/...` and `algo://.my/<name>`, rewritten to a destination's names."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any, Protocol

ALGO_PLACEHOLDER = "<algo>"
# `<algo>` may sit anywhere in the path; anything else stops at whitespace, quotes and brackets (code, JSON, prose).
_DATA = re.compile(r"data://\.my/(?P<path>(?:<algo>|[^\s\"'<>()\[\]{}\\,;])+)")
_ALGO = re.compile(r"algo://\.my/(?P<name>[A-Za-z][A-Za-z0-9_]*)(?:/(?P<version>[A-Za-z0-9_.]+))?")


class Names(Protocol):
    """How a destination names data files and algorithms."""

    def data_name(self, collection: str, path: str) -> str:
        """The destination's URI of the data file `path` in `collection`."""
        ...

    def algo_name(self, name: str, version: str | None) -> str:
        """The destination's URI of the algorithm `name`."""
        ...


def data_parts(uri: str, algorithm: str) -> tuple[str, str]:
    """('collection', 'path/in/it') of a `data://.my/...` URI, with `<algo>` as `algorithm`."""
    rest = uri.removeprefix("data://.my/").replace(ALGO_PLACEHOLDER, algorithm)
    collection, _, path = rest.partition("/")
    return collection, path


def data_files_of(algorithm: str, data_files: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Where each of an algorithm's data files lands, keyed by its generic name with `<algo>` filled in.

    As the seed put them: in the collection named after the algorithm, under the file's own name, whatever collection
    the workflow read it from (`data://.my/artifacts/willow.jpeg` of `BoundingBoxOnImage` lands at
    `BoundingBoxOnImage/willow.jpeg`, which its payloads name `data://.my/<algo>/willow.jpeg`).
    """
    landed = {}
    for uri in data_files:
        _collection, path = data_parts(uri, algorithm)
        landed[uri.replace(ALGO_PLACEHOLDER, algorithm)] = (algorithm, PurePosixPath(path).name)
    return landed


def rewrite_text(text: str, algorithm: str, names: Names, files: Mapping[str, tuple[str, str]] | None = None) -> str:
    """`text` with every generic data and algorithm name replaced by the destination's.

    `algorithm` is whose text it is (its code, data paths and test payload; the entrypoint's, for benchmark tests):
    `<algo>` becomes its name, as in the seed. `files` (from `data_files_of`) are its data files: named as the
    workflow lists them, they become where they landed, the only place the destination has them.
    """

    def data(match: re.Match[str]) -> str:
        uri = match.group(0).replace(ALGO_PLACEHOLDER, algorithm)
        collection, path = (files or {}).get(uri) or data_parts(uri, algorithm)
        return names.data_name(collection, path)

    def algo(match: re.Match[str]) -> str:
        return names.algo_name(match.group("name"), match.group("version"))

    return _ALGO.sub(algo, _DATA.sub(data, text))


def rewrite_value(value: Any, algorithm: str, names: Names, files: Mapping[str, tuple[str, str]] | None = None) -> Any:
    """A JSON value (a payload) with `rewrite_text` applied to every string in it, keys left alone."""
    if isinstance(value, str):
        return rewrite_text(value, algorithm, names, files)
    if isinstance(value, Mapping):
        return {key: rewrite_value(item, algorithm, names, files) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [rewrite_value(item, algorithm, names, files) for item in value]
    return value


def called_algorithms(text: str) -> set[str]:
    """Names of the algorithms `text` calls as `algo://.my/<name>`: how the seed's algorithms call each other."""
    return {match.group("name") for match in _ALGO.finditer(text)}


def has_placeholders(text: str) -> bool:
    return "data://.my/" in text or "algo://.my/" in text
