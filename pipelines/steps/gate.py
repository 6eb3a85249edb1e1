"""The deployment policy inside a step: read from the deployment (never from the spec), applied before any byte or
credential leaves, with the same functions the trigger function applied.

A step learns its tenant from its `tenant` parameter, which Relay fills; before anything else the gate checks that
parameter, the run key and every other parameter against the launch record the functions wrote (launch.py), so
someone who starts runs on the backend directly cannot name a tenant, or anything else, of their own.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from pipelines.steps.egress import STRICT, Egress
from pipelines.steps.errors import StepError
from pipelines.steps.launch import Launch, LaunchRecords, launch_records, verify_launch
from pipelines.steps.ratchet.sandbox import OFFLINE_REQUIRED, SandboxRules
from relay import policy as rules
from relay.adapters.stores import results_store
from relay.config import setting
from relay.errors import RelayError
from relay.policy import Limits, Policy, Rule, Tenant


@dataclass(frozen=True)
class Permit:
    """What one step may do: the rule that allows its target, the secrets it may resolve, its ceilings."""

    tenant: Tenant | None
    limits: Limits = field(default_factory=Limits)
    bound: Mapping[str, str] = field(default_factory=dict)  # `parameters.destination.key` -> reference
    rule: Rule | None = None
    egress: Egress = STRICT  # public addresses, plus the hosts the rule names
    launch: Launch | None = None  # what the run was verified to be (None: a gate that verifies nothing)

    @property
    def sandbox(self) -> SandboxRules:
        """How the local cluster must isolate algorithms: as the rule says, else no network and no run unsandboxed."""
        if self.rule is None or self.rule.kind != "local":
            return OFFLINE_REQUIRED
        return SandboxRules(network=self.rule.network, required=self.rule.require_sandbox)


def named_hosts(rule: Rule | None) -> tuple[str, ...]:
    """The hosts the operator wrote into a rule: only these may resolve to private addresses."""
    if rule is None:
        return ()
    urls = (rule.url, rule.endpoint, rule.host)
    return tuple(host for url in urls if url and (host := urlsplit(url).hostname))


class Gate(Protocol):
    """Admits a step's request, or refuses it (StepError 403) naming every refused item."""

    def launch(self, pipeline: str, parameters: Mapping[str, Any]) -> Launch:
        """The launch the run's parameters are exactly those of; StepError 403 for a run nobody launched."""
        ...

    def admit(self, pipeline: str, parameters: Mapping[str, Any]) -> Permit: ...

    def check_location(self, tenant: Tenant | None, uri: str, where: str, *, key: str) -> None:
        """StepError 403 unless `uri` lies under one of the tenant's `key` locations (sources or code)."""
        ...


@dataclass(frozen=True)
class PolicyGate:
    """The deployment's policy, and what it must know of the deployment (backend, Relay's own storage)."""

    policy: Policy = rules.NO_POLICY
    scope: rules.Context = field(default_factory=lambda: rules.Context(local=False, protected=()))
    launches: LaunchRecords = field(default_factory=LaunchRecords)  # none: no run is verified, so none is admitted

    def launch(
        self, pipeline: str, parameters: Mapping[str, Any], *, defaults: Mapping[str, Any] | None = None
    ) -> Launch:
        direct = self.policy.direct_tenant
        return verify_launch(self.launches, pipeline, parameters, direct_tenant=direct, defaults=defaults)

    def admit(self, pipeline: str, parameters: Mapping[str, Any]) -> Permit:
        launch = self.launch(pipeline, parameters)  # first: nothing is checked for a run nobody launched
        tenant = self._tenant(parameters)
        problems = rules.check_request(self.policy, tenant, pipeline, parameters, self.scope)
        if problems:
            raise StepError(403, "policy_denied: " + "; ".join(str(p) for p in problems))
        destination = parameters.get("destination") or {}
        rule = None
        if pipeline in (rules.PUSH, rules.RATCHET) and isinstance(destination, Mapping):
            cluster = pipeline == rules.RATCHET
            rule = rules.matching_rule(self.policy, tenant, destination, self.scope, cluster=cluster)
        return Permit(
            tenant=tenant,
            limits=tenant.limits if tenant else Limits(),
            bound=rules.bound_references(self.policy, tenant, pipeline, parameters, self.scope),
            rule=rule,
            egress=Egress(allow_private=named_hosts(rule)),
            launch=launch,
        )

    def check_location(self, tenant: Tenant | None, uri: str, where: str, *, key: str) -> None:
        problems = rules.check_location(self.policy, tenant, uri, self.scope, where, key=key)
        if problems:
            raise StepError(403, "policy_denied: " + "; ".join(str(p) for p in problems))

    def _tenant(self, parameters: Mapping[str, Any]) -> Tenant | None:
        name = parameters.get("tenant") or ""
        if not isinstance(name, str):
            raise StepError(400, f"parameters.tenant: expected a tenant name, found {name!r}")
        if not name:
            return None
        tenant = self.policy.tenant(name)
        if tenant is None:
            known = ", ".join(t.name for t in self.policy.tenants) or "none"
            raise StepError(403, f"policy_denied: parameters.tenant: expected a tenant of the policy ({known}), "
                                 f"found {name!r}")  # fmt: skip
        return tenant


def gate_from_env(environ: Mapping[str, str]) -> PolicyGate:
    """The policy at RELAY_POLICY_URI (none: nothing outside is allowed), for the deployment the env describes.

    RELAY_BACKEND=local (set by the local backend's runner) allows file:// locations; Relay's own storage is the
    policy's and catalog's locations and RELAY_RESULTS_URI (where launch records are read, and records written),
    all baked into the compiled pipeline or set by the local runner, never taken from the run's parameters.
    """
    uri = setting(environ, "POLICY_URI")
    own = (uri, setting(environ, "CATALOG_URI"), setting(environ, "RESULTS_URI"))
    scope = rules.Context(local=setting(environ, "BACKEND") == "local", protected=rules.own_locations(*own))
    launches = launch_records(environ)
    if not uri:
        return PolicyGate(rules.NO_POLICY, scope, launches)
    try:
        policy = rules.read_policy(results_store(uri, tempfile.gettempdir()), uri, required=True)
    except RelayError as error:  # unreadable or wrong: nothing may run until the deployment is fixed
        raise StepError(503, str(error)) from None
    return PolicyGate(policy, scope, launches)


def task_launch(
    environ: Mapping[str, str],
    pipeline: str,
    parameters: Mapping[str, Any],
    *,
    defaults: Mapping[str, Any] | None = None,
) -> Launch:
    """As a pipeline task verifies its launch: with the policy's direct_runs, when the policy can be read."""
    try:
        gate = gate_from_env(environ)
    except StepError:  # an unreadable policy allows no direct run; a launched one still records how it ended
        return verify_launch(launch_records(environ), pipeline, parameters, defaults=defaults)
    return gate.launch(pipeline, parameters, defaults=defaults)
