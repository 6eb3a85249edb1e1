"""The part of Cloud Logging's and Cloud Monitoring's filter language infra/monitoring uses, evaluated strictly.

A filter is comparisons joined by AND: `PATH OP VALUE` with OP one of = != > >= < <=, `PATH:*` (the field is
present), and `PATH=("a" OR "b")` (any of the values). PATH is dotted (jsonPayload.outcome, resource.type,
metric.label.tenant: `label` and `labels` name the same map, as Monitoring allows). Anything else raises
FilterError, so a definition that drifts out of this subset fails its test instead of being misread.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(r'\s*(?:(?P<string>"(?:[^"\\]|\\.)*")|(?P<number>-?\d+(?:\.\d+)?)|(?P<op>>=|<=|!=|=|>|<|:)'
                    r"|(?P<paren>[()])|(?P<star>\*)|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))")  # fmt: skip


class FilterError(ValueError):
    """A filter outside the subset this evaluator reads."""


@dataclass(frozen=True)
class Comparison:
    path: tuple[str, ...]
    op: str
    values: tuple[Any, ...]  # one, or the alternatives of ("a" OR "b"); () for PATH:*


def _tokens(text: str) -> list[tuple[str, str]]:
    found, at = [], 0
    while at < len(text.rstrip()):
        match = _TOKEN.match(text, at)
        if match is None or match.end() == at:
            raise FilterError(f"cannot read {text[at:]!r} in {text!r}")
        kind = match.lastgroup or ""
        found.append((kind, match.group(kind)))
        at = match.end()
    return found


def parse(text: str) -> tuple[Comparison, ...]:
    tokens, comparisons = _tokens(text), []
    position = 0

    def take(kind: str, value: str | None = None) -> str:
        nonlocal position
        if position >= len(tokens) or tokens[position][0] != kind or (value and tokens[position][1] != value):
            found = tokens[position] if position < len(tokens) else "the end"
            raise FilterError(f"expected {value or kind} at {found} in {text!r}")
        position += 1
        return tokens[position - 1][1]

    def value() -> Any:
        kind, raw = tokens[position] if position < len(tokens) else ("", "")
        take(kind)
        if kind == "string":
            return raw[1:-1].replace('\\"', '"')
        if kind == "number":
            return float(raw)
        raise FilterError(f"expected a quoted string or a number, found {raw!r} in {text!r}")

    while True:
        path = take("word")
        if path in ("AND", "OR", "NOT"):
            raise FilterError(f"expected a field, found {path} in {text!r}")
        op = take("op")
        if op == ":":
            take("star")
            comparisons.append(Comparison(tuple(path.split(".")), ":", ()))
        elif position < len(tokens) and tokens[position][0] == "paren":
            if op != "=":
                raise FilterError(f"expected = before a list of values in {text!r}")
            take("paren", "(")
            values = [value()]
            while position < len(tokens) and tokens[position] == ("word", "OR"):
                take("word", "OR")
                values.append(value())
            take("paren", ")")
            comparisons.append(Comparison(tuple(path.split(".")), "=", tuple(values)))
        else:
            comparisons.append(Comparison(tuple(path.split(".")), op, (value(),)))
        if position == len(tokens):
            return tuple(comparisons)
        take("word", "AND")


def field(entry: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at `path`, or None; `label` reads the `labels` map."""
    value: Any = entry
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get("labels" if part == "label" else part)
    return value


def matches(text: str, entry: Mapping[str, Any]) -> bool:
    return all(_holds(comparison, field(entry, comparison.path)) for comparison in parse(text))


def _holds(comparison: Comparison, found: Any) -> bool:
    if comparison.op == ":":
        return found is not None
    if found is None:
        return False
    results = []
    for wanted in comparison.values:
        if isinstance(wanted, float):
            if isinstance(found, bool) or not isinstance(found, int | float):
                return False
            have: Any = float(found)
        else:
            have = str(found)
        outcomes = {"=": have == wanted, "!=": have != wanted, ">": have > wanted, ">=": have >= wanted,
                    "<": have < wanted, "<=": have <= wanted}  # fmt: skip
        results.append(outcomes[comparison.op])
    return any(results)


def extract(expression: str, entry: Mapping[str, Any]) -> Any:
    """EXTRACT(path): a label or value extractor (the only form the definitions use)."""
    match = re.fullmatch(r"EXTRACT\(([A-Za-z_][A-Za-z0-9_.]*)\)", expression)
    if match is None:
        raise FilterError(f"expected EXTRACT(field), found {expression!r}")
    return field(entry, tuple(match.group(1).split(".")))
