"""The CLI's errors; each ends the command with its exit status and one line on stderr.

::

    CliError        exit 1: not found, invalid, or a service refused or failed
    └── UsageError  exit 2: bad arguments or configuration
"""

from __future__ import annotations

from collections.abc import Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """What went wrong (what was expected, what was found), and any lines that detail it."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.details = tuple(details)


class UsageError(CliError):
    """The arguments or the RELAY_* configuration cannot work."""

    exit_code = EXIT_USAGE
