"""Parse and check a trigger document (version 1), before any catalog lookup."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

import yaml

from relay.errors import InvalidTriggerError, Problem
from relay.naming import PIPELINE_NAME, PIPELINE_NAME_RULE, RUN_KEY, RUN_KEY_RULE

MAX_TRIGGER_BYTES = 1024 * 1024
# Lists and mappings inside one another: a real trigger uses a handful; the limit bounds the parser's work and
# the recursion of everything that walks a document afterwards (records, run requests).
MAX_DEPTH = 64
_DEPTH_RULE = f"at most {MAX_DEPTH} levels of lists and mappings"
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
    except NestingTooDeepError as exc:
        raise InvalidTriggerError(uri, [Problem("(document)", _DEPTH_RULE, _one_line(exc))]) from exc
    except RecursionError as exc:  # JSON deeper than Python's recursion limit, where its C parser stops
        raise InvalidTriggerError(uri, [Problem("(document)", _DEPTH_RULE, f"more than {MAX_DEPTH} levels")]) from exc
    except (ValueError, TypeError, yaml.YAMLError) as exc:
        # TypeError: a YAML key that is a list or mapping.
        raise InvalidTriggerError(uri, [Problem("(document)", f"valid {fmt.upper()}", _one_line(exc))]) from exc
    if fmt == "json" and nesting_depth(document) > MAX_DEPTH:
        # The YAML loader refuses this depth before composing; JSON's C parser is fast enough to check after.
        raise InvalidTriggerError(uri, [Problem("(document)", _DEPTH_RULE, f"more than {MAX_DEPTH} levels")])
    try:
        # Records and run requests are JSON: YAML's extra types (binary, sets) and NaN must not get past here.
        json.dumps(document, allow_nan=False)
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidTriggerError(uri, [Problem("(document)", "JSON values only", _one_line(exc))]) from exc
    return document


def _one_line(exc: BaseException) -> str:
    # The parsers' messages run over lines (YAML's marks); a problem is one line. Each says what it found.
    return " ".join(str(exc).split())


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


if TYPE_CHECKING:
    _SafeLoader = yaml.CSafeLoader
else:
    # libyaml parses and composes in C: PyYAML's pure-Python loader took 4-7 s on a 1 MiB trigger. Where PyYAML was
    # built without it, the same rules hold, at that speed.
    _SafeLoader = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader


class StrictLoader(_SafeLoader):
    """Safe YAML that rejects duplicate keys, aliases and nesting deeper than MAX_DEPTH, and keeps dates as the
    strings they were written as.

    Aliases and depth are checked on the parser's events before anything is composed: libyaml's composer follows
    aliases and recurses in C with no limit, and a syntax error at the end of a large document is found by that
    pass alone (about a fifth of the time a full load takes).
    """

    def __init__(self, stream: str | bytes) -> None:
        _check_events(_SafeLoader(stream))
        super().__init__(stream)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class NestingTooDeepError(yaml.composer.ComposerError):
    """A YAML document whose lists and mappings nest deeper than MAX_DEPTH."""


def _check_events(parser: _SafeLoader) -> None:
    """Read the whole stream as events, raising at the first alias, level past MAX_DEPTH or syntax error."""
    depth = 0
    try:
        while not parser.check_event(yaml.StreamEndEvent):
            event = parser.get_event()
            if isinstance(event, yaml.AliasEvent):
                # Aliases can expand a small file into gigabytes ("billion laughs"); a trigger never needs one.
                message = "aliases (*name) are not allowed in a trigger"
                raise yaml.composer.ComposerError(None, None, message, _mark(event))
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise NestingTooDeepError(None, None, f"more than {MAX_DEPTH} levels", _mark(event))
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    finally:
        parser.dispose()


def _mark(event: yaml.Event) -> yaml.Mark | None:
    # libyaml's marks print as PyYAML's do (`in "<unicode string>", line 3, column 5`); only their types differ.
    return cast("yaml.Mark | None", event.start_mark)


# Without the timestamp resolver `2026-11-21` stays a string, as it would in JSON.
StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def nesting_depth(value: object, limit: int = MAX_DEPTH) -> int:
    """How deep lists and mappings nest in `value` (a scalar is 0), counted no further than `limit` + 1."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        current, depth = pending.pop()
        children = current.values() if isinstance(current, dict) else current if isinstance(current, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if depth > limit:
            break
        pending.extend((child, depth + 1) for child in children)
    return deepest


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
