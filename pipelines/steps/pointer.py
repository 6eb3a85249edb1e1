"""JSON Pointer (RFC 6901): the part of a document the push step sends when `select` is set."""

from __future__ import annotations

from typing import Any


class PointerError(LookupError):
    """The document has nothing at that pointer."""


def resolve(document: Any, pointer: str) -> Any:
    if pointer == "":
        return document
    if not pointer.startswith("/"):
        raise PointerError(f"expected a JSON pointer starting with '/', found {pointer!r}")
    value = document
    for raw in pointer[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict) and token in value:
            value = value[token]
        elif isinstance(value, list) and token.isdecimal() and int(token) < len(value):
            value = value[int(token)]
        else:
            raise PointerError(f"nothing at {pointer} (no {token!r})")
    return value
