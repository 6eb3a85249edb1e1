"""Aligned text, colour and JSON for the CLI's output, with no dependency beyond the standard library."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

ELLIPSIS = "..."

# SGR codes. Colour says at a glance how a run ended; the words stay the same without it.
_RESET = "\x1b[0m"
_CODES = {"red": "31", "green": "32", "yellow": "33", "cyan": "36", "bold": "1", "dim": "2"}
_STATE_COLOURS = {
    "succeeded": "green",
    "valid": "green",
    "failed": "red",
    "rejected": "red",
    "invalid": "red",
    "launching": "cyan",
    "launched": "cyan",
    "running": "cyan",
    "duplicate": "dim",
    "skipped": "dim",
    "retried": "yellow",
    "dropped": "red",
}


def colour_wanted(stream: TextIO, env: Mapping[str, str]) -> bool:
    """Colour only for a person at a terminal: never into a pipe or a file, never when NO_COLOR is set
    (no-color.org) or TERM is dumb; FORCE_COLOR asks for it anyway (a pager that shows it, a test)."""
    if env.get("NO_COLOR"):
        return False
    if env.get("FORCE_COLOR", "") not in ("", "0"):
        return True
    if env.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


class Paint:
    """Wraps text in colour when enabled, and returns it untouched when not."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, colour: str) -> str:
        if not self.enabled or not text:
            return text
        codes = ";".join(_CODES[part] for part in colour.split("+"))
        return f"\x1b[{codes}m{text}{_RESET}"

    def state(self, text: str, state: str | None = None) -> str:
        """`text` in the colour of `state` (default: the text itself is the state)."""
        colour = _STATE_COLOURS.get(state if state is not None else text.strip())
        return self(text, colour) if colour else text

    def problem(self, text: str) -> str:
        return self(text, "red")

    def hint(self, text: str) -> str:
        return self(text, "yellow")

    def next(self, text: str) -> str:
        """A pointer to the next command."""
        return self(text, "dim")


PLAIN = Paint(False)


def table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], styles: Mapping[int, Callable[[str], str]] | None = None
) -> str:
    """Columns padded to their widest cell, two spaces apart; the last column is never padded.

    `styles` maps a column to what colours its cells: applied to the text alone, so the padding stays right.
    """
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = []
    for index, row in enumerate((headers, *rows)):
        cells = []
        for column, (cell, width) in enumerate(zip(row, widths, strict=True)):
            text = str(cell)
            style = (styles or {}).get(column) if index else None
            cells.append((style(text) if style else text) + " " * (width - len(text)))
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
