"""`relay backfill gs://bucket/prefix`: deliver the objects a tenant's trigger locations or routes cover that have
no record, as the messages the deployment would have received for them (relaycli.backfill_plan), so that the
functions decide each as for a live event and give it the run key its lost event would have had."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from relay import naming, set_store
from relay import policy as rules
from relay.errors import BlobNotFoundError
from relay.ports import BlobStore
from relay.status import read_run
from relaycli import pubsub
from relaycli.backfill_plan import (
    COLLECTED,
    Candidate,
    Listed,
    Planned,
    covers,
    message,
    plan,
    run_key,
    set_member,
    since,
)
from relaycli.command import Command, add_catalog, add_json, add_policy, add_results
from relaycli.config import Context
from relaycli.emulators import check_emulator
from relaycli.errors import EXIT_OK, UsageError
from relaycli.output import plural, table, to_json
from relaycli.policy import load_policy
from relaycli.runs import parse_since

DEFAULT_LIMIT = 1000


def _positive(text: str) -> int:
    value = int(text) if text.isdecimal() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number, 1 or more, found {text!r}")
    return value


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("uri", metavar="URI", help="gs://bucket/prefix: the objects to look at")
    parser.add_argument(
        "--since",
        type=parse_since,
        metavar="WHEN",
        help="only objects changed within this long (90s, 15m, 1h, 2d) or since this time (2026-11-21T08:00:00Z)",
    )
    parser.add_argument("--dry-run", action="store_true", help="list what would be delivered, deliver nothing")
    parser.add_argument("--tenant", metavar="NAME", help="only the objects of this tenant of the policy")
    parser.add_argument(
        "--limit",
        type=_positive,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"deliver at most N objects (default {DEFAULT_LIMIT}); run again for the rest",
    )
    parser.add_argument(
        "--topic",
        metavar="TOPIC",
        help="without a policy only: the deployment's trigger topic (name or projects/P/topics/T)",
    )
    parser.add_argument("--project", metavar="PROJECT", help="project of a short --topic name")
    add_results(parser)
    add_catalog(parser)
    add_policy(parser)
    add_json(parser)


def _run(args: argparse.Namespace, context: Context) -> int:
    bucket, prefix = _location(args.uri)
    config = context.config(results=args.results, catalog=args.catalog, policy=args.policy)
    results = config.require_results()
    policy = load_policy(context, config)
    topic = _topic(args, policy, context)
    if args.tenant is not None and policy.tenant(args.tenant) is None:
        names = ", ".join(tenant.name for tenant in policy.tenants) or "none"
        raise UsageError(f"--tenant: expected a tenant of the policy ({names}), found {args.tenant!r}")
    store = context.blob_store(config, args.uri, results)
    if not args.dry_run:
        check_emulator(context.env, "PUBSUB_EMULATOR_HOST")
    scope = _Scope(store, policy, bucket, prefix, args.tenant, topic, (results, config.catalog_uri))
    moment = _moment(args.since, context.clock())

    def recorded(candidate: Candidate, key: str) -> str | None:
        place = set_member(candidate)
        if place is not None and set_store.is_member(store, results, *place):
            return COLLECTED  # one read: a set route's object has no record of its own once collected
        found = read_run(store, results, key)
        return found.state if found is not None else None

    delivered: list[Planned] = []
    skipped: list[Planned] = []
    more = False
    for planned in plan(_keyed(scope, moment), recorded):
        if planned.recorded is not None:
            skipped.append(planned)
            continue
        if len(delivered) == args.limit:
            more = True
            break
        if not args.dry_run:
            data, attributes = message(planned.candidate)
            pubsub.publish(planned.candidate.cover.topic, data, attributes, context.env)
        delivered.append(planned)
    _report(args, context, delivered, skipped, more)
    return EXIT_OK


@dataclass(frozen=True)
class _Scope:
    """Where one backfill looks, and what decides which objects are whose."""

    store: BlobStore
    policy: rules.Policy
    bucket: str
    prefix: str
    tenant: str | None
    topic: str  # the trigger topic, without a policy
    own: tuple[str, str]  # the results and catalog locations: Relay's own objects


def _keyed(scope: _Scope, moment: datetime | None) -> Iterator[tuple[Candidate, str]]:
    """Each delivery of a covered object changed since `moment`, with its run key, a page of the listing at a time."""
    store, bucket = scope.store, scope.bucket
    for uri in store.list(naming.object_uri(bucket, scope.prefix)):
        name = naming.split_gs_uri(uri)[1]
        found = covers(scope.policy, bucket, name, tenant=scope.tenant, topic=scope.topic, own=scope.own)
        if not found:
            continue
        try:
            info = store.stat(uri)  # the version current now: the one whose event is missing
            listed = Listed(bucket, name, info.generation, info.size, info.updated)
            if not since(listed, moment):
                continue
            for cover in found:
                candidate = Candidate(listed, cover)
                yield candidate, run_key(candidate, _reader(store))
        except BlobNotFoundError:
            continue  # deleted or replaced since the listing: a new version has its own event


def _location(uri: str) -> tuple[str, str]:
    try:
        bucket, prefix = naming.split_gs_uri(uri)
    except ValueError:
        bucket, prefix = "", ""
    if not naming.is_bucket_name(bucket):
        raise UsageError(f"URI: expected gs://bucket/prefix, found {uri!r}")
    return bucket, prefix


def _topic(args: argparse.Namespace, policy: rules.Policy, context: Context) -> str:
    """Without a policy, the deployment's trigger topic, which the CLI cannot know; with one, the policy's."""
    if policy.source:
        if args.topic is not None:
            raise UsageError(
                f"--topic: expected none with a policy (each tenant's own topic is used), found {args.topic!r}"
            )
        return ""
    if args.topic is None:
        raise UsageError("--topic: expected the deployment's trigger topic (no policy names one), found none")
    return pubsub.topic_path(args.topic, args.project, context.env)


def _moment(value: timedelta | datetime | None, now: datetime) -> datetime | None:
    if value is None:
        return None
    return now - value if isinstance(value, timedelta) else value


def _reader(store: BlobStore) -> Callable[[str, int], bytes]:
    return lambda uri, generation: store.read(uri, generation=generation).data


def _row(planned: Planned) -> dict[str, object]:
    candidate = planned.candidate
    return {
        "uri": candidate.listed.uri,
        "generation": candidate.listed.generation,
        "via": candidate.cover.via,
        "topic": candidate.cover.topic,
        "what": candidate.cover.what,
        "run_key": planned.run_key,
        "recorded": planned.recorded,
    }


def _report(
    args: argparse.Namespace, context: Context, delivered: list[Planned], skipped: list[Planned], more: bool
) -> None:
    verb = "would deliver" if args.dry_run else "delivered"
    if args.json:
        shown = {"delivered": [_row(p) for p in delivered], "recorded": [_row(p) for p in skipped]}
        print(to_json({"dry_run": args.dry_run, **shown, "more": more}))
        return
    rows = [
        [
            verb if p.recorded is None else f"recorded: {p.recorded}",
            f"{p.candidate.listed.uri}#{p.candidate.listed.generation}",
            p.candidate.cover.what,
            p.run_key,
        ]
        for p in (*delivered, *skipped)
    ]
    if rows:
        print(table(["ACTION", "OBJECT", "AS", "RUN KEY"], rows))
    print(f"{verb} {plural(len(delivered), 'object')}, {len(skipped)} recorded already, under {args.uri}")
    if more:
        print(context.paint.next(f"\nmore than {args.limit} to deliver: run it again for the rest"))
    elif delivered and not args.dry_run:
        print(context.paint.next("\nfollow them: relay runs --limit " + str(len(delivered))))


COMMAND = Command(
    name="backfill",
    summary="deliver the objects under a prefix that a tenant's triggers or routes cover and no record names",
    description=(
        "Find the objects under gs://bucket/prefix that a tenant's trigger locations or routes cover and that have "
        "no record (no launch, rejection or skip under the run key their event would have had, nor, for a set "
        "route, a set holding them: events lost before Relay was deployed, a notification misconfigured), and "
        "deliver each as the message the deployment would "
        "have received: a trigger file as a trigger_uri naming its generation on the topic of the tenant whose "
        "trigger location holds it, a routed data object as a storage notification on the topic the policy's "
        "notifications wire to its bucket. The functions decide each as for a live event and give it the run key "
        "its event would have had (a digest of bucket, name and generation, or the trigger's own run_key), so a "
        "second backfill delivers nothing new. Relay's own objects and objects no tenant covers are left alone. "
        "--dry-run lists what would be delivered and what a record names already; --since keeps the objects "
        "changed since then; --limit bounds the deliveries of one run. The bucket is listed, and trigger files "
        "read, with the caller's own credentials; messages go out as 'relay publish' sends them. Without a "
        "policy every object under the prefix is taken as a trigger file and --topic names the trigger topic."
    ),
    examples="""\
examples:
  relay backfill gs://relay-triggers/assay/ --dry-run
  relay backfill gs://lab-data/assay/ --since 2d --tenant assay
  relay backfill gs://relay-triggers/ --topic relay-triggers --project relay-local --json""",
    add_arguments=_arguments,
    run=_run,
)
