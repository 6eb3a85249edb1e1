"""Parse and check a trigger document (version 1), before any catalog lookup."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from relay.errors import InvalidTriggerError, Problem
from relay.naming import PIPELINE_NAME, PIPELINE_NAME_RULE, RUN_KEY, RUN_KEY_RULE

MAX_TRIGGER_BYTES = 1024 * 1024
RESERVED_PARAMETERS = ("run_key", "results_uri", "tenant")
TRIGGER_SUFFIXES = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}
Format = Literal["json", "yaml"]

_KEYS = ("version", "pipeline", "parameters", "run_key", "labels")
# Cloud labels (Vertex takes them as they are): lowercase keys starting with a letter, values may be empty.
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}\Z")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}\Z")
_LABEL_KEY_RULE = "a label key: a lower-case letter, then up to 62 lower-case letters, digits, _ or -"
_LABEL_VALUE_RULE = "a label value: up to 63 lower-case letters, digits, _ or -"


@dataclass(frozen=True)
class Trigger:
    """A valid trigger document: which pipeline, with what, under which identity."""

    pipeline: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    run_key: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


def format_for(name: str) -> Format | None:
    """The trigger format a file name implies, or None for names Relay ignores."""
    for suffix, fmt in TRIGGER_SUFFIXES.items():
        if name.lower().endswith(suffix):
            return "json" if fmt == "json" else "yaml"
    return None


def parse_trigger(raw: bytes, fmt: Format, uri: str) -> Trigger:
    """Decode and check a trigger document; every problem found is reported at once."""
    if len(raw) > MAX_TRIGGER_BYTES:
        problem = Problem("(document)", f"at most {MAX_TRIGGER_BYTES} bytes", f"{len(raw)} bytes")
        raise InvalidTriggerError(uri, [problem], code="too_large")
    document = _decode(raw, fmt, uri)
    if not isinstance(document, dict):
        raise InvalidTriggerError(uri, [Problem("(document)", "a mapping", describe_value(document))])
    problems = [
        Problem(str(key), f"one of the keys {', '.join(_KEYS)}", "an unknown key")
        for key in document
        if key not in _KEYS
    ]
    version = document.get("version", 1)
    if version != 1 or isinstance(version, bool):
        problems.append(Problem("version", "1", describe_value(version)))
    pipeline = document.get("pipeline")
    if not isinstance(pipeline, str) or not PIPELINE_NAME.match(pipeline):
        found = "nothing" if pipeline is None else describe_value(pipeline)
        problems.append(Problem("pipeline", PIPELINE_NAME_RULE, found))
    parameters = document.get("parameters", {})
    if not isinstance(parameters, dict):
        problems.append(Problem("parameters", "a mapping of parameter names to values", describe_value(parameters)))
        parameters = {}
    for name in parameters:
        if name in RESERVED_PARAMETERS:
            problems.append(Problem(f"parameters.{name}", "no value (Relay fills it)", "a value"))
    run_key = document.get("run_key")
    if run_key is not None and (not isinstance(run_key, str) or not RUN_KEY.match(run_key)):
        problems.append(Problem("run_key", RUN_KEY_RULE, describe_value(run_key)))
    labels = document.get("labels", {})
    problems.extend(_label_problems(labels))
    if problems:
        raise InvalidTriggerError(uri, problems)
    return Trigger(pipeline=str(pipeline), parameters=parameters, run_key=run_key, labels=labels)


def _decode(raw: bytes, fmt: Format, uri: str) -> object:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidTriggerError(uri, [Problem("(document)", "UTF-8 text", f"bad byte at {exc.start}")]) from exc
    try:
        document = strict_json(text) if fmt == "json" else yaml.load(text, Loader=StrictLoader)
    except (ValueError, TypeError, RecursionError, yaml.YAMLError) as exc:
        # TypeError: a YAML key that is a list or mapping; RecursionError: nesting deeper than any real trigger.
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise InvalidTriggerError(uri, [Problem("(document)", f"valid {fmt.upper()}", detail)]) from exc
    try:
        # Records and run requests are JSON: YAML's extra types (binary, sets) and NaN must not get past here.
        json.dumps(document, allow_nan=False)
    except (ValueError, TypeError, RecursionError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise InvalidTriggerError(uri, [Problem("(document)", "JSON values only", detail)]) from exc
    return document


def strict_json(text: str | bytes) -> Any:
    """JSON as the standard says it: a duplicate key or NaN/Infinity is a ValueError, not a silent choice."""
    return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_reject_constant)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


class StrictLoader(yaml.SafeLoader):
    """Safe YAML that rejects duplicate keys and aliases, and keeps dates as the strings they were written as."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        # Aliases can expand a small file into gigabytes ("billion laughs"); a trigger never needs one.
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a trigger", mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# Without the timestamp resolver `2026-11-21` stays a string, as it would in JSON.
StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _label_problems(labels: object) -> list[Problem]:
    if not isinstance(labels, dict):
        return [Problem("labels", "a mapping of label names to strings", describe_value(labels))]
    problems = []
    for key, value in labels.items():
        if not isinstance(key, str) or not _LABEL_KEY.match(key):
            problems.append(Problem(f"labels.{key}", _LABEL_KEY_RULE, repr(key)))
        if not isinstance(value, str) or not _LABEL_VALUE.match(value):
            problems.append(Problem(f"labels.{key}", _LABEL_VALUE_RULE, describe_value(value)))
    return problems


def describe_value(value: object) -> str:
    """A short, type-first description of a found value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"number {value}" if not (isinstance(value, float) and math.isnan(value)) else "NaN"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"string {shown!r}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return f"a mapping of {len(value)}"
    return type(value).__name__
