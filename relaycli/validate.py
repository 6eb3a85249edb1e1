"""`relay validate FILE`: the checks Relay runs on a trigger before it claims a run, and nothing else."""

from __future__ import annotations

import argparse

from relaycli.command import Command, add_catalog, add_format, add_json
from relaycli.config import Context
from relaycli.documents import problem_lines, read_trigger_file, validate
from relaycli.errors import EXIT_FAILED, EXIT_OK
from relaycli.output import to_json


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="trigger document (.json, .yaml or .yml)")
    add_format(parser)
    add_catalog(parser)
    add_json(parser)


def _run(args: argparse.Namespace, context: Context) -> int:
    config = context.config(catalog=args.catalog)
    document = read_trigger_file(args.file, args.format)
    catalog = config.require_catalog()
    validation = validate(document, context.blob_store(config, catalog), catalog)
    if args.json:
        print(to_json({"file": args.file, **validation.to_json()}))
    else:
        print("\n".join([validation.summary(), *problem_lines(validation)]))
    return EXIT_OK if validation.valid else EXIT_FAILED


COMMAND = Command(
    name="validate",
    summary="check a trigger file against the catalog, launching nothing",
    description=(
        "Check a trigger file as Relay would before claiming a run: the document (keys, types, run_key, labels), "
        "its pipeline in the catalog, and its parameters against the pipeline's inputs. Every problem is listed "
        "as 'field: expected ..., found ...'. Exit status 0 when valid, 1 when not."
    ),
    examples="""\
examples:
  relay validate trigger.yaml
  relay validate nightly.json --catalog gs://relay-deploy/pipelines/3f2a1c0
  relay validate message.txt --format yaml --json""",
    add_arguments=_arguments,
    run=_run,
)
