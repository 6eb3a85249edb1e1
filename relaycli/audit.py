"""`relay audit verify`: prove the audit trail whole and the ledger records the ones it names."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta

from relay import audit, audit_trail
from relay.audit_verify import Report
from relay.config import setting
from relaycli.command import Command, add_json, add_results
from relaycli.config import Context
from relaycli.errors import EXIT_FAILED, EXIT_OK, UsageError
from relaycli.output import to_json
from relaycli.runs import parse_since


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("verify",), help="verify: prove the chain and the records")
    parser.add_argument(
        "--since",
        type=parse_since,
        metavar="WHEN",
        help="only entries written within this long (90s, 15m, 1h, 2d) or since this time, and the records "
        "changed since (default: the whole trail)",
    )
    parser.add_argument(
        "--audit",
        metavar="URI",
        help="where the trail is (default: RELAY_AUDIT_URI, else audit/ under the results)",
    )
    add_results(parser)
    add_json(parser)


def _run(args: argparse.Namespace, context: Context) -> int:
    config = context.config(results=args.results)
    results = config.require_results()
    where = audit.location(results, args.audit or setting(context.env, "AUDIT_URI"))
    since = _moment(args.since, context.clock())
    store = context.blob_store(config, results, where)
    try:
        report = audit_trail.prove(store, results, where, since=since)
    except audit.AuditError as exc:
        raise UsageError(f"{where}: {exc}") from None
    print(_json(report) if args.json else _text(report, where, results))
    return EXIT_OK if report.whole else EXIT_FAILED


def _moment(since: timedelta | datetime | None, now: datetime) -> datetime | None:
    if since is None or isinstance(since, datetime):
        return since
    return now - since


def _text(report: Report, where: str, results: str) -> str:
    counted = (
        f"{report.entries} entries in {report.segments} segment(s), {report.seals} seal(s), "
        f"{report.records} record(s) under {results}"
    )
    # Late entries are not tampering: a crash lost a buffered entry (or a write was made without Relay) and a tick
    # wrote it after; each is named for someone to look at.
    warnings = [f"warning: {late}" for late in report.late]
    if report.whole:
        return "\n".join([f"audit trail whole: {counted} match ({where})", *warnings])
    first, *rest = report.problems
    lines = [f"audit trail broken: {len(report.problems)} problem(s) in {counted} ({where})", f"first: {first}"]
    lines += [f"then:  {problem}" for problem in rest]
    return "\n".join([*lines, *warnings])


def _json(report: Report) -> str:
    return to_json(
        {
            "whole": report.whole,
            "entries": report.entries,
            "segments": report.segments,
            "seals": report.seals,
            "records": report.records,
            "problems": [
                {"what": p.what, "where": p.where, "expected": p.expected, "found": p.found, "at": p.at}
                for p in report.problems
            ],
            "late": [{"where": p.where, "expected": p.expected, "found": p.found, "at": p.at} for p in report.late],
        }
    )


COMMAND = Command(
    name="audit",
    summary="prove the audit trail whole and the ledger's records unchanged",
    description=(
        "Read the audit trail (every change Relay made to its records: claims, launches, rejections, skips, "
        "queueing, cancels, reruns, retries, the policy version seen) and prove it: each instance's chain of "
        "entries unbroken, each seal chained and naming entries that are there, each record under the results "
        "the one its last entry names, and no record without an entry. Exit 1 and name the first entry removed, "
        "edited or reordered (expected, found, where) when it is not. Late entries (a reconcile tick wrote them for "
        "records a crash left without one) are printed as warnings."
    ),
    examples="""\
examples:
  relay audit verify
  relay audit verify --since 1d --json""",
    add_arguments=_arguments,
    run=_run,
)
