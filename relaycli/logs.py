"""`relay logs RUN`: a run's output. Locally the runner's log, as its steps wrote it (they scrub their own secrets);
on KFP and Vertex AI, where the backend keeps the logs."""

from __future__ import annotations

import argparse
import re
import sys
from collections import deque
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import TextIO
from urllib.parse import parse_qs, quote, unquote, urlsplit

from relay.adapters.http import HttpClient
from relay.adapters.local_backend import LOG_FILE
from relay.status import RunRecords
from relaycli import cloud_logging
from relaycli.command import Command, add_catalog, add_policy, add_results
from relaycli.config import CliConfig, Context
from relaycli.errors import EXIT_OK, CliError
from relaycli.output import pairs
from relaycli.status import not_found, run_finder

CHUNK = 64 * 1024  # the log is copied in lines of at most this size: never held whole
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# The log name and resource Vertex AI writes a pipeline job's events under (Cloud Logging, "Vertex Pipelines Job").
VERTEX_RESOURCE = "aiplatform.googleapis.com/PipelineJob"


def _lines(text: str) -> int:
    value = int(text) if text.isdecimal() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of lines, 1 or more, found {text!r}")
    return value


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="a run key, or a trigger file's gs://bucket/object[#generation]")
    parser.add_argument("--tail", type=_lines, metavar="N", help="only the last N lines")
    add_results(parser)
    add_catalog(parser)
    add_policy(parser)


def _run(args: argparse.Namespace, context: Context) -> int:
    config = context.config(results=args.results, catalog=args.catalog, policy=args.policy)
    results = config.require_results()
    store = context.blob_store(config, results, args.run)
    run_key, find = run_finder(context, config, store, args.run)
    run = find()
    if run is None:
        raise not_found(args.run, run_key, results)
    launch = run.launch or {}
    if run.rejection is not None or not launch:
        raise CliError(f"{run.run_key} was rejected: no run, so no logs (relay status {run.run_key} says why)")
    backend = str(launch.get("backend") or "")
    url = str(launch.get("run_url") or "")
    if not url:
        raise CliError(f"{run.run_key} is {run.state}: expected a launched run, found none on {backend} yet")
    if backend == "local":
        _local(run, url, config, args.tail, plain=not context.paint.enabled)
    elif backend == "vertex":
        _vertex(run, url, context, args.tail)
    else:
        _elsewhere(run, backend, url)
    if run.state == "failed":
        print(f"{run.run_key} failed: {run.message}", file=sys.stderr)
    return EXIT_OK


def _local(run: RunRecords, url: str, config: CliConfig, tail: int | None, *, plain: bool) -> None:
    log = _local_log(run.run_key, url, config)
    if log is None:
        raise CliError(
            f"{run.run_key}: expected the runner's log {LOG_FILE} in its run folder, found none "
            f"(under RELAY_LOCAL_ROOT {config.local_root}, or {url}): is this the machine that ran it?"
        )
    with log.open(encoding="utf-8", errors="replace", newline="") as text:
        lines = _lines_of(text)
        for line in deque(lines, maxlen=tail) if tail is not None else lines:
            # kfp.local colours its lines for a terminal: into a pipe or a file they go without.
            sys.stdout.write(_ANSI.sub("", line) if plain else line)
    sys.stdout.flush()


def _local_log(run_key: str, url: str, config: CliConfig) -> Path | None:
    """The run folder's log: where the launch record says the run is, else under this machine's local root."""
    folders = [Path(config.local_root) / run_key]
    parts = urlsplit(url)
    if parts.scheme == "file":
        folders.insert(0, Path(unquote(parts.path)))
    for folder in folders:
        # Only a folder named for the run: a record is no licence to read any file it points at.
        if folder.name == run_key and (folder / LOG_FILE).is_file():
            return folder / LOG_FILE
    return None


def _lines_of(text: TextIO) -> Iterator[str]:
    """Its lines, a line longer than CHUNK in pieces of that size: never more than that held at once."""
    while piece := text.readline(CHUNK):
        yield piece


def _vertex(run: RunRecords, url: str, context: Context, tail: int | None) -> None:
    parts = urlsplit(url)
    project = (parse_qs(parts.query).get("project") or [""])[0]
    segments = parts.path.split("/")
    location = segments[segments.index("locations") + 1] if "locations" in segments[:-1] else ""
    query = vertex_filter(run.run_key)
    explorer = f"https://console.cloud.google.com/logs/query;query={quote(query, safe='')}?project={quote(project)}"
    rows = [("run", url), ("logs", explorer), ("project", project or "-"), ("location", location or "-")]
    print(pairs(rows))
    print(f"\nthe lines, with your credentials:\n  gcloud logging read '{query}' --project {project} --order asc")
    if not project:
        return
    where = cloud_logging.endpoint(context.env)
    print("", flush=True)
    http = HttpClient()
    try:
        source = cloud_logging.tokens(context.env, http)
        found = cloud_logging.entries(http, where, source, project, query, newest_first=tail is not None)
        shown = list(islice(found, tail))[::-1] if tail is not None else found
        for entry in shown:
            print(cloud_logging.line(entry))
    except cloud_logging.LinesUnavailableError as error:
        # The links above stand: whoever may read the project's logs sees the lines there.
        print(f"relay logs: no lines read from Cloud Logging: {error}", file=sys.stderr)


def vertex_filter(run_key: str) -> str:
    """The Cloud Logging filter for one pipeline job's entries (the job's id is the run key Relay sent)."""
    return f'resource.type="{VERTEX_RESOURCE}" AND resource.labels.pipeline_job_id="{run_key}"'


def _elsewhere(run: RunRecords, backend: str, url: str) -> None:
    print(pairs([("run", url), ("backend", backend or "-")]))
    if backend == "kfp":
        print(
            "\nKFP's API serves no task logs: open the run's page above, each task's Logs tab "
            "(or kubectl logs on its pod)"
        )


COMMAND = Command(
    name="logs",
    summary="show a run's output: the local runner's log, or where KFP and Vertex AI keep it",
    description=(
        "Show what a run printed. On the local backend: the runner's log from the run's folder (RELAY_LOCAL_ROOT, "
        "as the launch record names it), its tasks' output as they wrote it (the steps scrub the secrets they "
        "resolve), streamed, or its last --tail N lines; a failed run's error follows on stderr. On KFP: the "
        "run's page, whose tasks show their logs (KFP's API serves none). On Vertex AI: the run's page, the "
        "Logs Explorer link for the pipeline job, the 'gcloud logging read' command, and the lines themselves where "
        "your credentials may read them (Application Default Credentials; RELAY_LOGGING_ENDPOINT for another "
        "endpoint). RUN is found as 'relay status' finds it."
    ),
    examples="""\
examples:
  relay logs push-3f2a1c0d9e8b7a6f5e4d
  relay logs lab--nightly-2026-11-21 --tail 50
  relay logs gs://relay-triggers/trigger.yaml""",
    add_arguments=_arguments,
    run=_run,
)
