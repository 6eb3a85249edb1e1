"""The `relay` console script: argument parsing, dispatch, and one line on stderr per expected failure."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from typing import NoReturn

from relay.errors import RelayError
from relay.ports import BlobStore
from relaycli.audit import COMMAND as AUDIT
from relaycli.backfill import COMMAND as BACKFILL
from relaycli.board import COMMAND as BOARD
from relaycli.cancel import COMMAND as CANCEL
from relaycli.command import Command
from relaycli.compile import COMMAND as COMPILE
from relaycli.config import Context
from relaycli.dead_letters import COMMAND as DEAD_LETTERS
from relaycli.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, CliError
from relaycli.logs import COMMAND as LOGS
from relaycli.objects import CAT, LS
from relaycli.output import Paint, colour_wanted, one_line
from relaycli.pause import PAUSE, RESUME
from relaycli.preflight import COMMAND as PREFLIGHT
from relaycli.publish import COMMAND as PUBLISH
from relaycli.report import COMMAND as REPORT
from relaycli.rerun import COMMAND as RERUN
from relaycli.runs import COMMAND as RUNS
from relaycli.status import COMMAND as STATUS
from relaycli.sync import COMMAND as SYNC
from relaycli.trigger import COMMAND as TRIGGER
from relaycli.upload import COMMAND as UPLOAD
from relaycli.validate import COMMAND as VALIDATE
from relaycli.why import COMMAND as WHY

COMMANDS: tuple[Command, ...] = (
    TRIGGER,
    PUBLISH,
    STATUS,
    RUNS,
    WHY,
    LOGS,
    LS,
    CAT,
    REPORT,
    SYNC,
    CANCEL,
    RERUN,
    BACKFILL,
    PAUSE,
    RESUME,
    DEAD_LETTERS,
    BOARD,
    VALIDATE,
    UPLOAD,
    COMPILE,
    PREFLIGHT,
    AUDIT,
)

DESCRIPTION = """\
Relay turns a trigger file dropped in a bucket, or a message published to a topic, into exactly one
Kubeflow Pipelines run, with records in a results location. This command drops and publishes triggers,
follows the runs they become, and checks triggers against the pipeline catalog and the deployment
policy first."""

EPILOG = """\
examples:
  relay validate trigger.yaml --bucket relay-triggers
  relay trigger trigger.yaml --bucket relay-triggers
  relay publish trigger.json --topic relay-triggers --project relay-local
  relay status gs://relay-triggers/trigger.yaml
  relay runs --limit 10
  relay board --out board.html
  relay logs RUN_KEY
  relay ls gs://relay-results/relay/runs/RUN_KEY/
  relay upload plate-4.json gs://lab-data/assay/2026-11-22/

environment:
  RELAY_RESULTS_URI      run records: gs://bucket/prefix or a folder (status, runs)
  RELAY_CATALOG_URI      compiled specs: gs:// prefix or folder (default pipelines/compiled)
  RELAY_POLICY_URI       the deployment policy (default: the catalog's policy.yaml, if any)
  RELAY_BACKEND          local (default), kfp or vertex: file:// locations pass the policy only with local
  RELAY_LOCAL_ROOT       the local backend's working folder (default .relay/local)
  STORAGE_EMULATOR_HOST  Cloud Storage emulator to use (fake-gcs-server)
  PUBSUB_EMULATOR_HOST   Pub/Sub emulator to use
  AWS_ENDPOINT_URL       S3-compatible endpoint for s3:// (ls, cat), with the AWS_* keys
  PUBSUB_PROJECT_ID      project of a short --topic name, with the emulator
  GOOGLE_CLOUD_PROJECT   project of a short --topic name
  Without an emulator: the real service, with Application Default Credentials
  (gcloud auth application-default login). --results, --catalog and --policy win over RELAY_*.

exit status: 0 done, 1 not found, invalid or failed, 2 usage or configuration error,
3 status --wait timed out.
'relay COMMAND --help' describes a command."""


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line that says where to look, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")


class _Formatter(argparse.HelpFormatter):
    """Descriptions wrapped to the terminal, examples kept as written, commands listed as `name  summary`."""

    def __init__(self, prog: str) -> None:
        width = min(max(shutil.get_terminal_size((100, 24)).columns - 2, 78), 98)
        super().__init__(prog, max_help_position=28, width=width)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _format_action(self, action: argparse.Action) -> str:
        text = super()._format_action(action)
        if isinstance(action, argparse._SubParsersAction):
            # Drop argparse's `COMMAND` line and indent the commands that follow it as options are.
            text = "".join(line.removeprefix("  ") for line in text.splitlines(keepends=True)[1:])
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="relay", description=DESCRIPTION, epilog=EPILOG, formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"relay {_version()}", help="print the version")
    parser._positionals.title = "commands"  # listed before the options, under this heading
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        sub = commands.add_parser(
            command.name,
            help=command.summary,
            description=command.description,
            epilog=command.examples,
            formatter_class=_Formatter,
        )
        sub._positionals.title = "arguments"
        command.add_arguments(sub)
        sub.set_defaults(handler=command.run)
    return parser


def main(
    argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None, store: BlobStore | None = None
) -> int:
    """Run one `relay` command and return its exit status.

    Args:
        argv: the arguments after `relay` (default: sys.argv[1:]).
        env: the environment to read RELAY_* from (default: os.environ).
        store: the BlobStore for every URI (tests pass fakes; default: Cloud Storage for gs://, the disk else).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version, or a usage error already printed
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    context = Context(env=os.environ if env is None else env, store=store)
    prog = f"relay {args.command}"
    paint = Paint(colour_wanted(sys.stderr, context.env))
    try:
        code: int = args.handler(args, context)
        return code
    except CliError as error:
        _report(paint, prog, str(error), error.details)
        return error.exit_code
    except RelayError as error:  # storage unavailable, a trigger or catalog entry that cannot be read, ...
        if _no_credentials(error):
            _report(paint, prog, f"credentials: expected {_ADC} or STORAGE_EMULATOR_HOST, found none")
            return EXIT_USAGE
        _report(paint, prog, str(error))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _report(paint, prog, "interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `relay runs | head`: the reader left; say nothing more, even at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


_ADC = "Application Default Credentials (gcloud auth application-default login)"


def _no_credentials(error: BaseException) -> bool:
    # Here, and in _version, not at the top: every command pays for what loads with this module.
    from google.auth.exceptions import DefaultCredentialsError

    return isinstance(error.__cause__, DefaultCredentialsError)


def _report(paint: Paint, prog: str, message: str, details: Sequence[str] = ()) -> None:
    print(f"{paint(prog + ':', 'red+bold')} {one_line(message)}", file=sys.stderr)
    for line in details:
        print(line, file=sys.stderr)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("relay")
    except PackageNotFoundError:
        return "(not installed)"


if __name__ == "__main__":
    raise SystemExit(main())
