"""`relay status RUN --wait`: follow a run until it ends, with a progress line, and exit with how it ended.

0  succeeded
1  failed, rejected, cancelled or skipped (or, without --wait, as before: no records)
2  usage or configuration error
3  --timeout passed with the run still going (or not recorded yet)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TextIO

from relay.status import RunRecords
from relaycli.errors import EXIT_FAILED, EXIT_OK, CliError

EXIT_TIMEOUT = 3
SUCCEEDED = "succeeded"
ENDED_BADLY = ("failed", "rejected", "cancelled", "skipped")  # a skipped delivery never runs


class WaitTimedOut(CliError):
    """The run had no records yet when --timeout passed."""

    exit_code = EXIT_TIMEOUT


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number of seconds, 0 or more, found {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait",
        action="store_true",
        help="follow the run until it ends; exit 0 succeeded, 1 failed, rejected, cancelled or skipped, 3 on --timeout",
    )
    parser.add_argument(
        "--timeout", type=_seconds, metavar="S", help="with --wait: give up after S seconds (default: never)"
    )
    parser.add_argument(
        "--interval", type=_seconds, default=2.0, metavar="S", help="with --wait: read the records every S seconds"
    )


def ended(run: RunRecords | None) -> bool:
    return run is not None and (run.state == SUCCEEDED or run.state in ENDED_BADLY)


def follow(
    find: Callable[[], RunRecords | None],
    name: str,
    timeout: float | None,
    interval: float,
    out: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[RunRecords | None, bool]:
    """The run once it ended, or as it was when `timeout` passed (then True: timed out)."""
    stream = out or sys.stderr
    live = stream.isatty()  # a terminal gets one line rewritten in place; a log gets a line per change
    started = clock()
    shown = ""
    while True:
        run = find()
        elapsed = clock() - started
        state = run.state if run is not None else "not recorded yet"
        line = f"{name}: {state} ({elapsed:.0f} s)"
        if live:
            stream.write("\r\x1b[K" + line)
        elif state != shown:
            stream.write(line + "\n")
        shown = state
        stream.flush()
        if ended(run):
            break
        if timeout is not None and elapsed >= timeout:
            if live:
                stream.write("\n")
            return run, True
        sleep(interval if timeout is None else max(0.0, min(interval, timeout - elapsed)))
    if live:
        stream.write("\n")
    return run, False


def exit_code(run: RunRecords | None, timed_out: bool) -> int:
    if timed_out:
        return EXIT_TIMEOUT
    return EXIT_OK if run is not None and run.state == SUCCEEDED else EXIT_FAILED
