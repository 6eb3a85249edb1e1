"""Routes: a finalized data object, seen through a storage notification, becomes a run of a named pipeline.

A route lives in a tenant of the deployment policy:

    routes:
      - id: assay-csv
        bucket: lab-data
        prefix: assay/                 # optional: the object name starts with it
        glob: "*.csv"                  # optional (default *): fnmatch on the name after the prefix; * also matches /
        pipeline: push
        parameters:
          sources: ["{uri}"]
          destination: {kind: gcs, bucket: ml-data, prefix: "incoming/{metadata.batch}"}

Templates are plain substitution, never evaluation: in any string value of `parameters` (mapping keys are left as
written), `{field}` is replaced once by the event's value and the result is never scanned again, so an object
named `{bucket}` stays `{bucket}`. A string that is exactly one placeholder becomes the value itself (`"{size}"`
is the number 1234); anything else is text. `{{` and `}}` are literal braces. Fields: uri, bucket, name,
generation, size, content_type, metadata.KEY (KEY: letters, digits, `_`, `-`, `.`).

A route with a `set` (relay.sets) starts one run per set of objects, not per object; its templates are filled from
the set: objects (the list of its objects' gs:// URIs, marker excluded, in arrival order: only as a whole value),
count, set (the set's id), bucket, folder, marker (the marker's URI, or none).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from relay.chains import Step
from relay.errors import Problem
from relay.templates import fill_all, fill_text, pieces, strings

if TYPE_CHECKING:
    from relay.sets import SetRule

FIELDS = ("uri", "bucket", "name", "generation", "size", "content_type")
SET_FIELDS = ("objects", "count", "set", "bucket", "folder", "marker")
LIST_FIELDS = ("objects",)  # a list: only ever a whole value
METADATA = "metadata."
_METADATA_KEY = re.compile(r"[A-Za-z0-9_.-]{1,128}")


@dataclass(frozen=True)
class Route:
    """Objects gs://`bucket`/`prefix`... whose rest matches `glob` start `pipeline` with `parameters` filled in."""

    id: str
    bucket: str
    pipeline: str
    prefix: str = ""
    glob: str = "*"
    # Excluded from the hash: a mapping cannot be hashed, and the id, bucket and prefix tell routes apart.
    parameters: Mapping[str, Any] = field(default_factory=dict, hash=False)
    set_rule: SetRule | None = None  # collect objects into sets, one run each (relay.sets)
    chain: tuple[Step, ...] = field(default=(), hash=False)  # what runs after the route's run (relay.chains)

    @property
    def location(self) -> str:
        return f"gs://{self.bucket}/{self.prefix}"

    def matches(self, bucket: str, name: str) -> bool:
        if bucket != self.bucket or not name.startswith(self.prefix):
            return False
        # Case-sensitive whatever the platform: object names are. A set's marker is taken whatever the glob.
        return fnmatch.fnmatchcase(name[len(self.prefix) :], self.glob) or self.is_marker(name)

    def is_marker(self, name: str) -> bool:
        return self.set_rule is not None and self.set_rule.is_marker(name)


@dataclass(frozen=True)
class ObjectEvent:
    """What a storage notification says of a finalized object: the values templates may use."""

    bucket: str
    name: str
    generation: int | None
    size: int | None
    content_type: str | None
    metadata: Mapping[str, str]

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.name}"

    def value(self, name: str) -> str | int | None:
        if name.startswith(METADATA):
            return self.metadata.get(name[len(METADATA) :])
        values: dict[str, str | int | None] = {
            "uri": self.uri,
            "bucket": self.bucket,
            "name": self.name,
            "generation": self.generation,
            "size": self.size,
            "content_type": self.content_type,
        }
        return values[name]


@dataclass(frozen=True)
class SetEvent:
    """A closed set, as a set route's templates see it."""

    set: str
    bucket: str
    folder: str
    objects: tuple[str, ...]
    marker: str | None = None

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.folder}"

    def value(self, name: str) -> str | int | list[str] | None:
        values: dict[str, str | int | list[str] | None] = {
            "objects": list(self.objects),
            "count": len(self.objects),
            "set": self.set,
            "bucket": self.bucket,
            "folder": self.folder,
            "marker": self.marker,
        }
        return values[name]


def _route_field(name: str) -> bool:
    return name in FIELDS or (name.startswith(METADATA) and bool(_METADATA_KEY.fullmatch(name[len(METADATA) :])))


_ROUTE_FIELDS = f"{', '.join(FIELDS)}, metadata.KEY"


def _parts(template: str, fields: tuple[str, ...] = FIELDS) -> list[tuple[bool, str]]:
    """`template`'s pieces (relay.templates); an object's fields include metadata.KEY, a set's do not."""
    if fields is FIELDS:
        return list(pieces(template, _route_field, _ROUTE_FIELDS))
    return list(pieces(template, fields.__contains__, ", ".join(fields)))


def template_problems(value: Any, where: str, fields: tuple[str, ...] = FIELDS) -> list[str]:
    """Every template in `value` that cannot be filled whatever the event (or set, with SET_FIELDS): for the
    policy's parse."""
    problems = []
    for path, text in strings(value, where):
        try:
            parts = _parts(text, fields)
        except ValueError as error:
            problems.append(f"{path}: expected {{field}} templates, found {error}")
            continue
        lists = [name for is_field, name in parts if is_field and name in LIST_FIELDS]
        if lists and len(parts) > 1:
            problems.append(f"{path}: expected {{{lists[0]}}} as the whole value (it is a list), found {text!r}")
    return problems


def render(parameters: Mapping[str, Any], event: ObjectEvent | SetEvent) -> tuple[dict[str, Any], list[Problem]]:
    """`parameters` with every placeholder filled from `event`, and a problem for each value the event lacks."""
    problems: list[Problem] = []
    filled = fill_all(parameters, "parameters", lambda text, path: _fill(text, path, event, problems))
    return filled, problems


def _fill(template: str, path: str, event: ObjectEvent | SetEvent, problems: list[Problem]) -> Any:
    parts = _parts(template, SET_FIELDS if isinstance(event, SetEvent) else FIELDS)  # checked when the policy was read
    filled, missing = fill_text(parts, event.value)
    if missing is None:
        return filled
    problems.append(Problem(path, f"the object's {missing} (route template {{{missing}}})", "none in the event"))
    return template
