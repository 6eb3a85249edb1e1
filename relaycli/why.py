"""`relay why <gs://object | message id | run key>`: every decision Relay made about a delivery, in order."""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay import naming, queue, records
from relay import policy as rules
from relay.config import trace_project
from relay.errors import BlobNotFoundError
from relay.ports import BlobStore
from relay.routes import ObjectEvent
from relay.service import route_run_key
from relay.status import RunRecords, read_run, recent_runs
from relay.trace import console_url
from relaycli import outcome_log, policy, story
from relaycli.cloud_logging import LinesUnavailableError
from relaycli.command import Command, add_catalog, add_json, add_policy, add_results
from relaycli.config import Context
from relaycli.errors import EXIT_OK, CliError, UsageError
from relaycli.output import pairs, table, to_json
from relaycli.status import later_attempts, resolve_run_key

_MESSAGE_ID = re.compile(r"^[0-9]{1,64}\Z")  # Pub/Sub's message ids are decimal numbers


@dataclass(frozen=True)
class Asked:
    """What the reader named, as the keys, URIs and ids the records and lines are found by."""

    given: str
    run_keys: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "what",
        metavar="WHAT",
        help="a trigger's or routed object's gs://bucket/object[#generation], a Pub/Sub message id, or a run key",
    )
    parser.add_argument(
        "--tenant",
        metavar="T",
        help="show only tenant T's records and lines: another tenant's delivery is not found",
    )
    parser.add_argument(
        "--logs",
        action="append",
        type=Path,
        metavar="PATH",
        help="the functions' log files, or a folder of *.log (default: RELAY_LOGS; make up sets it)",
    )
    parser.add_argument(
        "--project",
        metavar="P",
        help="read the functions' outcome lines from Cloud Logging in project P (your credentials), and link traces",
    )
    add_results(parser)
    add_catalog(parser)
    add_policy(parser)
    add_json(parser)


def _run(args: argparse.Namespace, context: Context) -> int:
    config = context.config(results=args.results, catalog=args.catalog, policy=args.policy)
    results = config.require_results()
    store = context.blob_store(config, results, args.what)
    deployed = policy.load_policy(context, config)
    if args.tenant is not None and deployed.tenant(args.tenant) is None:
        names = ", ".join(t.name for t in deployed.tenants) or "none"
        raise UsageError(f"--tenant: expected a tenant of the policy ({names}), found {args.tenant!r}")
    if args.project is not None and not naming.PROJECT_ID.match(args.project):
        raise UsageError(f"--project: expected {naming.PROJECT_ID_RULE}, found {args.project!r}")
    asked = resolve(store, deployed, args.what)
    lines = _lines(args, context, asked)
    asked = _with_keys_of(asked, lines)
    runs = [run for key in asked.run_keys if (run := read_run(store, results, key)) is not None]
    if not runs and not asked.run_keys and asked.ids:  # no line named it: the records' own references may
        runs = _by_reference(store, results, asked.ids)
        asked = Asked(asked.given, tuple(run.run_key for run in runs), asked.uris, asked.ids)
    tenants = {run.run_key: story.tenant_of(run, deployed) for run in runs}
    if args.tenant is not None:
        runs = [run for run in runs if tenants[run.run_key] == args.tenant]
        kept = {run.run_key for run in runs}
        lines = [line for line in lines if line.get("run_key") in kept]
    if not runs and not lines:
        where = f" of tenant {args.tenant}" if args.tenant is not None else ""
        raise CliError(
            f"{args.what}: expected records{where} under {results} or outcome lines about it, found none",
            ["  the recent runs and their keys: relay runs", "  the functions' lines: --logs PATH or --project P"],
        )
    steps = []
    for run in runs:
        waiting = None
        if run.state == records.QUEUED and run.launch is not None:
            waiting = queue.explain(store, results, deployed, run.launch, context.clock())
        steps += story.run_steps(run, tenants[run.run_key], waiting)
        steps += story.later_steps(later_attempts(store, results, run))
    steps += story.line_steps(lines)
    ordered = story.in_order(steps)
    traces = sorted({trace for run in runs if (trace := story.trace_id(run))})
    project = args.project or trace_project(context.env)
    if args.json:
        print(
            to_json(
                {
                    "asked": args.what,
                    "run_keys": [run.run_key for run in runs],
                    "states": {run.run_key: run.state for run in runs},
                    "tenants": {run.run_key: tenants[run.run_key] for run in runs},
                    "traces": [{"trace_id": t, "url": console_url(project, t) or None} for t in traces],
                    "steps": [step.as_json() for step in ordered],
                }
            )
        )
        return EXIT_OK
    print(render(args.what, runs, tenants, traces, project, ordered))
    return EXIT_OK


def resolve(store: BlobStore, deployed: rules.Policy, given: str) -> Asked:
    """The run keys, URIs and ids `given` names, found as the functions derive them (relay.service)."""
    if given.startswith("gs://"):
        return _object(store, deployed, given)
    if naming.RUN_KEY.match(given):
        return Asked(given, (given, *policy.scoped_keys(deployed, given)))
    if _MESSAGE_ID.match(given):
        return Asked(given, ids=(given,))
    raise UsageError(
        f"WHAT: expected gs://bucket/object[#generation], a Pub/Sub message id (digits) or {naming.RUN_KEY_RULE}, "
        f"found {given!r}"
    )


