"""`relay upload FILE... gs://bucket/prefix/`: put local data where a trigger's sources can name it."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from relay import naming
from relay.errors import BlobNotFoundError
from relay.triggers import format_for
from relaycli import policy
from relaycli.command import Command, add_catalog, add_json, add_policy
from relaycli.config import CliConfig, Context
from relaycli.errors import EXIT_OK, CliError, UsageError
from relaycli.output import plural, to_json


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files", metavar="FILE", nargs="+", help="files or folders to upload (folders: everything in them)"
    )
    parser.add_argument(
        "destination",
        metavar="DEST",
        help="gs://bucket/prefix/ (each file keeps its name, a folder its tree) or, for one file, gs://bucket/name",
    )
    add_catalog(parser)
    add_policy(parser)
    add_json(parser)


def _run(args: argparse.Namespace, context: Context) -> int:
    uploads = plan(args.files, args.destination)
    config = context.config(catalog=args.catalog, policy=args.policy)
    store = context.blob_store(config, args.destination)
    paint = context.paint
    # Before anything is sent: a policy the functions could not read stops them too.
    triggers = _triggers(context, config, [uri for path, uri in uploads if path.stat().st_size])
    for path, uri in uploads:
        try:
            store.write(uri, path.read_bytes())
        except BlobNotFoundError:
            bucket = naming.split_gs_uri(uri)[0]
            raise CliError(f"gs://{bucket}: expected an existing bucket, found none") from None
        except OSError as exc:
            raise CliError(f"{path}: expected a readable file, found {exc.strerror or exc}") from None
        if not args.json:
            print(f"{path} -> {uri}")
    if args.json:
        print(to_json([{"file": str(path), "uri": uri} for path, uri in uploads]))
    else:
        where = args.destination if args.destination.endswith("/") else uploads[0][1]
        if triggers:
            # Where a tenant takes triggers, a trigger file is picked up as it lands: it is a run, not data.
            follow = f"relay status {triggers[0]}" if len(triggers) == 1 else "relay runs"
            print(
                paint.next(
                    f"\n{plural(len(triggers), 'trigger file')} uploaded where Relay takes triggers: "
                    f"{'it starts a run' if len(triggers) == 1 else 'each starts a run'}; follow it: {follow}"
                )
            )
        else:
            print(paint.next(f"\n{plural(len(uploads), 'file')} uploaded: name {where} in a trigger's sources"))
    return EXIT_OK


def _triggers(context: Context, config: CliConfig, uris: list[str]) -> list[str]:
    """The uploaded objects Relay takes as trigger files: a trigger name, where the policy's tenant takes triggers
    (the policy as the functions read it; without one, where they are deployed is not known here)."""
    named = [uri for uri in uris if format_for(uri) is not None]
    if not named:
        return []
    deployed = policy.load_policy(context, config)
    return [uri for uri in named if policy.Origin(uri).tenant(deployed) is not None]


def plan(files: list[str], destination: str) -> list[tuple[Path, str]]:
    """Each local file and the gs:// URI it goes to; every argument checked before anything is sent."""
    if not destination.startswith("gs://") or not naming.split_gs_uri(destination)[0]:
        raise UsageError(f"DEST: expected gs://bucket/prefix/ or gs://bucket/name, found {destination!r}")
    bucket, name = naming.split_gs_uri(destination)
    into_folder = not name or destination.endswith("/")
    uploads: list[tuple[Path, str]] = []
    for given in files:
        path = Path(given)
        if path.is_dir():
            if not into_folder:
                raise UsageError(f"DEST: expected gs://bucket/prefix/ (ending in /) for the folder {given}")
            uploads.extend((file, naming.object_uri(bucket, name + rel)) for file, rel in _tree(path))
        elif path.is_file():
            uploads.append((path, naming.object_uri(bucket, name + path.name if into_folder else name)))
        else:
            raise UsageError(f"{given}: expected a file or a folder, found nothing there")
    if not uploads:
        raise UsageError(f"FILE: expected something to upload, found only empty folders in {' '.join(files)}")
    if len(uploads) > 1 and not into_folder:
        raise UsageError(
            f"DEST: expected gs://bucket/prefix/ (ending in /) for {len(uploads)} files, found {destination}"
        )
    return uploads


def _tree(folder: Path) -> Iterator[tuple[Path, str]]:
    """Files under `folder`, with their path below its name (`data/a/b.csv` -> `data/a/b.csv`)."""
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        yield file, file.relative_to(folder.parent).as_posix()


COMMAND = Command(
    name="upload",
    summary="upload local files to Cloud Storage (or make up's) for triggers to name",
    description=(
        "Upload files to gs://bucket/prefix/, each under its own name (a folder keeps its tree, under its own "
        "name), or one file to gs://bucket/name. With `make up` running and its exports set, this is the local "
        "stack's storage (STORAGE_EMULATOR_HOST): the policy there lets triggers read gs://lab-data/. Else the "
        "real Cloud Storage, with Application Default Credentials. Existing objects are replaced."
    ),
    examples="""\
examples:
  relay upload plate-4.json gs://lab-data/assay/2026-11-22/
  relay upload results/ gs://lab-data/mine/            # -> gs://lab-data/mine/results/...
  relay upload notes.csv gs://lab-data/mine/notes.csv""",
    add_arguments=_arguments,
    run=_run,
)
