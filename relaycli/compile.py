"""`relay compile`: rebuild the pipeline catalog from pipelines/*_pipeline.py."""

from __future__ import annotations

import argparse
from pathlib import Path

from relaycli.command import Command
from relaycli.config import Context
from relaycli.errors import EXIT_OK, CliError

# pipelines.components.DEFAULT_IMAGE, spelled out so that `--help` does not import kfp (a test keeps them equal).
DEFAULT_IMAGE = "relay/steps:latest"


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--image", default=DEFAULT_IMAGE, help=f"steps image the components run in (default {DEFAULT_IMAGE})"
    )
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="folder to write <name>.yaml to (default: pipelines/compiled)"
    )


def _run(args: argparse.Namespace, context: Context) -> int:
    from pipelines.compile import COMPILED, compile_catalog

    try:
        written = compile_catalog(args.out or COMPILED, args.image)
    except OSError as exc:
        raise CliError(f"{exc.filename or args.out}: expected a writable folder, found {exc.strerror or exc}") from None
    for path in written:
        print(path)
    return EXIT_OK


COMMAND = Command(
    name="compile",
    summary="recompile the pipeline catalog (pipelines/compiled)",
    description=(
        "Compile every pipeline of the catalog (push, ratchet) to <name>.yaml, as python -m pipelines.compile "
        "does. The committed specs name the image relay/steps:latest; a deployment compiles with the image it "
        "built and publishes the folder as its RELAY_CATALOG_URI."
    ),
    examples="""\
examples:
  relay compile
  relay compile --image europe-docker.pkg.dev/lab/relay/steps:3f2a1c0 --out build/catalog""",
    add_arguments=_arguments,
    run=_run,
)
