"""Chains carried out: a trigger's or route's chain checked when it arrives, and its next runs started when a run
ends (relay.chains decides what; this starts it through the launch path of triggers).

relay.results leaves `chain.json` beside every end a step of the run's chain follows; `follow` (from the
reconciler's tick and the local runner) starts each next run under its derived key (relay.chains.next_key),
claimed create-only as a trigger's run is, through the caps and the queue: however often an end is seen, by however
many ticks or instances at once, each next run starts once. A next run that cannot start (an output its result
lacks, a pipeline the policy no longer allows, the chain's ceiling) is recorded rejected `chain_failed` under that
key, naming why. Once every next run is settled, `chained.json` says what the end chained to, and the marker goes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from relay import chains, naming, records
from relay import policy as rules
from relay.catalog import PipelineDefinition, check_parameters
from relay.chain_checks import ceiling, definition_or_problem
from relay.errors import (
    BlobNotFoundError,
    ClaimHeldError,
    InvalidTriggerError,
    PreconditionFailedError,
    Problem,
)
from relay.events import EventInfo, InlineDelivery
from relay.service import Relay, _claim_and_launch, _Loaded, _reject
from relay.status import RunRecords, read_run
from relay.triggers import RESERVED_PARAMETERS, Trigger

CHAIN_FAILED = "chain_failed"


# --- at a run's end --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """One next run of an ended run: the step that started it, its key, and what became of it (an Outcome's kind:
    launched, queued, duplicate, rejected)."""

    step: int
    pipeline: str
    run_key: str
    outcome: str
    message: str

    def as_record(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "pipeline": self.pipeline,
            "run_key": self.run_key,
            "outcome": self.outcome,
            "message": self.message,
        }


@dataclass(frozen=True)
class Followed:
    """What one look at an ended run's chain did: "chained" (every next run settled, `links` says how), "none"
    (no step follows, `message` says why) or "held" (the next look tries again)."""

    run_key: str
    action: str
    links: tuple[Link, ...] = ()
    message: str = ""


def follow(relay: Relay, run_key: str) -> Followed | None:
    """Start the next runs of ended run `run_key`'s chain, from its `chain.json` (None: there is none, or no
    longer: another look settled it). Idempotent and safe at once from many callers (see the module)."""
    results = relay.settings.results_uri
    uri = naming.chain_record(results, run_key)
    try:
        generation = relay.store.read(uri).generation
    except BlobNotFoundError:
        return None
    run = read_run(relay.store, results, run_key)
    if run is None or run.result is None or run.launch is None:
        return Followed(run_key, "held", message="its end is not recorded yet")
    launch, result = run.launch, run.result
    trigger = dict(launch.get("trigger") or {})
    if run.state == records.FAILED:
        if run.retry is not None:
            return Followed(run_key, "held", message="its retry is decided first")
        first, number = str(trigger.get("attempt_of") or run_key), int(trigger.get("attempt") or 1)
        if read_run(relay.store, results, naming.attempt_key(first, number + 1)) is not None:
            return _settled(relay, run_key, generation, (), "a retry follows it: that attempt's end carries the chain")
    steps = chains.steps_of(launch)
    todo = chains.following(steps, run.pipeline, run.state, chains.depth_of(launch))
    if not todo:
        return _settled(relay, run_key, generation, (), f"no step of its chain follows a {run.state} {run.pipeline}")
    finished = chains.Finished(
        run_key=run_key,
        pipeline=run.pipeline,
        state=run.state,
        outputs=_mapping(result.get("outputs")),
        metrics=_mapping(result.get("metrics")),
        parameters=_mapping(launch.get("parameters")),
    )
    links: list[Link] = []
    for index, step in todo:
        link = _start(relay, run, trigger, steps, index, step, finished)
        if link is None:
            return Followed(run_key, "held", tuple(links), f"{chains.next_key(run_key, index)} is being launched")
        links.append(link)
    return _settled(relay, run_key, generation, tuple(links), "")


def _start(
    relay: Relay,
    run: RunRecords,
    trigger: Mapping[str, Any],
    steps: tuple[chains.Step, ...],
    index: int,
    step: chains.Step,
    finished: chains.Finished,
) -> Link | None:
    """Start (or find started, or record refused) the run step `index` makes after `run`; None: a claim on it is
    held by another launch (the next look finds it settled)."""
    launch = run.launch or {}
    key = chains.next_key(run.run_key, index)
    now = relay.clock()
    depth = chains.depth_of(launch) + 1
    first = str(trigger.get("chain_of") or run.run_key)
    reference = {
        "uri": trigger.get("uri"),
        "event_id": f"chain-{key}",
        "event_type": "relay.chain",
        "event_time": records.timestamp(now),
        "via": "chain",
        **records.chain_link(first=first, previous=run.run_key, depth=depth, step=index),
    }
    delivery = InlineDelivery(
        event=EventInfo(id=f"chain-{key}", type="relay.chain", source=run.run_key, time=now),
        topic="chain",
        message_id=key,
        data=b"",
        format="json",
    )
    loaded = _Loaded(b"", "json", key, reference)
    tenant_name = str(launch.get("tenant") or "")
    tenant = relay.policy.tenant(tenant_name) if tenant_name else None
    most, where = ceiling(relay.policy, tenant_name)
    problems = [p for p in (chains.ceiling_problem(depth, most, where),) if p is not None]
    if tenant_name and tenant is None:
        problems.append(Problem("tenant", "a tenant of the policy", repr(tenant_name)))
    parameters, missing = chains.render(step, index, finished)
    problems += missing
    definition = definition_or_problem(relay.catalog, step.pipeline, f"chain[{index}].pipeline", key)
    if isinstance(definition, Problem):
        problems.append(definition)
    elif not missing:
        problems += check_parameters(definition, parameters)
        problems += rules.check_request(relay.policy, tenant, definition.name, parameters, relay.policy_context)
    if problems or not isinstance(definition, PipelineDefinition):
        refusal = InvalidTriggerError(f"chain of {run.run_key}", problems, code=CHAIN_FAILED)
        outcome = _reject(relay, delivery, loaded, key, step.pipeline, refusal)
        return Link(index, step.pipeline, key, outcome.outcome, outcome.message)
    following = Trigger(
        pipeline=definition.name,
        parameters={k: v for k, v in parameters.items() if k not in RESERVED_PARAMETERS},
        labels=launch.get("labels") or {},
        priority=int(launch.get("priority") or 0),
        chain=steps,
    )
    try:
        # The launch path of triggers: create-only claim, caps and queue, takeover after a crash, exactly once.
        outcome = _claim_and_launch(relay, delivery, loaded, key, following, definition, tenant)
    except ClaimHeldError:
        return None
    return Link(index, step.pipeline, key, outcome.outcome, outcome.message)


def _settled(relay: Relay, run_key: str, generation: int, links: tuple[Link, ...], message: str) -> Followed:
    """Record what the end chained to (create-only: the first look's record stands), then drop the marker."""
    results = relay.settings.results_uri
    record = {
        "run_key": run_key,
        "chained": [link.as_record() for link in links],
        "message": message,
        "chained_at": records.timestamp(relay.clock()),
    }
    with contextlib.suppress(PreconditionFailedError):
        relay.store.write(naming.chained_record(results, run_key), records.encode(record), if_generation_match=0)
    with contextlib.suppress(PreconditionFailedError, BlobNotFoundError):
        relay.store.delete(naming.chain_record(results, run_key), if_generation_match=generation)
    return Followed(run_key, "chained" if links else "none", links, message)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
