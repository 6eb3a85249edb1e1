"""The JSON outcome lines Relay's functions write, read back from a functions-framework process's log (read where
`relay why` reads them: relaycli.outcome_log)."""

from __future__ import annotations

from relaycli.outcome_log import outcome_lines, parse_line

__all__ = ["outcome_lines", "parse_line"]
