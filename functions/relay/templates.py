"""Templates in policy and trigger values: `{field}` filled once from what an event or a finished run says.

Plain substitution, never evaluation: in any string value (mapping keys are left as written), `{field}` is replaced
once and the result is never scanned again. `{{` and `}}` are literal braces. Which fields exist is the caller's
(relay.routes: an object's; relay.chains: a finished run's).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
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


def strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            yield from strings(inner, f"{path}.{key}")
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from strings(inner, f"{path}[{i}]")
