"""`relay cancel RUN_KEY`: stop a run on its backend and record it cancelled."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from relay import lifecycle
from relaycli.command import Command, add_json, add_results
from relaycli.config import Context
from relaycli.errors import EXIT_OK, CliError
from relaycli.output import to_json
from relaycli.sync import relay_for


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_key", metavar="RUN_KEY", help="the run to stop, as 'relay runs' lists it")
    add_results(parser)
    add_json(parser)


def _run(args: argparse.Namespace, context: Context) -> int:
    relay = relay_for(context, args.results)
    try:
        answer = lifecycle.cancel(relay, args.run_key)
    except lifecycle.LifecycleError as refused:
        raise CliError(str(refused)) from None
    print(lifecycle_json(answer) if args.json else answer.message)
    return EXIT_OK


def lifecycle_json(answer: lifecycle.Answer) -> str:
    return to_json(asdict(answer))


COMMAND = Command(
    name="cancel",
    summary="stop a run on its backend and record it cancelled",
    description=(
        "Terminate the run on the backend it was launched on and write its result.json as 'cancelled' (status "
        "499). A queued run is taken out of the queue and recorded cancelled: it never launches. A run that has "
        "ended is reported as it ended, and nothing changes. The same request can be a "
        "message on the trigger topic with attributes action=cancel and run_key=KEY, which may only cancel runs "
        "of that topic's tenant."
    ),
    examples="""\
examples:
  relay cancel lab--nightly-2026-11-21
  gcloud pubsub topics publish relay-triggers --attribute action=cancel,run_key=nightly-2026-11-21""",
    add_arguments=_arguments,
    run=_run,
)
