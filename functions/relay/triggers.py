"""Parse and check a trigger document (version 1), before any catalog lookup."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

import yaml

from relay import labels as label_rules
from relay.chains import Step, parse_chain
from relay.errors import InvalidTriggerError, Problem
from relay.errors import describe_value as describe_value  # its home was here: importers keep finding it
from relay.naming import PIPELINE_NAME, PIPELINE_NAME_RULE, RUN_KEY, RUN_KEY_RULE

MAX_TRIGGER_BYTES = 1024 * 1024
# Lists and mappings inside one another: a real trigger uses a handful; the limit bounds the parser's work and
# the recursion of everything that walks a document afterwards (records, run requests).
MAX_DEPTH = 64
_DEPTH_RULE = f"at most {MAX_DEPTH} levels of lists and mappings"
# Values (scalars, lists and mappings; a mapping's keys count too): a real trigger holds a few dozen. Counted before
# anything is built, the limit bounds the parse itself: a mebibyte of `[],` or YAML `1,` took 0.3 to 7 s to load.
MAX_VALUES = 10_000
_VALUES_RULE = f"at most {MAX_VALUES} values (list items, mapping keys and values)"
_UTF8_RULE = "UTF-8 text (a lone surrogate such as \\ud800 has none)"
RESERVED_PARAMETERS = ("run_key", "results_uri", "tenant")
TRIGGER_SUFFIXES = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}
Format = Literal["json", "yaml"]

_KEYS = ("version", "pipeline", "parameters", "run_key", "labels", "priority", "retries", "chain")
# A trigger's place in its tenant's queue among runs that wait (relay.queue): the higher first, arrival order among
# equals; the policy bounds what each tenant may ask (relay.policy_caps).
MAX_PRIORITY = 9
PRIORITY_RULE = f"a whole number from 0 to {MAX_PRIORITY} (the higher launches first from the queue)"
# How many times a failed run may start again by itself (relay.retries); the policy bounds what each trigger asks.
MAX_RETRIES = 10
RETRIES_RULE = f"a whole number from 0 to {MAX_RETRIES} (how many times a failed run starts again)"


@dataclass(frozen=True)
class Trigger:
    """A valid trigger document: which pipeline, with what, under which identity."""

    pipeline: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    run_key: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    priority: int = 0
    retries: int | None = None  # None: as the policy's retries entry for the pipeline says
    chain: tuple[Step, ...] = ()  # what runs next when the run ends (relay.chains)


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
    problems.extend(label_problems(labels))
    priority = document.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= MAX_PRIORITY:
        problems.append(Problem("priority", PRIORITY_RULE, describe_value(priority)))
    retries = document.get("retries")
    if retries is not None and (
        isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES
    ):
        problems.append(Problem("retries", RETRIES_RULE, describe_value(retries)))
        retries = None
    chain, chain_problems = parse_chain(document.get("chain"), "chain")
    problems += chain_problems
    if problems:
        raise InvalidTriggerError(uri, problems)
    return Trigger(
        pipeline=str(pipeline),
        parameters=parameters,
        run_key=run_key,
        labels=labels,
        priority=int(priority),
        retries=retries,
        chain=chain,
    )


def _decode(raw: bytes, fmt: Format, uri: str) -> object:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidTriggerError(uri, [Problem("(document)", "UTF-8 text", f"bad byte at {exc.start}")]) from exc
    if fmt == "json":
        shape = _json_shape(raw)
        if shape is not None:
            raise InvalidTriggerError(uri, [shape])
    try:
        document = strict_json(text) if fmt == "json" else yaml.load(text, Loader=TriggerLoader)
    except NestingTooDeepError as exc:
        raise InvalidTriggerError(uri, [Problem("(document)", _DEPTH_RULE, _one_line(exc))]) from exc
    except TooManyValuesError as exc:
        raise InvalidTriggerError(uri, [Problem("(document)", _VALUES_RULE, _one_line(exc))]) from exc
    except (ValueError, TypeError, yaml.YAMLError) as exc:
        # TypeError: a YAML key that is a list or mapping.
        raise InvalidTriggerError(uri, [Problem("(document)", f"valid {fmt.upper()}", _one_line(exc))]) from exc
    try:
        # Records and run requests are JSON: YAML's extra types (binary, sets) and NaN must not get past here.
        encoded = json.dumps(document, allow_nan=False, ensure_ascii=False)
    except (ValueError, TypeError) as exc:
        raise InvalidTriggerError(uri, [Problem("(document)", "JSON values only", _one_line(exc))]) from exc
    try:
        # A lone surrogate (JSON's "\ud800"; YAML's where PyYAML lacks libyaml) is a str that no backend takes.
        encoded.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidTriggerError(uri, not_utf8(document)) from None
    return document


# A JSON string token, escapes included: what is left once they are cut out is the document's structure.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_NESTING = bytes(sorted(set(range(256)) - set(b"[]{}")))
_OPENING = frozenset(b"[{")


def _json_shape(raw: bytes) -> Problem | None:
    """The first of MAX_DEPTH and MAX_VALUES that JSON text exceeds, read from its bytes before it is parsed.

    Outside strings, every value but the document itself follows a `,`, a `:`, or the `[` or `{` of a list or mapping
    that is not empty, and `[` and `{` open lists and mappings. Up to the first syntax error (where the parser stops)
    this is how the parser reads the text, so the counts bound what it would build. A real trigger is within both
    limits even with its strings' bytes counted in and no list or mapping taken as empty, and is never searched for
    strings.
    """
    opened = raw.count(b"[") + raw.count(b"{")
    if opened <= MAX_DEPTH and _values(raw, opened) <= MAX_VALUES:
        return None  # so few lists and mappings cannot nest too deep
    bare, strings = _JSON_STRING.subn(b"", raw, count=MAX_VALUES + 1) if b'"' in raw else (raw, 0)
    opened = bare.count(b"[") + bare.count(b"{")
    if opened > MAX_DEPTH:
        depth = 0
        # A nest too deep shows in its first MAX_DEPTH + 1 brackets; past 2 * MAX_VALUES the values are too many.
        for bracket in bare.translate(None, _NOT_NESTING)[: 2 * MAX_VALUES + 1]:
            depth += 1 if bracket in _OPENING else -1
            if depth > MAX_DEPTH:
                return Problem("(document)", _DEPTH_RULE, f"more than {MAX_DEPTH} levels")
    tight = bare.translate(None, b" \t\r\n")  # JSON's whitespace: `[ ]` is as empty as `[]`
    empty = tight.count(b"[]") + tight.count(b"{}")
    if strings > MAX_VALUES or _values(bare, opened) - empty > MAX_VALUES:  # each string is a value
        return Problem("(document)", _VALUES_RULE, f"more than {MAX_VALUES}")
    return None


def _values(text: bytes, opened: int) -> int:
    return 1 + text.count(b",") + text.count(b":") + opened


def not_utf8(document: object, limit: int = 10) -> list[Problem]:
    """A problem for each key or string in `document` that has no UTF-8 form (the first `limit` of them)."""
    problems: list[Problem] = []
    pending: list[tuple[tuple[object, ...], object]] = [((), document)]  # a field's path is formatted once found
    while pending and len(problems) < limit:
        path, value = pending.pop()
        if isinstance(value, str):
            if not (value.isascii() or _is_utf8(value)):
                problems.append(Problem(_field(path), _UTF8_RULE, describe_value(value)))
        elif isinstance(value, dict):
            for key, child in reversed(value.items()):
                if isinstance(key, str) and not (key.isascii() or _is_utf8(key)):
                    problems.append(Problem(_field((*path, key)), _UTF8_RULE, f"the key {key!r}"))
                pending.append(((*path, key), child))
        elif isinstance(value, list):
            pending.extend(((*path, index), child) for index, child in reversed(list(enumerate(value))))
    return problems[:limit]


def _field(path: tuple[object, ...]) -> str:
    # As the other problems name fields (`parameters.sources[0]`); a key that has no UTF-8 form shows its escapes.
    shown = ""
    for part in path:
        if isinstance(part, int):
            shown += f"[{part}]"
        else:
            name = str(part).encode("utf-8", "backslashreplace").decode("utf-8")
            shown += f".{name}" if shown else name
    return shown or "(document)"


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
    SafeLoader = yaml.CSafeLoader
else:
    # libyaml parses and composes in C: PyYAML's pure-Python loader took 4-7 s on a 1 MiB trigger. Where PyYAML was
    # built without it, the same rules hold, at that speed. The catalog reads pipeline packages with it too.
    SafeLoader = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader


class StrictLoader(SafeLoader):
    """Safe YAML that rejects duplicate keys, aliases and nesting deeper than MAX_DEPTH, and keeps dates as the
    strings they were written as.

    Aliases and depth are checked on the parser's events before anything is composed: libyaml's composer follows
    aliases and recurses in C with no limit, and a syntax error at the end of a large document is found by that
    pass alone (about a fifth of the time a full load takes).
    """

    max_values: int | None = None  # no bound on values: the operator's policy is read with this loader too

    def __init__(self, stream: str | bytes) -> None:
        _check_events(SafeLoader(stream), self.max_values)
        super().__init__(stream)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class TriggerLoader(StrictLoader):
    """StrictLoader that also stops at the first value past MAX_VALUES: a trigger's author is not trusted."""

    max_values = MAX_VALUES


