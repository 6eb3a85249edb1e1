"""Templates in policy and trigger values: `{field}` filled once from what an event or a finished run says.

Plain substitution, never evaluation: in any string value (mapping keys are left as written), `{field}` is replaced
once and the result is never scanned again. `{{` and `}}` are literal braces. Which fields exist is the caller's
(relay.routes: an object's; relay.chains: a finished run's).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def pieces(template: str, known: Callable[[str], bool], fields: str) -> Iterator[tuple[bool, str]]:
    """(is a placeholder, text or field name) for each part of `template`, whose placeholders must be `known`
    fields (`fields` names them for the message); ValueError for a bad one. Routes' and chains' one syntax."""
    position = 0
    for match in _TOKEN.finditer(template):
        if match.start() > position:
            yield False, template[position : match.start()]
        token = match.group(0)
        if token in ("{{", "}}"):
            yield False, token[0]
        elif match.group(1) is None:
            raise ValueError(f"a lone {token!r} (write {token * 2} for a literal brace)")
        else:
            name = match.group(1).strip()
            if not known(name):
                raise ValueError(f"an unknown field {{{name}}} (known: {fields})")
            yield True, name
        position = match.end()
    if position < len(template):
        yield False, template[position:]


def fill_text(parts: Sequence[tuple[bool, str]], value: Callable[[str], Any]) -> tuple[Any, str | None]:
    """(filled, None): what a template's `parts` (its pieces) make with each field replaced by `value(field)`, a
    lone whole-value placeholder keeping its value's type (a size stays a number, a list a list). (None, field) for
    the first field `value` has nothing (None) for: the caller's to name in a problem. Routes' and chains' one fill."""
    values = []
    for is_field, text in parts:
        if not is_field:
            values.append(text)
            continue
        found = value(text)
        if found is None:
            return None, text
        if len(parts) == 1:
            return found, None
        values.append(str(found))
    return "".join(values), None


def fill_all(parameters: Mapping[str, Any], where: str, fill: Callable[[str, str], Any]) -> dict[str, Any]:
    """`parameters` with each string value replaced by `fill(text, path)` (mapping keys left as written); `path`
    names the value as problems do (`WHERE.key[0].inner`)."""

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, str):
            return fill(value, path)
        if isinstance(value, Mapping):
            return {key: walk(inner, f"{path}.{key}") for key, inner in value.items()}
        if isinstance(value, list):
            return [walk(inner, f"{path}[{i}]") for i, inner in enumerate(value)]
        return value

    return {key: walk(value, f"{where}.{key}") for key, value in parameters.items()}


def strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            yield from strings(inner, f"{path}.{key}")
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from strings(inner, f"{path}[{i}]")
