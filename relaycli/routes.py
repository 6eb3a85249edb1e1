"""`relay validate --object gs://bucket/name`: what a data object landing there would start, through a route.

The decisions are the functions' own (relay.service and relay.policy), taken in their order: the route that takes
the object and its tenant, the templates filled from what the notification would say, the pipeline's inputs, the
tenant's policy, and the run key.
"""

from __future__ import annotations

import argparse
from typing import Any

from relay import naming
from relay import policy as rules
from relay.catalog import Catalog
from relay.errors import BlobNotFoundError, InvalidTriggerError, Problem
from relay.routes import ObjectEvent
from relay.service import check_trigger, route_run_key, route_trigger
from relaycli import policy
from relaycli.config import CliConfig, Context
from relaycli.errors import EXIT_FAILED, EXIT_OK, CliError, UsageError
from relaycli.output import pairs, to_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--object",
        metavar="URI",
        help="instead of FILE: what a data object gs://bucket/name[#generation] would start through a route",
    )
    parser.add_argument(
        "--metadata",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="with --object: custom metadata the object would carry (repeatable)",
    )
    parser.add_argument("--content-type", metavar="TYPE", help="with --object: the object's content type")


def check_object(args: argparse.Namespace, context: Context, config: CliConfig) -> int:
    """Print the route, parameters, problems and run key for `args.object`; 0 when it would start a run."""
    event = _event(args, context, config)
    deployed = policy.load_policy(context, config)
    matched = rules.route_for(deployed, event.bucket, event.name)
    if matched is None:
        routes = [f"{t.name}/{r.id} (gs://{r.bucket}/{r.prefix}{r.glob})" for t in deployed.tenants for r in t.routes]
        found = {"object": event.uri, "route": None, "valid": False, "routes": routes}
        if args.json:
            print(to_json(found))
        else:
            print(f"no route: {event.uri} would start nothing (routes: {', '.join(routes) or 'none'})")
        return EXIT_FAILED
    tenant, route = matched
    problems: tuple[Problem, ...] = ()
    parameters: dict[str, Any] = {}
    code = None
    try:
        trigger = route_trigger(route, event)
        parameters = dict(trigger.parameters)
        catalog = config.require_catalog()
        check_trigger(Catalog(context.blob_store(config, catalog), catalog), trigger, event.uri)
        decision = policy.decision_context(config)
        problems = tuple(rules.check_trigger(deployed, tenant, route.pipeline, parameters, None, decision))
        code = "policy_denied" if problems else None
    except InvalidTriggerError as invalid:
        problems, code = invalid.problems, invalid.code
    run_key = route_run_key(route, event) if event.generation is not None else None
    if args.json:
        print(
            to_json(
                {
                    "object": event.uri,
                    "route": f"{tenant.name}/{route.id}",
                    "tenant": tenant.name,
                    "pipeline": route.pipeline,
                    "parameters": parameters,
                    "run_key": run_key,
                    "valid": not problems,
                    "code": code,
                    "problems": [{"field": p.field, "expected": p.expected, "found": p.found} for p in problems],
                }
            )
        )
    else:
        verdict = "would start" if not problems else f"would be rejected ({code})"
        rows = [
            ("route", f"{tenant.name}/{route.id}"),
            ("pipeline", route.pipeline),
            ("parameters", to_json(parameters) if parameters else "-"),
            ("run key", run_key or f"{route.pipeline}-<digest of the object and its generation>"),
        ]
        lines = [f"{event.uri}: {verdict}", pairs(rows), *(f"  {p}" for p in problems)]
        print("\n".join(lines))
    return EXIT_FAILED if problems else EXIT_OK


def _event(args: argparse.Namespace, context: Context, config: CliConfig) -> ObjectEvent:
    """What the notification would say: the generation and size of the object if it exists, else what is given."""
    given: str = args.object
    uri, hashed, number = given.partition("#")
    bucket, name = naming.split_gs_uri(uri) if uri.startswith("gs://") else ("", "")
    if not bucket or not name or (hashed and not (number.isascii() and number.isdecimal())):
        raise UsageError(f"--object: expected gs://bucket/name[#generation], found {given!r}")
    metadata = {}
    for item in args.metadata:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise UsageError(f"--metadata: expected KEY=VALUE, found {item!r}")
        metadata[key] = value
    generation, size = (int(number) if hashed else None), None
    try:
        info = context.blob_store(config, uri).stat(uri)
        if generation is None or generation == info.generation:
            generation, size = info.generation, info.size
    except BlobNotFoundError:
        pass  # not there yet: the run key then depends on the generation it will get
    except OSError as exc:
        raise CliError(f"{uri}: expected a readable object or none, found {exc.strerror or exc}") from None
    return ObjectEvent(bucket, name, generation, size, args.content_type, metadata)
