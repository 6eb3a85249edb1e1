"""`relay compile`: the catalog, Relay's pipelines and yours, stamped for a deployment, into a folder."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from relaycli.command import Command
from relaycli.config import Context
from relaycli.errors import EXIT_OK, CliError, UsageError

# pipelines.components.DEFAULT_IMAGE, spelled out so that `--help` does not import kfp (a test keeps them equal).
DEFAULT_IMAGE = "relay/steps:latest"


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "pipelines",
        nargs="*",
        metavar="PIPELINE",
        help="a pipeline of your own: a .py file or module with a @dsl.pipeline (FILE.py:NAME or module:NAME picks "
        "one), or a compiled spec .yaml",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="folder to write <name>.yaml to, holding no other spec (default: a new scratch folder, printed)",
    )
    parser.add_argument(
        "--image", default=DEFAULT_IMAGE, help=f"steps image for tasks that name {DEFAULT_IMAGE} (default: that)"
    )
    parser.add_argument("--policy", type=Path, metavar="FILE", help="policy file: its `pipelines` task ceilings")
    parser.add_argument("--policy-uri", default="", metavar="URI", help="where the deployed steps read the policy")
    parser.add_argument("--results-uri", default="", metavar="URI", help="where the deployed steps write records")


def _run(args: argparse.Namespace, context: Context) -> int:
    # Here, not at the top: kfp's compiler loads only for `relay compile`, never for `relay --help` or the others.
    from pipelines.compile import CompileError, compile_catalog, deployment_env, policy_resources
    from pipelines.stamp import StampError
    from relay.errors import RelayError

    try:
        resources = policy_resources(args.policy)
    except OSError as exc:
        raise UsageError(f"--policy {args.policy}: expected a readable policy file, found {exc.strerror}") from None
    except RelayError as exc:
        raise UsageError(f"--policy {args.policy}: expected a valid policy, found {exc}") from None
    out = args.out
    if out is None:  # never the committed pipelines/compiled unless asked for by name
        out = Path(tempfile.mkdtemp(prefix="relay-catalog-"))
        print(f"relay compile: no --out: writing to {out}", file=sys.stderr)
    env = deployment_env(args.policy_uri, args.results_uri)
    try:
        written = compile_catalog(out, args.image, resources=resources, env=env, sources=args.pipelines)
    except (CompileError, StampError) as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"{exc.filename or out}: expected a writable folder, found {exc.strerror or exc}") from None
    for path in written:
        print(path)
    return EXIT_OK


COMMAND = Command(
    name="compile",
    summary="compile the catalog, Relay's pipelines and yours, into a folder",
    description=(
        "Compile Relay's pipelines (push, ratchet) and every PIPELINE given to <name>.yaml in --out, each task "
        "stamped with the deployment's steps image, the task ceilings of --policy, and where the steps read the "
        "policy and write records (RELAY_POLICY_URI, RELAY_RESULTS_URI). A deployment publishes exactly that "
        "folder (infra/deploy.sh compiles it so; --catalog-dir takes one compiled like this). Without --out, the "
        "committed pipelines/compiled stays as it is: the catalog goes to a new scratch folder, printed."
    ),
    examples="""\
examples:
  relay compile examples/hello/hello.py --out build/catalog        # for make up CATALOG=build/catalog
  relay compile examples/hello/hello.py --out build/catalog --image europe-docker.pkg.dev/lab/relay/steps:3f2a1c0 \\
      --policy policy.yaml --policy-uri gs://lab-relay-catalog/3f2a1c0/policy.yaml --results-uri gs://lab-relay-results
  relay compile my_pipeline.yaml --out build/catalog               # a spec compiled with kfp dsl compile""",
    add_arguments=_arguments,
    run=_run,
)
