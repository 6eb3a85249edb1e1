"""`relay report RUN_KEY [--open]`: copy a ratchet run's HTML report out of the bucket to a local file."""

from __future__ import annotations

import argparse
import webbrowser
from pathlib import Path

from relay import naming
from relay.errors import BlobNotFoundError
from relay.status import read_run
from relaycli import policy
from relaycli.command import Command, add_catalog, add_json, add_policy, add_results
from relaycli.config import Context
from relaycli.errors import EXIT_OK, CliError, UsageError
from relaycli.output import to_json
from relaycli.status import _in_one_tenant

REPORT = "report_html"  # the ratchet's result.json names its report here (outputs.report_html)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN_KEY", help="the run key of a ratchet run that has ended")
    parser.add_argument("--output", metavar="PATH", help="where to write the report (default: ./<run_key>-report.html)")
    parser.add_argument("--open", action="store_true", help="open the written file in the browser")
    add_results(parser)
    add_catalog(parser)
    add_policy(parser)
    add_json(parser)


def _run(args: argparse.Namespace, context: Context) -> int:
    if not naming.RUN_KEY.match(args.run):
        raise UsageError(f"RUN_KEY: expected {naming.RUN_KEY_RULE}, found {args.run!r}")
    config = context.config(results=args.results, catalog=args.catalog, policy=args.policy)
    results = config.require_results()
    store = context.blob_store(config, results)
    run = read_run(store, results, args.run) or _in_one_tenant(
        store, results, args.run, policy.load_policy(context, config)
    )
    if run is None:
        raise CliError(f"{args.run}: expected records under {results}, found none")
    if run.result is None:
        raise CliError(f"{run.run_key}: expected a result with a report, found none yet (state {run.state})")
    link = (run.result.get("outputs") or {}).get(REPORT)
    if not isinstance(link, str) or not link:
        raise CliError(f"{run.run_key}: expected outputs.{REPORT} in its result (a ratchet run), found none")
    # The result is written by the run: read the report only where Relay's own records are, never anywhere it names.
    if not (link.startswith(("gs://", "/", "file://")) and _under(link, results)):
        raise CliError(f"{run.run_key}: expected its report under {results}, found {link}")
    try:
        data = (store if context.store is not None else context.blob_store(config, link)).read(link).data
    except BlobNotFoundError:
        raise CliError(f"{link}: expected the report, found no object") from None
    path = Path(args.output or f"{run.run_key}-report.html")
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise CliError(f"--output: expected a writable file, found {exc.strerror or exc}: {path}") from None
    if args.open:
        webbrowser.open(path.resolve().as_uri())
    if args.json:
        print(to_json({"run_key": run.run_key, "report": link, "file": str(path), "bytes": len(data)}))
    else:
        print(f"{link} -> {path} ({len(data)} bytes)")
    return EXIT_OK


def _under(link: str, results: str) -> bool:
    """`link` lies under the results location (a gs:// prefix, or a folder as a path or file:// URI)."""
    if results.startswith("gs://"):
        return link.startswith(results.rstrip("/") + "/")
    folder = Path(results).resolve()
    target = Path(link.removeprefix("file://")).resolve()
    return target.is_relative_to(folder)


COMMAND = Command(
    name="report",
    summary="copy a ratchet run's HTML report to a local file",
    description=(
        "Read the run's result (runs/<run_key>/result.json), follow its outputs.report_html to the ratchet's "
        "report under the results location, and write it to a local file (--output, default "
        "./<run_key>-report.html); --open then opens it in the browser. Exit status 0 when written, 1 when the "
        "run, its result or its report is missing."
    ),
    examples="""\
examples:
  relay report ratchet-3f2a1c0d9e8b7a6f5e4d
  relay report lab--nightly-bench --open
  relay report ratchet-3f2a1c0d9e8b7a6f5e4d --output /tmp/report.html --json""",
    add_arguments=_arguments,
    run=_run,
)
