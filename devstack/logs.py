"""The JSON outcome lines Relay's functions write, read back from a functions-framework process's log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def outcome_lines(log_path: Path) -> list[dict[str, Any]]:
    """Every line of the log that is one event's outcome (it carries an `outcome` field)."""
    lines = log_path.read_text(errors="replace").splitlines() if log_path.exists() else []
    return [entry for entry in (parse_line(line) for line in lines) if entry is not None and "outcome" in entry]


def parse_line(line: str) -> dict[str, Any] | None:
    """One JSON log line as a mapping; None for anything else (functions-framework's own text lines)."""
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
