"""`relay status RUN_KEY | gs://bucket/trigger.json`: one run's records, read back from the results location."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from relay import lifecycle, naming, queue, records
from relay.errors import BlobNotFoundError
from relay.policy import Policy
from relay.ports import BlobStore
from relay.service import origin_run_key, parse_document
from relay.status import RunRecords, read_run
from relay.triggers import format_for
from relaycli import policy, wait
from relaycli.command import Command, add_catalog, add_json, add_policy, add_results
from relaycli.config import CliConfig, Context
from relaycli.errors import EXIT_OK, CliError, UsageError
from relaycli.output import PLAIN, Paint, one_line, pairs, table, to_json, truncate

# The moments a record may carry, in the order they happen.
_TIMES = (
    ("claimed", "claimed_at"),
    ("lease until", "lease_expires_at"),
    ("launched", "launched_at"),
    ("rejected", "rejected_at"),
    ("skipped", "skipped_at"),
    ("started", "started_at"),
    ("finished", "finished_at"),
)
_WRITTEN = {
    "launch": ("launched_at", "claimed_at"),
    "result": ("finished_at",),
    "rejected": ("rejected_at",),
    "skipped": ("skipped_at",),
}


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="a run key, or a trigger file's gs://bucket/object[#generation]")
    add_results(parser)
    add_catalog(parser)
    add_policy(parser)
    add_json(parser)
    wait.add_arguments(parser)


def _run(args: argparse.Namespace, context: Context) -> int:
    config = context.config(results=args.results, catalog=args.catalog, policy=args.policy)
    results = config.require_results()
    store = context.blob_store(config, results, args.run)
    run_key, find = run_finder(context, config, store, args.run)
    timed_out = False
    if args.wait:
        run, timed_out = wait.follow(find, run_key, args.timeout, args.interval)
    else:
        run = find()
    if run is None and timed_out:
        raise wait.WaitTimedOut(f"{run_key}: expected records under {results} within {args.timeout:g} s, found none")
    if run is None:
        raise not_found(args.run, run_key, results)
    done = wait.exit_code(run, timed_out) if args.wait else EXIT_OK
    later = later_attempts(store, results, run)
    waiting = None
    if run.state == records.QUEUED and run.launch is not None:
        waiting = queue.explain(store, results, policy.load_policy(context, config), run.launch, context.clock())
    if args.json:
        queued = {"queue": asdict(waiting)} if waiting else {}
        print(to_json({**run_json(run), **queued, "later_attempts": [run_summary(attempt) for attempt in later]}))
        return done
    paint = context.paint
    print(render(run, paint, later, waiting))
    if later:
        print(paint.next(f"\nthe latest attempt: relay status {later[-1].run_key}"))
    if run.state in ("queued", "launching", "launched", "running"):
        print(paint.next(f"\nnot ended yet: relay status {run.run_key} again shortly"))
    elif run.state == "rejected":
        print(paint.next("\nthe trigger's own problems: fix it and check it with relay validate FILE --bucket B"))
    elif run.state == "skipped":
        print(paint.next("\nnot a trigger: upload a trigger file (relay validate FILE --bucket B checks one)"))
    return done


def run_finder(
    context: Context, config: CliConfig, store: BlobStore, given: str
) -> tuple[str, Callable[[], RunRecords | None]]:
    """The run key `given` names (a key, or a trigger's gs:// URI), and what reads its records: the key as given,
    else, for a key a trigger chose, the one tenant's run that has it."""
    results = config.require_results()
    run_key = resolve_run_key(store, given, lambda: policy.load_policy(context, config))

    def find() -> RunRecords | None:
        found = read_run(store, results, run_key)
        if found is None and not given.startswith("gs://"):
            found = _in_one_tenant(store, results, run_key, policy.load_policy(context, config))
        return found

    return run_key, find


def not_found(given: str, run_key: str, results: str) -> CliError:
    via = f" (the run key of {given})" if given != run_key else ""
    return CliError(
        f"{run_key}{via}: expected records under {results}, found none yet",
        ["  the recent runs and their keys: relay runs"],
    )


def _in_one_tenant(store: BlobStore, results: str, key: str, deployed: Policy) -> RunRecords | None:
    """The run a trigger's own `key` became in its tenant's namespace (`<tenant>--key`), if one tenant has it."""
    found = [run for scoped in policy.scoped_keys(deployed, key) if (run := read_run(store, results, scoped))]
    if len(found) > 1:
        raise UsageError(
            f"RUN: {key} is the run key of more than one tenant's run; name one in full: "
            + ", ".join(run.run_key for run in found)
        )
    return found[0] if found else None


def resolve_run_key(store: BlobStore, given: str, deployed: Callable[[], Policy]) -> str:
    """`given` if it is a run key; for gs://bucket/object[#generation], the run key Relay gives that object
    (which `deployed`, the policy, scopes when the trigger chose its own)."""
    if not given.startswith("gs://"):
        if not naming.RUN_KEY.match(given):
            raise UsageError(
                f"RUN: expected {naming.RUN_KEY_RULE}, or a trigger's gs://bucket/object[#generation], found {given!r}"
            )
        return given
    uri, _, generation = given.partition("#")
    bucket, name = naming.split_gs_uri(uri)
    if not bucket or not name or (generation and not (generation.isascii() and generation.isdecimal())):
        raise UsageError(f"trigger URI: expected gs://bucket/object[#generation], found {given!r}")
    try:
        if format_for(name) is None:  # never a trigger: the key its skip is recorded under, if it was
            version = store.stat(uri, generation=int(generation) if generation else None).generation
            return origin_run_key(naming.object_identity(bucket, name, version))
        blob = store.read(uri, generation=int(generation) if generation else None)
    except BlobNotFoundError:
        found = f"no object at generation {generation}" if generation else "no object"
        raise CliError(f"{given}: expected a trigger file, found {found}") from None
    parsed = parse_document(blob.data, format_for(name) or "json", uri)
    identity = naming.object_identity(bucket, name, blob.generation)
    return policy.run_key(deployed(), policy.Origin(uri), parsed, identity)


def later_attempts(store: BlobStore, results: str, run: RunRecords) -> list[RunRecords]:
    """The attempts `relay rerun` started after this one, oldest first (`<first>-attempt-<n>`, as lifecycle names
    them): a run that failed may have succeeded since."""
    first, number = attempt_of(run)
    later = []
    while (following := read_run(store, results, lifecycle.attempt_key(first, number + 1))) is not None:
        later.append(following)
        number += 1
    return later


def attempt_of(run: RunRecords) -> tuple[str, int]:
    """The first run of this run's chain and this run's number in it (the first is 1), from its launch record."""
    trigger = (run.launch or {}).get("trigger") or {}
    number = trigger.get("attempt")
    if isinstance(number, int) and number > 1 and trigger.get("attempt_of"):
        return str(trigger["attempt_of"]), number
    return run.run_key, 1


def run_json(run: RunRecords) -> dict[str, Any]:
    """Everything known about the run: a summary, the record URIs and the records as written."""
    return {
        **run_summary(run),
        "records": dict(run.uris),
        "launch": run.launch,
        "result": run.result,
        "rejection": run.rejection,
        "skipped": run.skip,
        "retry": run.retry,
        "chained": run.chained,
    }


def run_summary(run: RunRecords) -> dict[str, Any]:
    first = run.launch or run.rejection or {}
    return {
        "run_key": run.run_key,
        "pipeline": run.pipeline or None,
        "state": run.state,
        "status": run.status,
        "message": run.message,
        "run_id": first.get("run_id") or (run.result or {}).get("run_id"),  # the backend's id, as launched
        "run_url": first.get("run_url"),
        "trigger_uri": run.trigger_uri or None,
        "since": run.since or None,
        "retry_at": (run.retry or {}).get("retry_at"),
        "chained_from": run.chained_from or None,
        "chained_to": run.chained_to,
    }


def render(
    run: RunRecords, paint: Paint = PLAIN, later: Sequence[RunRecords] = (), waiting: queue.Waiting | None = None
) -> str:
    summary = run_summary(run)
    first, number = attempt_of(run)
    rows: list[tuple[str, str | Sequence[str]]] = [
        ("run key", run.run_key),
        ("pipeline", run.pipeline or "-"),
        ("state", paint.state(run.state)),
        ("status", str(run.status) if run.status is not None else "-"),
        ("run id", summary["run_id"] or "-"),
        ("run url", summary["run_url"] or "-"),
        *_job_id(run, summary["run_id"]),
        ("trigger", _trigger(run)),
    ]
    if waiting is not None:
        tenant = str((run.launch or {}).get("tenant") or "(none)")
        place = f"{waiting.position} in tenant {tenant}'s queue" if waiting.position else "none (being launched)"
        rows += [("queue place", place), ("waiting for", waiting.reason)]
    if number > 1:
        via = str(((run.launch or {}).get("trigger") or {}).get("via") or "")
        rows.append(("attempt", f"{number} of {first}" + (f" (a {via})" if via else "")))
    if run.retry_note:
        rows.append(("next attempt", run.retry_note.removeprefix("retry: ").removeprefix("retry as ")))
    if run.chained_from:
        rows.append(("chained from", run.chained_from))
    if run.chained_to:
        rows.append(("chained to", run.chained_to))
    if later:
        rows.append(("later attempts", [f"{attempt.run_key}  {paint.state(attempt.state)}" for attempt in later]))
    records = [record for record in (run.launch, run.rejection, run.skip, run.result) if record]
    for label, key in _TIMES:
        moment = next((str(record[key]) for record in records if record.get(key)), None)
        if moment and not (key == "lease_expires_at" and run.state != "launching"):
            rows.append((label, moment))
    rows.append(("message", one_line(run.message) or "-"))
    if run.rejection:
        error = run.rejection.get("error") or {}
        rows.append(("error", str(error.get("code", "-"))))
        problems = [
            f"{paint.problem(str(p.get('field')))}: expected {p.get('expected')}, found {p.get('found')}"
            for p in error.get("problems") or []
        ]
        if problems:
            rows.append(("problems", problems))
    if run.result:
        rows.append(("outputs", summarize_outputs(run.result.get("outputs") or {}) or "-"))
        metrics = run.result.get("metrics") or {}
        if metrics:
            rows.append(("metrics", "  ".join(f"{k}={v}" for k, v in sorted(metrics.items()))))
    record_rows = [
        [name, str(record.get("state", "-")), _status(record), _written(name, record), run.uris[name]]
        for name, record in (
            ("launch", run.launch),
            ("rejected", run.rejection),
            ("skipped", run.skip),
            ("result", run.result),
        )
        if record is not None
    ]
    records_table = table(["RECORD", "STATE", "STATUS", "WRITTEN", "URI"], record_rows, {1: paint.state})
    return pairs(rows) + "\n\n" + records_table


def summarize_outputs(outputs: Mapping[str, Any]) -> list[str]:
    """One line per output: counts for lists, links as they are, verdicts and states for per-item mappings."""
    lines = []
    for key, value in sorted(outputs.items()):
        if key == "receipts" and isinstance(value, list):
            lines.append(f"receipts: {_receipts(value)}")
        elif isinstance(value, list):
            lines.append(f"{key}: {len(value)} item" + ("" if len(value) == 1 else "s"))
        elif isinstance(value, Mapping) and value and all(isinstance(v, Mapping) for v in value.values()):
            lines.append(f"{key}: {_per_item(value)}")
        elif isinstance(value, Mapping):
            lines.append(f"{key}: {len(value)} entr" + ("y" if len(value) == 1 else "ies"))
        else:
            lines.append(f"{key}: {truncate(str(value), 200)}")
    return lines


def _receipts(receipts: list[Any]) -> str:
    counted = [r for r in receipts if isinstance(r, Mapping)]
    notes = [f"{n} {what}" for what in ("skipped", "pending") if (n := sum(bool(r.get(what)) for r in counted))]
    sent = sum(int(r.get("bytes") or 0) for r in counted if not r.get("skipped"))
    return (
        f"{len(receipts)} object"
        + ("" if len(receipts) == 1 else "s")
        + f", {sent} bytes sent"
        + (f" ({', '.join(notes)})" if notes else "")
    )


def _per_item(items: Mapping[str, Any]) -> str:
    """`name verdict` (ratchet tests) or `name state` (ratchet algorithms), else how many."""
    described = []
    for name, item in items.items():
        word = item.get("verdict") or item.get("state")
        if not isinstance(word, str):
            return f"{len(items)} entries"
        described.append(f"{name} {word}")
    return truncate(", ".join(described), 200)


def _job_id(run: RunRecords, run_id: str | None) -> list[tuple[str, str]]:
    """The id the pipeline itself reported (its job id), where it is not the backend's run id (kfp.local)."""
    reported = (run.result or {}).get("run_id")
    return [("job id", str(reported))] if reported and reported != run_id else []


def _trigger(run: RunRecords) -> str:
    trigger = (run.launch or run.rejection or run.skip or {}).get("trigger") or {}
    uri = str(trigger.get("uri") or "-")
    if trigger.get("generation"):
        uri += f"#{trigger['generation']}"
    via = trigger.get("via")
    return f"{uri} (via {via})" if via else uri


def _status(record: Mapping[str, Any]) -> str:
    value = record.get("status")
    return str(value) if value is not None else "-"


def _written(name: str, record: Mapping[str, Any]) -> str:
    return next((str(record[key]) for key in _WRITTEN[name] if record.get(key)), "-")


COMMAND = Command(
    name="status",
    summary="show a run's records, by run key or by the trigger file's gs:// URI",
    description=(
        "Show what the results location holds for one run: its launch record (claimed, launched), its result "
        "(succeeded, failed: status, message, outputs, metrics), its rejection (the error and every problem) or "
        "its skip (why the delivery never became a run). "
        "A gs:// trigger URI is first followed to the run key Relay gave its current generation (or the "
        "generation after #); an object that is no trigger (notes.txt), to the key its skip is recorded under. "
        "A run_key a trigger chose is kept as <tenant>--<run_key> under a policy: given "
        "alone, it finds the run of the one tenant that has it (name it in full when several do). The policy is "
        "read as the functions read it (--policy, RELAY_POLICY_URI, the catalog's policy.yaml). Exit status 0 "
        "when records were found, 1 when not. With --wait, follow the run (a progress line on stderr) until it "
        "ends: exit status 0 succeeded, 1 failed, rejected, cancelled or skipped, 3 when --timeout passes first."
    ),
    examples="""\
examples:
  relay status push-3f2a1c0d9e8b7a6f5e4d
  relay status nightly-2026-11-21          # or in full: relay status lab--nightly-2026-11-21
  relay status gs://relay-triggers/trigger.yaml
  relay status gs://relay-triggers/trigger.yaml#1763726400123456
  relay status gs://relay-triggers/notes.txt                       # why it did not run: skipped
  relay status nightly-2026-11-21 --results gs://relay-results/relay --json
  relay status push-3f2a1c0d9e8b7a6f5e4d --wait --timeout 600   # 0 succeeded, 1 failed, 3 still going""",
    add_arguments=_arguments,
    run=_run,
)
