"""Policies for tests: real ones parsed from YAML, and a gate that trusts every request for tests of mechanics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipelines.steps.egress import Egress
from pipelines.steps.gate import Permit, PolicyGate
from pipelines.steps.launch import Launch, launch_records
from relay.policy import Context, Policy, Tenant, own_locations, parse_policy
from relay.secrets import reference_paths

LOCAL = Context(local=True, protected=())


def policy(text: str) -> Policy:
    return parse_policy(text, "test-policy.yaml")


def gate(text: str, *, local: bool = True, protected: tuple[str, ...] = (), results: str = "") -> PolicyGate:
    """A step's gate for the policy `text`; with `results`, the deployment's results location (Relay's own storage),
    where it reads the launch records the functions wrote (tests.launches). Without, it admits no run."""
    scope = Context(local=local, protected=(*protected, *own_locations(results)))
    return PolicyGate(policy(text), scope, launch_records({"RELAY_RESULTS_URI": results}))


class TrustingGate:
    """Admits every request and binds every secret reference: for tests of how a step pushes or ratchets, not of
    what it may (the policy's own tests and the attack tests use real policies)."""

    def launch(self, pipeline: str, parameters: Mapping[str, Any]) -> Launch:
        results_uri = str(parameters.get("results_uri") or "")
        return Launch(str(parameters.get("run_key") or ""), str(parameters.get("tenant") or ""), results_uri)

    def admit(self, pipeline: str, parameters: Mapping[str, Any]) -> Permit:
        bound = {f"parameters.{path}": reference for path, reference in reference_paths(parameters)}
        return Permit(tenant=None, bound=bound, egress=Egress.loopback(), launch=self.launch(pipeline, parameters))

    def check_location(self, tenant: Tenant | None, uri: str, where: str, *, key: str) -> None:
        return None
