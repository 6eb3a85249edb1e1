"""`relay runs`: the most recent runs, rejections and skipped deliveries in the results location, newest first."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta

from relay.board import rejection_reason
from relay.policy import parse_seconds
from relay.records import parse_timestamp
from relay.status import RunRecords, recent_runs
from relaycli.command import Command, add_json, add_results, run_count
from relaycli.config import Context
from relaycli.errors import EXIT_OK
from relaycli.output import age, table, to_json, truncate
from relaycli.status import run_summary

MESSAGE_WIDTH = 72


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=run_count, default=20, metavar="N", help="show at most N runs (default 20)")
    parser.add_argument(
        "--state",
        action="append",
        choices=STATES,
        help="only runs in this state (repeatable: any of them)",
    )
    parser.add_argument("--pipeline", action="append", metavar="NAME", help="only runs of this pipeline (repeatable)")
    parser.add_argument(
        "--since",
        type=parse_since,
        metavar="WHEN",
        help="only runs begun within this long (90s, 15m, 1h, 2d) or since this time (2026-11-21T08:00:00Z)",
    )
    add_results(parser)
    add_json(parser)


def _run(args: argparse.Namespace, context: Context) -> int:
    config = context.config(results=args.results)
    results = config.require_results()
    now = context.clock()
    # Filtered before the limit, so --limit counts the runs that match.
    everything = recent_runs(context.blob_store(config, results), results, limit=sys.maxsize)
    runs = [run for run in everything if _wanted(run, args, now)][: args.limit]
    if args.json:
        print(to_json([{**run_summary(run), "age_seconds": _age_seconds(run, now)} for run in runs]))
    elif not runs:
        print(f"no runs under {results}")
        print(context.paint.next("\nsend a trigger: relay trigger FILE --bucket B (examples/ has some)"))
    else:
        rows = [
            [
                run.run_key,
                run.state,
                str(run.status) if run.status is not None else "-",
                run.pipeline or "-",
                _age(run, now),
                truncate(_message(run), MESSAGE_WIDTH),
            ]
            for run in runs
        ]
        print(table(["RUN KEY", "STATE", "STATUS", "PIPELINE", "AGE", "MESSAGE"], rows, {1: context.paint.state}))
    return EXIT_OK


STATES = (
    "queued",
    "launching",
    "launched",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "rejected",
    "skipped",
    "incomplete",  # a set of files its deadline closed before it was complete (relay.sets): no run
)


def parse_since(text: str) -> timedelta | datetime:
    """A duration back from now, or a moment (with its zone; UTC when it names none)."""
    seconds = parse_seconds(text)
    if seconds is not None:
        return timedelta(seconds=seconds)
    try:
        moment = parse_timestamp(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration (90s, 15m, 1h, 2d) or a time (2026-11-21T08:00:00Z), found {text!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _wanted(run: RunRecords, args: argparse.Namespace, now: datetime) -> bool:
    if args.state and run.state not in args.state:
        return False
    if args.pipeline and run.pipeline not in args.pipeline:
        return False
    if args.since is not None:
        start = now - args.since if isinstance(args.since, timedelta) else args.since
        try:
            return bool(run.since) and parse_timestamp(run.since) >= start
        except ValueError:
            return False  # a record without a readable time cannot be shown to be recent
    return True


def _message(run: RunRecords) -> str:
    """The message; for a rejection, its first problem, which says more than the trigger URI it starts with; for a
    failed run that will be retried, when and as which attempt first."""
    if run.retry_note and run.state == "failed":
        return f"{run.retry_note}; {run.message}"
    if run.state != "rejected" or run.rejection is None:
        return run.message
    return rejection_reason(run.rejection)


def _age_seconds(run: RunRecords, now: datetime) -> float | None:
    if not run.since:
        return None
    try:
        return round((now - parse_timestamp(run.since)).total_seconds(), 3)
    except ValueError:
        return None


def _age(run: RunRecords, now: datetime) -> str:
    seconds = _age_seconds(run, now)
    return "-" if seconds is None else age(seconds)


COMMAND = Command(
    name="runs",
    summary="list recent runs, rejections and skipped deliveries, newest first",
    description=(
        "List the most recent runs in the results location, newest first: run key, state (queued, launching, "
        "launched, running, succeeded, failed, cancelled, rejected, skipped), status, pipeline, age (since the "
        "claim, the rejection or the skip) and message. --state, --pipeline and --since keep only the runs that "
        "match (before --limit counts them); --state skipped answers 'why did my file not run?', --state queued "
        "shows what waits under a cap. 'relay status RUN_KEY' shows one in full. A skipped delivery (a name not "
        "ending in .json, .yaml or .yml, a zero-byte object) is listed once per object version when it lay under a "
        "tenant's trigger locations (any, without a policy) or a route took it; other objects of a data bucket and "
        "Relay's own are in the functions' log only, and 'relay validate FILE --bucket B' says why a file would be "
        "skipped."
    ),
    examples="""\
examples:
  relay runs
  relay runs --limit 5
  relay runs --state failed --state rejected --since 1d
  relay runs --state skipped
  relay runs --state queued
  relay runs --pipeline push --since 2026-11-21T08:00:00Z
  relay runs --results gs://relay-results/relay --json""",
    add_arguments=_arguments,
    run=_run,
)
