"""`relay pause --tenant T [--pipeline P]` and `relay resume`: hold a tenant's (or one pipeline's) runs in the
queue, and let them go again."""

from __future__ import annotations

import argparse

from relay import drain, queue
from relay.policy import TENANT_NAME
from relay.service import Relay
from relaycli.command import Command, add_json, add_results
from relaycli.config import Context
from relaycli.errors import EXIT_OK, UsageError
from relaycli.output import to_json
from relaycli.sync import relay_for


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenant", required=True, metavar="T", help="the tenant of the policy to pause or resume")
    parser.add_argument("--pipeline", metavar="P", help="only this pipeline of the tenant's (default: all of them)")
    add_results(parser)
    add_json(parser)


def _scope(relay: Relay, args: argparse.Namespace) -> tuple[str, str]:
    tenant, pipeline = str(args.tenant), str(args.pipeline or "")
    names = [t.name for t in relay.policy.tenants]
    if not TENANT_NAME.fullmatch(tenant) or tenant not in names:
        raise UsageError(f"--tenant: expected a tenant of the policy ({', '.join(names) or 'none'}), found {tenant!r}")
    return tenant, pipeline


def _described(tenant: str, pipeline: str) -> str:
    return f"pipeline {pipeline} of tenant {tenant}" if pipeline else f"tenant {tenant}"


def _pause(args: argparse.Namespace, context: Context) -> int:
    relay = relay_for(context, args.results)
    tenant, pipeline = _scope(relay, args)
    results = relay.settings.results_uri
    changed = queue.pause(relay.store, results, tenant, pipeline, by="relay pause", now=relay.clock())
    what = _described(tenant, pipeline)
    message = f"{what} paused: its runs queue and none launches" if changed else f"{what} was paused already"
    print(to_json({"paused": True, "changed": changed, "message": message}) if args.json else message)
    return EXIT_OK


def _resume(args: argparse.Namespace, context: Context) -> int:
    relay = relay_for(context, args.results)
    tenant, pipeline = _scope(relay, args)
    changed = queue.resume(relay.store, relay.settings.results_uri, tenant, pipeline)
    drained = drain.drain(relay)
    message = f"{_described(tenant, pipeline)} " + ("resumed" if changed else "was not paused")
    message += f"; {len(drained.launched)} queued run(s) launched" + (
        f" ({drained.stopped})" if drained.stopped else ""
    )
    if args.json:
        print(to_json({"paused": False, "changed": changed, "launched": list(drained.launched), "message": message}))
    else:
        print(message)
    return EXIT_OK


PAUSE = Command(
    name="pause",
    summary="hold a tenant's runs (or one pipeline's) in the queue",
    description=(
        "Pause a tenant, or one of its pipelines: its triggers are still accepted, recorded 'queued' in arrival "
        "order, and none launches until 'relay resume'. Runs already launched go on. A running function instance "
        "sees the pause within 5 s (it looks at pauses at most that often). 'relay runs --state queued' lists what "
        "waits; 'relay status RUN_KEY' says its place and why it waits."
    ),
    examples="""\
examples:
  relay pause --tenant lab
  relay pause --tenant lab --pipeline push""",
    add_arguments=_arguments,
    run=_pause,
)

RESUME = Command(
    name="resume",
    summary="end a pause and launch what waits, as far as the caps allow",
    description=(
        "End a pause made by 'relay pause' (the same --tenant and --pipeline), then drain the queue once: queued "
        "runs launch in arrival order while their caps have room; the rest launch as runs end and on each "
        "reconcile tick."
    ),
    examples="""\
examples:
  relay resume --tenant lab
  relay resume --tenant lab --pipeline push""",
    add_arguments=_arguments,
    run=_resume,
)
