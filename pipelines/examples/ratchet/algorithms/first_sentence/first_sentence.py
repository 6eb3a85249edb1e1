"""The first sentence of a text."""

import re


def apply(input: object) -> str:
    if not isinstance(input, str) or not input.strip():
        raise ValueError("expected a non-empty text")
    return re.split(r"(?<=[.!?])\s+", input.strip(), maxsplit=1)[0]