class NestingTooDeepError(yaml.composer.ComposerError):
    """A YAML document whose lists and mappings nest deeper than MAX_DEPTH."""


class TooManyValuesError(yaml.composer.ComposerError):
    """A YAML document of more than MAX_VALUES values."""


def _check_events(parser: SafeLoader, max_values: int | None) -> None:
    """Read the stream as events, raising at the first alias, level past MAX_DEPTH, value past `max_values` (when
    given) or syntax error."""
    depth = values = 0
    try:
        while not parser.check_event(yaml.StreamEndEvent):
            event = parser.get_event()
            if isinstance(event, yaml.AliasEvent):
                # Aliases can expand a small file into gigabytes ("billion laughs"); a trigger never needs one.
                message = "aliases (*name) are not allowed in a trigger"
                raise yaml.composer.ComposerError(None, None, message, _mark(event))
            if isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
                continue
            if isinstance(event, yaml.ScalarEvent | yaml.CollectionStartEvent):
                values += 1
                if max_values is not None and values > max_values:
                    raise TooManyValuesError(None, None, f"more than {max_values}", _mark(event))
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise NestingTooDeepError(None, None, f"more than {MAX_DEPTH} levels", _mark(event))
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


def value_shape(value: object) -> Problem | None:
    """The first of MAX_VALUES and MAX_DEPTH that an already parsed value exceeds; the walk stops there, so it
    costs no more than MAX_VALUES steps however large the value is."""
    count, pending = 1, [(value, 1)]
    while pending:
        current, depth = pending.pop()
        if isinstance(current, dict):
            children: Iterable[object] = current.values()
            count += 2 * len(current)  # a mapping's keys are values too
        elif isinstance(current, list):
            children = current
            count += len(current)
        else:
            continue
        if depth > MAX_DEPTH:
            return Problem("(document)", _DEPTH_RULE, f"more than {MAX_DEPTH} levels")
        if count > MAX_VALUES:
            return Problem("(document)", _VALUES_RULE, f"more than {MAX_VALUES}")
        pending.extend((child, depth + 1) for child in children)
    return None


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


def label_problems(labels: object) -> list[Problem]:
    """Every way a trigger's `labels` break the rules of cloud labels, take a key Relay or Vertex AI sets, or
    leave Relay's own labels no room within a run's 64."""
    if not isinstance(labels, dict):
        return [Problem("labels", "a mapping of label names to strings", describe_value(labels))]
    problems = []
    if len(labels) > label_rules.MAX_TRIGGER_LABELS:
        problems.append(Problem("labels", label_rules.COUNT_RULE, f"{len(labels)}"))
    for key, value in labels.items():
        if not isinstance(key, str) or not label_rules.KEY.match(key):
            problems.append(Problem(f"labels.{key}", label_rules.KEY_RULE, repr(key)))
        elif label_rules.is_reserved(key):
            problems.append(Problem(f"labels.{key}", label_rules.RESERVED_RULE, repr(key)))
        if not isinstance(value, str) or not label_rules.VALUE.match(value):
            problems.append(Problem(f"labels.{key}", label_rules.VALUE_RULE, describe_value(value)))
    return problems
