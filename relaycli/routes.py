"""`relay validate --object gs://bucket/name [--topic T]`: what a storage notification of a data object, arriving on
topic T, would start through a route.

The decisions are the functions' own (relay.service and relay.policy), taken in their order: the topic's tenant and
whether the topic may carry the bucket's notifications at all, the route of that tenant that takes the object, the
templates filled from the object's facts as storage has them (or, for an object not there yet, from flags: a
what-if), the pipeline's inputs, the tenant's policy, and the run key.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from relay import naming
from relay import policy as rules
from relay.catalog import Catalog
from relay.errors import BlobNotFoundError, BlobRequestError, InvalidTriggerError, Problem
from relay.events import EventInfo, Message, ObjectDelivery
from relay.routes import ObjectEvent
from relay.service import (
    check_trigger,
    object_event,
    refuse_message,
    route_for,
    route_run_key,
    route_trigger,
    tenant_for,
)
from relay.sets import group_of
from relaycli import policy, pubsub
from relaycli.config import CliConfig, Context
from relaycli.errors import EXIT_FAILED, EXIT_OK, CliError, UsageError
from relaycli.output import pairs, to_json

_WHAT_IF = "--metadata, --content-type"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--object",
        metavar="URI",
        help="instead of FILE: what a storage notification of gs://bucket/name[#generation] on --topic would start "
        "through a route (--topic defaults to the one topic the policy's notifications wire to the bucket)",
    )
    parser.add_argument(
        "--metadata",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="with --object, for an object not in storage yet (a what-if): custom metadata it would carry "
        "(repeatable); an existing object's are read from storage",
    )
    parser.add_argument(
        "--content-type", metavar="TYPE", help="with --object, for an object not in storage yet: its content type"
    )


@dataclass(frozen=True)
class _Facts:
    """The object as a route's templates would see it, and whether that is storage's or the flags' (a what-if)."""

    event: ObjectEvent
    what_if: bool


def check_object(args: argparse.Namespace, context: Context, config: CliConfig) -> int:
    """Print the verdict, route, parameters, problems and run key for `args.object`; 0 when it would start a run."""
    bucket, name, generation = _object(args.object)
    metadata = _metadata(args.metadata)
    deployed = policy.load_policy(context, config)
    topic = _topic(args, context, deployed, bucket)
    # The notification as the functions parse it: its topic and the object it names, nothing else it says.
    event = EventInfo(id="(validate)", type="google.cloud.pubsub.topic.v1.messagePublished", source=topic, time=None)
    origin = Message(topic, "(validate)")
    delivery = ObjectDelivery(event, bucket, name, generation, None, "storage-notification", origin)
    tenant = tenant_for(deployed, delivery)
    shown: dict[str, Any] = {"object": delivery.uri, "topic": topic or None, "tenant": tenant.name if tenant else None}
    refusal = refuse_message(deployed, delivery, tenant)
    if refusal is not None:
        return _print(args, {**shown, "route": None, "valid": False, "code": refusal.code}, refusal.problems)
    route = route_for(delivery, tenant)
    if tenant is None or route is None:  # the tenant's own routes only: another's cannot take its notifications
        owned = [(tenant.name, r) for r in tenant.routes] if tenant else []
        listed = [f"{owner}/{r.id} (gs://{r.bucket}/{r.prefix}{r.glob})" for owner, r in owned]
        return _print(args, {**shown, "route": None, "valid": False, "routes": listed}, ())
    if route.set_rule is not None:  # its run is its folder's set's, made from the set when the set closes
        folder = f"gs://{bucket}/{group_of(name)}/"
        found = {**shown, "route": f"{tenant.name}/{route.id}", "pipeline": route.pipeline, "what_if": False}
        found.update(parameters={}, run_key=None, valid=True, code=None, set=folder)
        return _print(args, found, ())
    facts = _facts(args, context, config, delivery, metadata)
    problems: tuple[Problem, ...] = ()
    parameters: dict[str, Any] = {}
    code = None
    if facts.event.size == 0:  # the functions skip it before its route's templates
        problems, code = (Problem("(object)", "an object with content", "zero bytes"),), "skipped"
    else:
        try:
            trigger = route_trigger(route, facts.event)
            parameters = dict(trigger.parameters)
            catalog = config.require_catalog()
            check_trigger(Catalog(context.blob_store(config, catalog), catalog), trigger, delivery.uri)
            decision = policy.decision_context(config)
            problems = tuple(rules.check_trigger(deployed, tenant, route.pipeline, parameters, None, decision))
            code = "policy_denied" if problems else None
        except InvalidTriggerError as invalid:
            problems, code = invalid.problems, invalid.code
    found = {
        **shown,
        "route": f"{tenant.name}/{route.id}",
        "pipeline": route.pipeline,
        "what_if": facts.what_if,
        "parameters": parameters,
        "run_key": route_run_key(route, facts.event) if facts.event.generation is not None else None,
        "valid": not problems,
        "code": code,
    }
    return _print(args, found, problems)


