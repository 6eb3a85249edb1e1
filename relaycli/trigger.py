"""`relay trigger FILE --bucket B`: upload a trigger file, as a user or a scheduler would drop one."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from relay import naming
from relay.errors import BlobNotFoundError
from relay.status import run_key_for_object
from relaycli.command import Command, add_catalog, add_json, add_no_validate
from relaycli.config import Context
from relaycli.documents import problem_lines, read_trigger_file, validate
from relaycli.errors import EXIT_OK, CliError, UsageError
from relaycli.output import pairs, to_json

_BUCKET_NAME = re.compile(r"^[a-z0-9][-a-z0-9_.]{1,220}[a-z0-9]\Z")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="trigger document (.json, .yaml or .yml)")
    parser.add_argument("--bucket", required=True, metavar="B", help="trigger bucket to upload to (gs:// optional)")
    parser.add_argument("--name", metavar="NAME", help="object name in the bucket (default: FILE's name)")
    add_no_validate(parser)
    add_catalog(parser)
    add_json(parser)


def _run(args: argparse.Namespace, context: Context) -> int:
    bucket = _bucket(args.bucket)
    name = args.name if args.name is not None else Path(args.file).name
    if not name or name.startswith("/") or name.endswith("/"):
        raise UsageError(f"--name: expected an object name such as triggers/nightly.yaml, found {name!r}")
    config = context.config(catalog=args.catalog)
    document = read_trigger_file(args.file, named=name)  # decoded as Relay will: by the object's name
    if args.validate:
        catalog = config.require_catalog()
        validation = validate(document, context.blob_store(config, catalog), catalog)
        if not validation.valid:
            raise UsageError(f"{args.file}: not uploaded: {validation.summary()}", problem_lines(validation))
    uri = naming.object_uri(bucket, name)
    store = context.blob_store(config, uri)
    try:
        generation = store.write(uri, document.data)
    except BlobNotFoundError:
        raise CliError(f"gs://{bucket}: expected an existing bucket, found none") from None
    run_key = run_key_for_object(store, uri, generation)
    if args.json:
        print(to_json({"uri": uri, "generation": generation, "run_key": run_key}))
    else:
        print(pairs([("uploaded", uri), ("generation", str(generation)), ("run key", run_key)]))
        print(f"\nfollow it: relay status {run_key}")
    return EXIT_OK


def _bucket(value: str) -> str:
    bucket = value.removeprefix("gs://").rstrip("/")
    if "/" in bucket:
        raise UsageError(f"--bucket: expected a bucket name alone (folders go in --name), found {value!r}")
    if not _BUCKET_NAME.match(bucket):
        raise UsageError(f"--bucket: expected a bucket name (3-222 of a-z 0-9 - _ .), found {value!r}")
    return bucket


COMMAND = Command(
    name="trigger",
    summary="upload a trigger file to a bucket and print the run key Relay will give it",
    description=(
        "Upload a trigger file to gs://B/NAME, where Relay picks it up, and print the object's URI, its "
        "generation and the run key Relay gives that generation (its run_key, or <pipeline>-<digest>). The file "
        "is first checked as 'relay validate' does: an invalid one is not uploaded (exit status 2). "
        "Re-uploading makes a new generation, hence a new run. Cloud Storage is STORAGE_EMULATOR_HOST's "
        "emulator when set, else the real service with Application Default Credentials."
    ),
    examples="""\
examples:
  relay trigger trigger.yaml --bucket relay-triggers
  relay trigger nightly.json --bucket gs://lab-triggers --name assay/2026-11-21.json
  relay trigger broken.json --bucket relay-triggers --no-validate   # to see Relay reject it""",
    add_arguments=_arguments,
    run=_run,
)
