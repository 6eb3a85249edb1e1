"""`relay ls URI` and `relay cat URI`: records, results and delivered objects, read as the push step reads its
sources (pipelines/steps/objects.py): gs:// (STORAGE_EMULATOR_HOST's emulator when set), s3:// (AWS_ENDPOINT_URL
and the AWS_* keys) and local paths, each streamed, never held whole."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from relaycli.command import Command, add_json
from relaycli.config import Context
from relaycli.emulators import check_emulator
from relaycli.errors import EXIT_OK, CliError, UsageError
from relaycli.output import table, to_json

if TYPE_CHECKING:
    from pipelines.steps.objects import ObjectStore, SourceObject

LS_LIMIT = 1000
CHUNK = 1024 * 1024  # what one write to stdout carries


def _count(text: str) -> int:
    value = int(text) if text.isdecimal() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number, 1 or more, found {text!r}")
    return value


def _ls_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "uri",
        metavar="URI",
        nargs="?",
        help="gs://bucket/prefix, s3://bucket/prefix, or a folder (default: RELAY_RESULTS_URI, the run records)",
    )
    parser.add_argument(
        "--limit", type=_count, default=LS_LIMIT, metavar="N", help=f"list at most N objects (default {LS_LIMIT})"
    )
    add_json(parser)


def _ls(args: argparse.Namespace, context: Context) -> int:
    uri = args.uri or context.config().require_results()
    with _reading(uri, context) as store:
        found = list(islice(_listing(store, uri), args.limit + 1))
    shown, more = found[: args.limit], len(found) > args.limit
    if args.json:
        print(to_json([{"uri": item.uri, "size": item.size, "version": item.version} for item in shown]))
    elif not shown:
        raise CliError(f"{uri}: expected objects, found none")
    else:
        print(table(["SIZE", "URI"], [[str(item.size), item.uri] for item in shown]))
        if more:
            print(context.paint.next(f"\nmore than {args.limit}: --limit N lists more, a longer URI fewer"))
    return EXIT_OK


def _listing(store: ObjectStore, uri: str) -> Iterator[SourceObject]:
    """Everything under `uri` taken as a folder; if nothing is, the one object it names. In a local folder, hidden
    files are left out (the local store's lock), as the local store lists it."""
    folder = uri if uri.endswith("/") or not _key(uri) else uri + "/"
    local = urlsplit(uri).scheme in ("", "file")
    listed = (item for item in store.list(folder) if not (local and "/." in "/" + item.name))
    first = next(listed, None)
    if first is not None:
        yield first
        yield from listed
    elif folder != uri:
        yield from store.list(uri)


def _cat_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("uri", metavar="URI", help="gs://bucket/name, s3://bucket/key, or a file")
    parser.add_argument("--bytes", type=_count, metavar="N", help="only the first N bytes")


def _cat(args: argparse.Namespace, context: Context) -> int:
    if not _key(args.uri) or args.uri.endswith("/"):
        raise UsageError(f"URI: expected one object (gs://bucket/name, s3://bucket/key or a file), found {args.uri!r}")
    if urlsplit(args.uri).scheme in ("", "file") and Path(args.uri.removeprefix("file://")).is_dir():
        raise UsageError(f"URI: expected one object, found a folder {args.uri} (relay ls lists it)")
    with _reading(args.uri, context) as store:
        item = next(iter(store.list(args.uri)), None)
        if item is None:
            raise CliError(f"{args.uri}: expected an object, found none")
        limit = item.size if args.bytes is None else min(args.bytes, item.size)
        sys.stdout.flush()
        out = sys.stdout.buffer
        left = limit
        with store.open(item) as stream:  # the listed version only (generation, ETag, file identity)
            while left > 0 and (piece := stream.read(min(CHUNK, left))):
                out.write(piece)
                left -= len(piece)
        out.flush()
    if limit < item.size:
        print(f"relay cat: {args.uri}: the first {limit} of {item.size} bytes", file=sys.stderr)
    return EXIT_OK


def _key(uri: str) -> str:
    parts = urlsplit(uri)
    return parts.path.lstrip("/") if parts.scheme in ("gs", "s3") else uri


@contextmanager
def _reading(uri: str, context: Context) -> Iterator[ObjectStore]:
    """The store for `uri`, with its failures as one line each: a missing object or bucket, refused access,
    no credentials."""
    scheme = urlsplit(uri).scheme
    if scheme not in ("", "file", "gs", "s3") or (scheme in ("gs", "s3") and not urlsplit(uri).netloc):
        raise UsageError(f"URI: expected gs://bucket/..., s3://bucket/... or a local path, found {uri!r}")
    if scheme == "gs":
        check_emulator(context.env, "STORAGE_EMULATOR_HOST")
    # Here, not at the top: `relay --help` and the other commands never load the storage clients.
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
    from google.api_core.exceptions import GoogleAPIError, NotFound
    from google.auth.exceptions import DefaultCredentialsError

    from pipelines.steps.errors import StepError
    from pipelines.steps.objects import default_stores, store_for

    try:
        yield store_for(uri, default_stores(None))
    except StepError as error:
        raise CliError(str(error)) from None
    except (DefaultCredentialsError, NoCredentialsError) as error:
        raise UsageError(f"{uri}: credentials: expected them for {scheme}://, found none: {error}") from None
    except NotFound as error:
        raise CliError(f"{uri}: expected an existing bucket, found none ({error.message})") from None
    except ClientError as error:
        said = error.response.get("Error", {})
        raise CliError(f"{uri}: the store refused: {said.get('Code')} {said.get('Message')}") from None
    except (GoogleAPIError, BotoCoreError) as error:
        raise CliError(f"{uri}: the store failed: {error}") from None
    except OSError as error:
        raise CliError(f"{uri}: expected a readable file or folder, found {error.strerror or error}") from None


LS = Command(
    name="ls",
    summary="list objects: run records, results, delivered data (gs://, s3://, a folder)",
    description=(
        "List the objects under URI (a folder, or the one object it names), with their sizes: gs:// through "
        "Cloud Storage (STORAGE_EMULATOR_HOST's emulator when set, as 'make up' exports it), s3:// with "
        "AWS_ENDPOINT_URL and the AWS_* keys, or a local folder. Without URI, the run records (RELAY_RESULTS_URI). "
        "At most --limit objects."
    ),
    examples="""\
examples:
  relay ls                                     # the run records
  relay ls gs://relay-results/relay/runs/push-3f2a1c0d9e8b7a6f5e4d/
  relay ls gs://ml-data/mine/ --json
  relay ls s3://lab-archive/assay/ --limit 50""",
    add_arguments=_ls_arguments,
    run=_ls,
)

CAT = Command(
    name="cat",
    summary="print one object: a record, a result, a delivered file (gs://, s3://, a file)",
    description=(
        "Copy one object's bytes to stdout as they arrive (streamed, never held whole), the version listed "
        "first and no other: gs://, s3:// or a local file, found as 'relay ls' finds them. --bytes N stops after N "
        "bytes and says so on stderr."
    ),
    examples="""\
examples:
  relay cat gs://relay-results/relay/runs/push-3f2a1c0d9e8b7a6f5e4d/result.json
  relay cat gs://ml-data/mine/plate-9.json
  relay cat s3://lab-archive/assay/big.csv --bytes 4096""",
    add_arguments=_cat_arguments,
    run=_cat,
)
