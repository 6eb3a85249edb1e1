"""`relay board`: the runs board as one self-contained HTML page, from the results location (and the dead-letter
subscription), for the whole deployment or one tenant's own runs."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from relay.board import DeadLetter, DeadLetters
from relay.board_page import render_board
from relay.board_store import board_for, read_sources
from relay.config import setting
from relay.records import timestamp
from relaycli import dead_letters, pubsub
from relaycli.command import Command, add_results
from relaycli.config import Context
from relaycli.emulators import check_emulator
from relaycli.errors import EXIT_OK, CliError
from relaycli.output import one_line

DEFAULT_OUT = "relay-board.html"
DEAD_LETTER_LIMIT = 100


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="FILE", default=DEFAULT_OUT, help=f"the page to write (default {DEFAULT_OUT})")
    parser.add_argument(
        "--tenant", metavar="NAME", help="only this tenant's runs, rejections, queue and alerts (no dead letters)"
    )
    parser.add_argument(
        "--name", metavar="NAME", help="the deployment's name on the page (default: RELAY_DEPLOYMENT_NAME, else the "
        "results location)"
    )  # fmt: skip
    parser.add_argument(
        "--subscription",
        default=dead_letters.DEAD_LETTER,
        metavar="S",
        help=f"the dead-letter subscription (default {dead_letters.DEAD_LETTER}), as 'relay dead-letters list'",
    )
    parser.add_argument("--project", metavar="P", help="project of a short --subscription name")
    parser.add_argument(
        "--no-dead-letters", dest="dead_letters", action="store_false", help="do not read the dead letters"
    )
    add_results(parser)


def _run(args: argparse.Namespace, context: Context) -> int:
    config = context.config(results=args.results)
    results = config.require_results()
    sources = read_sources(context.blob_store(config, results), results)
    letters = None
    if args.tenant is None:
        letters = (
            _dead_letters(args, context.env) if args.dead_letters else DeadLetters(note="Not read (--no-dead-letters).")
        )
    board = board_for(
        sources,
        deployment=args.name or setting(context.env, "DEPLOYMENT_NAME") or results,
        now=context.clock(),
        dead_letters=letters,
        tenant=args.tenant,
    )
    out = Path(args.out)
    try:
        out.write_text(render_board(board), encoding="utf-8")
    except OSError as error:
        raise CliError(f"--out: expected a file that can be written, found {out}: {error.strerror or error}") from None
    shown = f"tenant {args.tenant}" if args.tenant is not None else "every tenant"
    print(f"wrote {out} ({shown}: {board.in_flight} in flight, {board.queue_depth} queued, {board.rejected} rejected)")
    return EXIT_OK


def _dead_letters(args: argparse.Namespace, env: Mapping[str, str]) -> DeadLetters:
    """The dead letters, or why they could not be read: the board is written either way."""
    from google.auth.exceptions import GoogleAuthError

    try:
        subscription = pubsub.subscription_path(args.subscription, args.project, env)
        check_emulator(env, "PUBSUB_EMULATOR_HOST")
        found = dead_letters.peek(env, subscription, DEAD_LETTER_LIMIT)
    except (CliError, GoogleAuthError) as error:
        return DeadLetters(note=f"Could not read {args.subscription}: {one_line(str(error))}")
    return DeadLetters(
        tuple(
            DeadLetter(
                message_id=letter.message_id,
                published=timestamp(letter.published) if letter.published else "-",
                attempts=letter.attempts,
                about=letter.describe(),
            )
            for letter in found
        )
    )


COMMAND = Command(
    name="board",
    summary="write the runs board: one HTML page of runs by state, queue, rejections, dead letters and alerts",
    description=(
        "Write one self-contained HTML page (no server, nothing fetched: it opens from a file or a bucket) with "
        "the runs by state per tenant, the queue's depth, the recent rejections with their reasons, the dead "
        "letters and the alerts firing (absence records), the deployment's name and when it was made. --tenant "
        "keeps only that tenant's own runs, rejections, queue and absences, and no dead letters: the page to "
        "give a tenant. The reconcile ticks keep the same page in the results location (board/index.html, and "
        "board/tenants/TENANT.html for each tenant), at most once per RELAY_BOARD_EVERY. Dead letters are read "
        "as 'relay dead-letters list' reads them, consuming none; when they cannot be read, the page says why."
    ),
    examples="""\
examples:
  relay board
  relay board --out /tmp/board.html --no-dead-letters
  relay board --tenant assay --out assay-board.html
  relay board --results gs://relay-results --subscription projects/lab-prod/subscriptions/relay-dead-letter""",
    add_arguments=_arguments,
    run=_run,
)
