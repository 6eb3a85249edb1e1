"""`relay sync`: one reconcile tick from here, as the scheduled function runs it; and the Relay the lifecycle
commands (sync, cancel, rerun) work with."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from relay import lifecycle, runtime
from relay.adapters import factory
from relay.catalog import Catalog
from relay.config import Settings
from relay.errors import ConfigError
from relay.service import Relay
from relaycli.command import Command, add_json, add_results, run_count
from relaycli.config import Context
from relaycli.errors import EXIT_OK, UsageError
from relaycli.output import table, to_json, truncate


def relay_for(context: Context, results: str | None) -> Relay:
    """Relay as the functions build it from RELAY_* (backend, catalog, policy), on the command's store."""
    config = context.config(results=results)
    results_uri = config.require_results()
    try:
        settings = Settings.from_env({**context.env, "RELAY_RESULTS_URI": results_uri})
    except ConfigError as error:
        raise UsageError(str(error)) from None
    store = context.blob_store(config, results_uri, settings.catalog_uri)
    try:
        backend = factory.backend(settings, store=store)  # the local backend records in the command's store
    except ConfigError as error:  # RELAY_BACKEND=local where kfp is not installed
        raise UsageError(str(error)) from None
    return Relay(
        settings=settings,
        store=store,
        catalog=Catalog(store, settings.catalog_uri),
        backend=backend,
        notifier=factory.notifier_for(settings.notify_topic),
        policy=runtime.load_policy(settings, store),
    )


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--limit",
        type=run_count,
        metavar="N",
        help="ask the backend about at most N runs (default RELAY_RECONCILE_PER_TICK, else 50)",
    )
    add_results(parser)
    add_json(parser)


def _run(args: argparse.Namespace, context: Context) -> int:
    relay = relay_for(context, args.results)
    tick = lifecycle.reconcile(relay, limit=args.limit)
    if args.json:
        print(to_json({**asdict(tick), "seen": [asdict(item) for item in tick.seen]}))
    elif not tick.seen and not tick.stopped and not tick.retried and not tick.sets:
        print(f"no launched run without a result on the {relay.backend.name} backend")
    else:
        if tick.seen:
            rows = [[s.run_key, s.recorded, s.backend, s.action, truncate(s.message, 60)] for s in tick.seen]
            print(table(["RUN KEY", "RECORDED", "BACKEND", "DONE", "MESSAGE"], rows))
        print(lifecycle.tick_summary(tick))
    return EXIT_OK


COMMAND = Command(
    name="sync",
    summary="bring launched runs' records to their backend's state",
    description=(
        "Ask the backend (RELAY_BACKEND) about the runs that are launched and have no result, from past where the "
        "last tick stopped (in run key order, wrapping around), and record what it says: 'running' in launch.json, "
        "and for a run that ended without writing its own result a result.json (succeeded, failed or cancelled, the "
        "backend's error line, times). A result the run writes meanwhile always wins. A 5xx, a 429 or no answer "
        "from the backend ends the tick; the next starts there. The deployed functions do the same on a schedule."
    ),
    examples="""\
examples:
  relay sync
  relay sync --limit 10 --json""",
    add_arguments=_arguments,
    run=_run,
)
