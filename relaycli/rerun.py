"""`relay rerun RUN_KEY [--force]`: start the next attempt of a failed or cancelled run."""

from __future__ import annotations

import argparse

from relay import lifecycle
from relay.errors import InvalidTriggerError
from relaycli.cancel import lifecycle_json
from relaycli.command import Command, add_json, add_results
from relaycli.config import Context
from relaycli.errors import EXIT_OK, CliError
from relaycli.sync import relay_for


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_key", metavar="RUN_KEY", help="the run (or any attempt of it) to start again")
    parser.add_argument(
        "--force", action="store_true", help="start another attempt even if the latest is still going or succeeded"
    )
    add_results(parser)
    add_json(parser)


def _run(args: argparse.Namespace, context: Context) -> int:
    relay = relay_for(context, args.results)
    try:
        answer = lifecycle.rerun(relay, args.run_key, force=args.force, forcing="--force")
    except lifecycle.LifecycleError as refused:
        raise CliError(str(refused)) from None
    except InvalidTriggerError as invalid:
        details = [f"  {problem}" for problem in invalid.problems]
        raise CliError(f"{args.run_key}: the catalog or the policy no longer allows this run", details) from None
    print(lifecycle_json(answer) if args.json else answer.message)
    return EXIT_OK


COMMAND = Command(
    name="rerun",
    summary="start a new attempt of a failed or cancelled run",
    description=(
        "Start the next attempt of a run with the trigger and parameters of its launch record, as run key "
        "<first>-attempt-<n>; the new launch record names the first run and the attempt it follows. Refused while "
        "the latest attempt is still going or if it succeeded, unless --force. The catalog and the policy are "
        "checked again. Exactly once per attempt: two reruns at once start one attempt. The same request can be a "
        "message on the trigger topic with attributes action=rerun and run_key=KEY (force=true)."
    ),
    examples="""\
examples:
  relay rerun lab--nightly-2026-11-21
  relay rerun lab--nightly-2026-11-21 --force""",
    add_arguments=_arguments,
    run=_run,
)
