"""`relay rerun RUN_KEY [--force]`: start the next attempt of a failed or cancelled run."""

from __future__ import annotations

import argparse

from relay import lifecycle
from relay.errors import InvalidTriggerError
from relaycli.cancel import lifecycle_json
from relaycli.command import Command, add_json, add_results
from relaycli.config import Context
from relaycli.errors import EXIT_OK, CliError, UsageError
from relaycli.sync import relay_for

# Why no backend can start only a run's failed tasks again: each can only create a new run, whole.
_NO_RERUN_FROM_FAILURE = {
    "vertex": (
        "Vertex AI's aiplatform.v1 API cannot rerun only a job's failed tasks: a PipelineJob names no original job "
        "and pipelineJobs has no rerun method (create, get, list, cancel, delete only)"
    ),
    "kfp": "the KFP v2beta1 API cannot rerun only a run's failed tasks: it creates new runs, whole",
    "local": "the local backend cannot rerun only a run's failed tasks: it runs the whole pipeline",
}


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_key", metavar="RUN_KEY", help="the run (or any attempt of it) to start again")
    parser.add_argument(
        "--force", action="store_true", help="start another attempt even if the latest is still going or succeeded"
    )
    parser.add_argument(
        "--from-failure",
        action="store_true",
        help="start only the failed tasks again; no backend can (exit 2 with its reason)",
    )
    add_results(parser)
    add_json(parser)


def _run(args: argparse.Namespace, context: Context) -> int:
    relay = relay_for(context, args.results)
    if args.from_failure:
        reason = _NO_RERUN_FROM_FAILURE.get(relay.backend.name, f"the {relay.backend.name} backend cannot do that")
        raise UsageError(f"--from-failure: {reason}", [f"  a whole new attempt: relay rerun {args.run_key}"])
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
        "message on the trigger topic with attributes action=rerun and run_key=KEY (force=true). --from-failure "
        "(only the failed tasks again) is refused with the backend's reason: neither KFP nor Vertex AI can."
    ),
    examples="""\
examples:
  relay rerun lab--nightly-2026-11-21
  relay rerun lab--nightly-2026-11-21 --force""",
    add_arguments=_arguments,
    run=_run,
)
