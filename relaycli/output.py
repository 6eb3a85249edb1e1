"""Plain aligned text and JSON for the CLI's output, with no dependency beyond the standard library."""

from __future__ import annotations

import json
from collections.abc import Sequence

ELLIPSIS = "..."


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart; the last column is never padded."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = []
    for row in (headers, *rows):
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def pairs(rows: Sequence[tuple[str, str | Sequence[str]]]) -> str:
    """`label  value` lines, labels aligned; a value given as several lines continues under the first."""
    width = max((len(label) for label, _ in rows), default=0)
    lines = []
    for label, value in rows:
        values = [value] if isinstance(value, str) else list(value) or [""]
        lines.append(f"{label.ljust(width)}  {values[0]}".rstrip())
        lines.extend(f"{'':{width}}  {more}".rstrip() for more in values[1:])
    return "\n".join(lines)


def to_json(value: object) -> str:
    return json.dumps(value, indent=2, sort_keys=True)


def truncate(text: str, width: int) -> str:
    """`text` on one line, at most `width` characters."""
    flat = one_line(text)
    return flat if len(flat) <= width else flat[: max(width - len(ELLIPSIS), 0)] + ELLIPSIS


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def age(seconds: float) -> str:
    """A short human age: 42s, 7m, 3h, 2d."""
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")