def _print(args: argparse.Namespace, found: dict[str, Any], problems: tuple[Problem, ...]) -> int:
    valid = bool(found["valid"])
    if args.json:
        listed = [{"field": p.field, "expected": p.expected, "found": p.found} for p in problems]
        print(to_json({**found, "problems": listed} if "code" in found else found))
        return EXIT_OK if valid else EXIT_FAILED
    uri, topic = found["object"], found["topic"] or "no topic"
    if found["route"] is None and "code" in found:
        lines = [f"refused: a notification of {uri} on {topic} would be refused ({found['code']})"]
        print("\n".join([*lines, *(f"  {p}" for p in problems)]))
        return EXIT_FAILED
    if found["route"] is None:
        owner = f"tenant {found['tenant']}" if found["tenant"] else "no tenant"
        routes = ", ".join(found["routes"]) or "none"
        print(f"no route: {uri} would start nothing on {topic} ({owner}; routes: {routes})")
        return EXIT_FAILED
    if found.get("set"):
        print(
            f"{uri}: would join the open set of {found['set']} (route {found['route']}, pipeline {found['pipeline']})"
        )
        return EXIT_OK
    verdict = "would start" if valid else f"would be rejected ({found['code']})"
    if found["code"] == "skipped":
        verdict = "would be skipped"
    what_if = found["what_if"]
    rows = [
        ("topic", found["topic"]),
        ("route", found["route"]),
        ("pipeline", found["pipeline"]),
        ("facts", f"what-if: the object is not in storage; {_WHAT_IF} as given" if what_if else "from storage"),
        ("parameters", to_json(found["parameters"]) if found["parameters"] else "-"),
        ("run key", found["run_key"] or f"{found['pipeline']}-<digest of the object and its generation>"),
    ]
    print("\n".join([f"{uri}: {verdict}", pairs(rows), *(f"  {p}" for p in problems)]))
    return EXIT_OK if valid else EXIT_FAILED


def _object(given: str) -> tuple[str, str, int | None]:
    uri, hashed, number = given.partition("#")
    bucket, name = naming.split_gs_uri(uri) if uri.startswith("gs://") else ("", "")
    if not bucket or not name or (hashed and not (number.isascii() and number.isdecimal())):
        raise UsageError(f"--object: expected gs://bucket/name[#generation], found {given!r}")
    return bucket, name, int(number) if hashed else None


def _metadata(items: list[str]) -> dict[str, str]:
    metadata = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise UsageError(f"--metadata: expected KEY=VALUE, found {item!r}")
        metadata[key] = value
    return metadata


def _topic(args: argparse.Namespace, context: Context, deployed: rules.Policy, bucket: str) -> str:
    """The topic the notification would arrive on: --topic, else the one the policy wires to the bucket."""
    if args.topic is not None:
        return pubsub.topic_path(args.topic, args.project, context.env)
    wired = [n.topic for n in deployed.notifications if bucket in rules.wired_buckets(deployed, n.topic)]
    if len(wired) == 1:
        return wired[0]
    if not deployed.source:  # no policy: no tenant, so no route, whatever the topic
        return ""
    if wired:
        found = f"none, and notifications wires {bucket} to {len(wired)} topics ({', '.join(wired)})"
    else:
        found = f"none, and notifications wires {bucket} to no topic (a notification of it is refused on any)"
    raise UsageError(f"--topic: expected the topic the notification would arrive on, found {found}")


def _facts(
    args: argparse.Namespace, context: Context, config: CliConfig, delivery: ObjectDelivery, metadata: dict[str, str]
) -> _Facts:
    """The object's facts at the generation, read as the functions read them. An object not there (at that
    generation) is a what-if whose facts are the flags'; flags for an object that is there would be facts storage
    does not have, and the functions never take: refused."""
    uri, generation = delivery.uri, delivery.generation
    try:
        info = context.blob_store(config, uri).stat(uri, generation=generation)
    except BlobNotFoundError:
        event = ObjectEvent(delivery.bucket, delivery.name, generation, None, args.content_type, metadata)
        return _Facts(event, what_if=True)
    except BlobRequestError as refused:
        raise CliError(f"{uri}: expected an object Cloud Storage can address, found {refused}") from None
    except OSError as exc:
        raise CliError(f"{uri}: expected a readable object or none, found {exc.strerror or exc}") from None
    if metadata or args.content_type is not None:
        raise UsageError(
            f"{_WHAT_IF}: expected them only for an object not in storage (a what-if), found {uri} in storage at "
            f"generation {info.generation}: its own facts are the ones the functions read"
        )
    return _Facts(object_event(info, delivery), what_if=False)
