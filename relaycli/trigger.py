"""`relay trigger FILE --bucket B`: upload a trigger file, as a user or a scheduler would drop one."""

from __future__ import annotations

import argparse
from pathlib import Path

from relay import naming
from relay.errors import BlobNotFoundError
from relay.service import parse_document
from relaycli import policy
from relaycli.command import Command, add_catalog, add_json, add_no_validate, add_policy
from relaycli.config import Context
from relaycli.documents import checked_before_sending, read_trigger_file, refuse_empty
from relaycli.errors import EXIT_OK, CliError, UsageError
from relaycli.output import pairs, to_json


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="trigger document (.json, .yaml or .yml)")
    parser.add_argument("--bucket", required=True, metavar="B", help="trigger bucket to upload to (gs:// optional)")
    parser.add_argument("--name", metavar="NAME", help="object name in the bucket (default: FILE's name)")
    add_no_validate(parser)
    add_catalog(parser)
    add_policy(parser)
    add_json(parser)


def _run(args: argparse.Namespace, context: Context) -> int:
    uri = object_uri(args.bucket, args.name, args.file)
    bucket, name = naming.split_gs_uri(uri)
    config = context.config(catalog=args.catalog, policy=args.policy)
    document = read_trigger_file(args.file, named=name)  # decoded as Relay will: by the object's name
    refuse_empty(document, "uploaded")  # even with --no-validate: Relay skips it, so its run key never exists
    origin = policy.Origin(uri)
    deployed = checked_before_sending(context, config, document, origin, "uploaded", validated=args.validate)
    store = context.blob_store(config, uri)
    try:
        generation = store.write(uri, document.data)
    except BlobNotFoundError:
        raise CliError(f"gs://{bucket}: expected an existing bucket, found none") from None
    identity = naming.object_identity(bucket, name, generation)
    run_key = policy.run_key(deployed, origin, parse_document(document.data, document.format, uri), identity)
    if args.json:
        print(to_json({"uri": uri, "generation": generation, "run_key": run_key}))
    else:
        print(pairs([("uploaded", uri), ("generation", str(generation)), ("run key", run_key)]))
        print(context.paint.next(f"\nfollow it: relay status {run_key}"))
    return EXIT_OK


def object_uri(bucket: str, name: str | None, file: str) -> str:
    """gs://bucket/name from --bucket and --name (default: FILE's name), each checked."""
    chosen = name if name is not None else Path(file).name
    if not chosen or chosen.startswith("/") or chosen.endswith("/"):
        raise UsageError(f"--name: expected an object name such as triggers/nightly.yaml, found {chosen!r}")
    return naming.object_uri(bucket_name(bucket), chosen)


def bucket_name(value: str) -> str:
    bucket = value.removeprefix("gs://").rstrip("/")
    if "/" in bucket:
        raise UsageError(f"--bucket: expected a bucket name alone (folders go in --name), found {value!r}")
    if not naming.is_bucket_name(bucket):
        raise UsageError(f"--bucket: expected {naming.BUCKET_RULE}, found {value!r}")
    return bucket


COMMAND = Command(
    name="trigger",
    summary="upload a trigger file to a bucket and print the run key Relay will give it",
    description=(
        "Upload a trigger file to gs://B/NAME, where Relay picks it up, and print the object's URI, its "
        "generation and the run key Relay gives that generation (its run_key, scoped <tenant>--<run_key> by the "
        "policy's tenant for gs://B/NAME, or <pipeline>-<digest>). The file is first checked as 'relay validate "
        "FILE --bucket B --name NAME' does, catalog and policy: an invalid one is not uploaded "
        "(exit status 1, as from relay validate). "
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
