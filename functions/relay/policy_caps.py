"""Which caps a run falls under, and what a trigger past one does: pure decisions on the policy's `caps`.

A run of pipeline P for tenant T counts against up to four scopes, each capped on its own: the deployment's (`caps`),
the deployment's for P (`caps.pipelines.P`), T's (`tenants.T.caps`) and T's for P (`tenants.T.caps.pipelines.P`).
It launches only when every one of them has room (relay.queue counts them).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from relay.errors import Problem
from relay.policy_model import Cap, Caps, Policy

DEPLOYMENT = "deployment"  # the scope id of the deployment's caps: no tenant name has a "-", so none is this


@dataclass(frozen=True)
class CapScope:
    """One capped scope: `tenant` None for every tenant's runs, `pipeline` None for every pipeline's; `where`
    names the policy entry, for messages."""

    tenant: str | None
    pipeline: str | None
    cap: Cap
    where: str

    @property
    def id(self) -> str:
        """The scope as one object name segment: `deployment`, `tenant-lab`, and `--<pipeline>` within either."""
        own = DEPLOYMENT if self.tenant is None else f"tenant-{self.tenant}"
        return own if self.pipeline is None else f"{own}--{self.pipeline}"


def cap_scopes(policy: Policy, tenant: str, pipeline: str) -> tuple[CapScope, ...]:
    """The capped scopes a run of `pipeline` for `tenant` ("" : none) counts against, widest first."""
    found: list[CapScope] = []

    def add(caps: Caps, owner: str | None, where: str) -> None:
        if not caps.cap.empty:
            found.append(CapScope(owner, None, caps.cap, where))
        cap = caps.pipeline(pipeline)
        if not cap.empty:
            found.append(CapScope(owner, pipeline, cap, f"{where}.pipelines.{pipeline}"))

    add(policy.caps, None, "caps")
    own = policy.tenant(tenant) if tenant else None
    if own is not None:
        add(own.caps, tenant, f"tenants.{tenant}.caps")
    return tuple(found)


def rejecting(scopes: Collection[CapScope]) -> tuple[CapScope, ...]:
    """The scopes whose cap rejects a trigger past it (at_cap: reject) instead of queueing it."""
    return tuple(scope for scope in scopes if scope.cap.at_cap == "reject")


def superseding(scopes: Collection[CapScope]) -> bool:
    """Whether a newer generation of an object supersedes the older one's run under these scopes (at_cap:
    supersede on any of them)."""
    return any(scope.cap.at_cap == "supersede" for scope in scopes)


def supersedes_anywhere(policy: Policy) -> bool:
    """Whether any cap of the policy says at_cap: supersede (else no delivery looks for an object's pointer)."""
    every = (policy.caps, *(tenant.caps for tenant in policy.tenants))
    return any(cap.at_cap == "supersede" for caps in every for cap in (caps.cap, *(c for _, c in caps.pipelines)))


def paused_by(paused: Collection[tuple[str, str]], tenant: str, pipeline: str) -> str | None:
    """Which pause holds a run of `pipeline` for `tenant` back (`relay pause`), or None. `paused` holds
    (tenant, "") for a whole tenant and (tenant, pipeline) for one of its pipelines."""
    if (tenant, "") in paused:
        return f"tenant {tenant or '(none)'} is paused"
    if (tenant, pipeline) in paused:
        return f"pipeline {pipeline} of tenant {tenant or '(none)'} is paused"
    return None


def describe(scope: CapScope, *, rate: bool) -> str:
    """Why a run waits (or was rejected) at this scope's cap, in a record's words."""
    who = "the deployment" if scope.tenant is None else f"tenant {scope.tenant}"
    if scope.pipeline is not None:
        who += f"'s pipeline {scope.pipeline}"
    if rate:
        return f"{who} launched its {scope.cap.max_per_minute} runs this minute ({scope.where}.max_per_minute)"
    return f"{who} has {scope.cap.max_in_flight} runs in flight ({scope.where}.max_in_flight)"


def priority_problems(policy: Policy, tenant: str, priority: int) -> list[Problem]:
    """A trigger's `priority` above what its tenant's caps allow (`max_priority`; the deployment's `caps` for a
    deployment without tenants); the default 0 always passes."""
    own = policy.tenant(tenant) if tenant else None
    caps, where = (own.caps, f"tenants.{tenant}.caps") if own is not None else (policy.caps, "caps")
    if priority <= caps.max_priority:
        return []
    return [Problem("priority", f"at most {caps.max_priority} ({where}.max_priority)", str(priority))]