def _object(store: BlobStore, deployed: rules.Policy, given: str) -> Asked:
    uri, _, generation = given.partition("#")
    bucket, name = naming.split_gs_uri(uri)
    keys: list[str] = []
    with contextlib.suppress(CliError):  # gone, or no trigger: its lines (by URI) and its routes may still tell
        keys.append(resolve_run_key(store, given, lambda: deployed))
    routes = [route for tenant in deployed.tenants if (route := rules.route_of(tenant, bucket, name))]
    if routes:
        try:
            version = store.stat(uri, generation=int(generation) if generation else None).generation
        except BlobNotFoundError:
            version = None
        if version is not None:
            event = ObjectEvent(bucket, name, version, None, None, {})
            keys += [route_run_key(route, event) for route in routes]
    return Asked(given, tuple(dict.fromkeys(keys)), (uri,))


def _lines(args: argparse.Namespace, context: Context, asked: Asked) -> list[Mapping[str, Any]]:
    found: list[dict[str, Any]] = []
    paths = args.logs or ([Path(context.env["RELAY_LOGS"])] if context.env.get("RELAY_LOGS") else [])
    found += outcome_log.from_files(paths)
    if args.project:
        try:
            found += outcome_log.from_cloud_logging(context.env, args.project, asked.run_keys, asked.uris, asked.ids)
        except LinesUnavailableError as error:  # the records still tell most of it
            print(f"relay why: no lines read from Cloud Logging: {error}", file=sys.stderr)
    return outcome_log.matching(found, asked.run_keys, asked.uris, asked.ids)


def _with_keys_of(asked: Asked, lines: Sequence[Mapping[str, Any]]) -> Asked:
    """The run keys the lines name too: an object's that is gone, a message's (found by its id)."""
    named = [str(line["run_key"]) for line in lines if line.get("run_key")]
    return Asked(asked.given, tuple(dict.fromkeys([*asked.run_keys, *named])), asked.uris, asked.ids)


def _by_reference(store: BlobStore, results: str, ids: Sequence[str]) -> list[RunRecords]:
    """Runs whose trigger reference names one of `ids` (a message id or an event id): every record is read."""
    wanted = set(ids)
    found = []
    for run in recent_runs(store, results, limit=sys.maxsize):
        reference = (run.launch or run.rejection or run.skip or {}).get("trigger") or {}
        if reference.get("message_id") in wanted or reference.get("event_id") in wanted:
            found.append(run)
    return found


def render(
    given: str,
    runs: Sequence[RunRecords],
    tenants: Mapping[str, str],
    traces: Sequence[str],
    project: str,
    steps: Sequence[story.Step],
) -> str:
    rows: list[tuple[str, str | Sequence[str]]] = [("asked", given)]
    rows += [("run", [f"{run.run_key}  {run.state}  tenant {tenants[run.run_key] or '-'}" for run in runs] or "-")]
    if traces:
        rows.append(("trace", [console_url(project, trace) or trace for trace in traces]))
    several = len({step.run_key for step in steps if step.run_key}) > 1
    headers = ["TIME", "STEP", *(["RUN KEY"] if several else []), "DETAIL"]
    body = [
        [
            step.time or "-",
            step.what + ("" if step.source == story.RECORD else " (log)"),
            *([step.run_key or "-"] if several else []),
            step.detail + (f" [by {step.by}]" if step.by else ""),
        ]
        for step in steps
    ]
    return pairs(rows) + "\n\n" + table(headers, body)


COMMAND = Command(
    name="why",
    summary="every decision Relay made about a delivery, in order: why did my file (not) start a run?",
    description=(
        "Tell the story of one delivery: the event(s) seen (time, entry point, message id, generation, trace), its "
        "tenant and how its origin decided it, the route and the parameters its templates made, the policy's "
        "verdict (every problem of a rejection), the claim, a duplicate delivery or a takeover, the queue (place, "
        "why it waits), the launch (run id), what the reconciler saw, a cancel, rerun or retry and who asked, and "
        "the end; or the skip or rejection with its code. WHAT is a gs:// object (followed to its run keys as the "
        "functions derive them: the trigger's, a route's, a skip's), a Pub/Sub message id, or a run key. It reads "
        "the records under the results location and the functions' outcome lines: a local stack's log files "
        "(--logs, RELAY_LOGS) and, with --project, Cloud Logging. --tenant T shows nothing of another tenant's."
    ),
    examples="""\
examples:
  relay why gs://relay-triggers/trigger.yaml
  relay why gs://lab-data/assay/plate-7.csv#1763726400123456
  relay why 4921061845123456                 # a Pub/Sub message id
  relay why push-3f2a1c0d9e8b7a6f5e4d --tenant lab
  relay why gs://relay-triggers/trigger.yaml --project my-project --json""",
    add_arguments=_arguments,
    run=_run,
)
