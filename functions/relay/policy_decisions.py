"""Deciding: whether a trigger, or a step's own parameters, stays within what its tenant may use; pure functions.

Which tenant an object, topic or route belongs to, the refusals of an origin, and `check_request` with its `_Scope`
(one decision) and `_mismatch` (a destination or cluster against one rule). It passes 300 lines because every kind
of destination and cluster is matched here, in one place, so that the functions and the steps decide alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay import secrets
from relay.errors import PolicyDeniedError, Problem
from relay.naming import MAX_RUN_KEY, RUN_KEY
from relay.policy_caps import priority_problems
from relay.policy_locations import (
    _as_file,
    _owned_by,
    _prefix_within,
    _relative_path,
    _well_formed_location,
    as_location,
    protected_by,
    same_origin,
    url_within,
    within,
)
from relay.policy_model import (
    HUB,
    KAGGLE,
    PUSH,
    RATCHET,
    SECRET_FIELDS,
    Limits,
    Policy,
    Rule,
    Tenant,
    _field_allowed,
    _in_project,
)
from relay.retries import trigger_problems
from relay.routes import Route

SEPARATOR = "--"  # between a tenant and the run key it chose: tenant names have no "-", so the split is unique


@dataclass(frozen=True)
class Context:
    """What a decision needs besides the policy: where the trigger ran from, and what is Relay's own."""

    local: bool  # the backend runs on this machine: file:// locations are possible
    protected: tuple[str, ...]  # Relay's catalog, policy and records: never a source, destination or code origin


def own_locations(*locations: str) -> tuple[str, ...]:
    """Relay's own storage as policy decisions compare it: gs:// as it is, local folders as absolute file:// URIs."""
    return tuple(
        location if location.startswith(("gs://", "s3://", "file://")) else Path(location).resolve().as_uri()
        for location in locations
        if location
    )


def tenant_for_object(policy: Policy, uri: str) -> Tenant | None:
    """The tenant whose trigger prefix holds `uri` (the longest prefix wins), if any."""
    matches = [(len(p), t) for t in policy.tenants for p in t.triggers if within(uri, p)]
    return max(matches, key=lambda m: m[0])[1] if matches else None


def tenant_for_topic(policy: Policy, topic: str) -> Tenant | None:
    return next((t for t in policy.tenants if topic in t.topics), None)


def route_of(tenant: Tenant, bucket: str, name: str) -> Route | None:
    """The first of `tenant`'s own routes that takes gs://bucket/name."""
    return next((r for r in tenant.routes if r.matches(bucket, name)), None)


def wired_buckets(policy: Policy, topic: str) -> tuple[str, ...]:
    """The buckets whose Cloud Storage notifications the deployment sends to `topic`."""
    return tuple(bucket for wired in policy.notifications if wired.topic == topic for bucket in wired.buckets)


def bound_secrets(policy: Policy) -> dict[str, tuple[str, ...]]:
    """Each secret id a tenant binds (secret://NAME and its projects/P/secrets/NAME form alike), with the tenants
    that bind it: what the pipeline steps must be able to read."""
    bound: dict[str, tuple[str, ...]] = {}
    for tenant in policy.tenants:
        for binding in tenant.secrets:
            if binding.secret:
                name = secrets.secret_id(binding.secret)
                bound[name] = (*bound.get(name, ()), *(() if tenant.name in bound.get(name, ()) else (tenant.name,)))
    return bound


def scoped_run_key(tenant: Tenant | None, run_key: str) -> str:
    """A caller-chosen run key inside its tenant's namespace, so no tenant can take another's key."""
    return f"{tenant.name}{SEPARATOR}{run_key}" if tenant else run_key


def origins(policy: Policy) -> str:
    """Every trigger prefix and topic the policy takes triggers from, for messages."""
    listed = [o for t in policy.tenants for o in (*t.triggers, *t.topics)]
    return ", ".join(listed) or "none (no tenant is configured)"


def refuse_origin(policy: Policy, tenant: Tenant | None, uri: str) -> PolicyDeniedError | None:
    """The refusal of a trigger from where no tenant takes triggers; None when a tenant does, or without a policy."""
    if tenant is not None or not policy.source:
        return None
    expected = f"a trigger location or topic of a tenant ({origins(policy)})"
    return PolicyDeniedError(uri, [Problem("(origin)", expected, uri)])


def refuse_topic(policy: Policy, tenant: Tenant | None, topic: str, uri: str) -> PolicyDeniedError | None:
    """The refusal of a message naming an object (a trigger_uri, a storage notification) on a topic no tenant owns:
    the topic alone decides the tenant, never the object named. None when a tenant owns it, or without a policy."""
    if tenant is not None or not policy.source:
        return None
    topics = ", ".join(t for owner in policy.tenants for t in owner.topics) or "none"
    return PolicyDeniedError(uri, [Problem("(origin)", f"a topic of a tenant ({topics})", topic or "no topic")])


def refuse_notification(policy: Policy, topic: str, bucket: str, uri: str) -> PolicyDeniedError | None:
    """The refusal of a storage notification on a topic the deployment did not wire to its bucket: anyone who may
    publish there could have written it. None when `notifications` wires the two, or without a policy."""
    if not policy.source:
        return None
    wired = wired_buckets(policy, topic)
    if bucket in wired:
        return None
    expected = f"a notification of a bucket that notifications wires to this topic ({', '.join(wired) or 'none'})"
    return PolicyDeniedError(uri, [Problem("(origin)", expected, f"a notification of {bucket} on {topic}")])


def refuse_object(policy: Policy, tenant: Tenant | None, uri: str) -> PolicyDeniedError | None:
    """The refusal of an object a message names outside its topic's tenant's trigger locations: a tenant's topic
    leads to its own triggers only. None when the object lies under one, or without a policy."""
    if tenant is None or not policy.source or any(within(uri, prefix) for prefix in tenant.triggers):
        return None
    expected = f"an object under tenants.{tenant.name}.triggers ({', '.join(tenant.triggers) or 'none'})"
    return PolicyDeniedError(uri, [Problem("(origin)", expected, uri)])


def check_trigger(
    policy: Policy,
    tenant: Tenant | None,
    pipeline: str,
    parameters: Mapping[str, Any],
    run_key: str | None,
    context: Context,
    *,
    priority: int = 0,
    retries: int | None = None,
) -> list[Problem]:
    """Everything a trigger asks for beyond what its tenant may, its own run key in the tenant's namespace, its
    priority in the queue and its retries included."""
    problems = check_request(policy, tenant, pipeline, parameters, context)
    problems += priority_problems(policy, tenant.name if tenant else "", priority)
    problems += trigger_problems(policy, tenant.name if tenant else "", pipeline, retries)
    if run_key and not RUN_KEY.match(scoped_run_key(tenant, run_key)):
        room = MAX_RUN_KEY - len(scoped_run_key(tenant, ""))
        problems.append(Problem("run_key", f"at most {room} characters in this tenant", f"{len(run_key)}"))
    return problems


def check_request(
    policy: Policy, tenant: Tenant | None, pipeline: str, parameters: Mapping[str, Any], context: Context
) -> list[Problem]:
    """Every way a run of `pipeline` with `parameters` goes beyond what `tenant` may use (empty: allowed)."""
    scope = _Scope(policy, tenant, context)
    refused = pipeline_denied(tenant, pipeline, "pipeline")
    if refused is not None:
        scope.deny(refused.field, refused.expected, refused.found)
    if pipeline == PUSH:
        _check_push(scope, parameters)
    elif pipeline == RATCHET:
        _check_ratchet(scope, parameters)
    denied = {problem.field for problem in scope.problems}
    for path, reference in secrets.reference_paths(parameters):
        if f"parameters.{path}" not in scope.bound and f"parameters.{path}" not in denied:
            scope.deny(f"parameters.{path}", f"a secret only where {scope.listed('secrets')} binds it", reference)
    return scope.problems


def pipeline_denied(tenant: Tenant | None, pipeline: str, where: str) -> Problem | None:
    """Why `tenant` may not run `pipeline` at all (None: it may), as field `where`."""
    if tenant is None or tenant.pipelines is None or pipeline in tenant.pipelines:
        return None
    allowed = ", ".join(tenant.pipelines) or "none"
    return Problem(where, f"a pipeline tenants.{tenant.name}.pipelines lists ({allowed})", repr(pipeline))


def bound_references(
    policy: Policy, tenant: Tenant | None, pipeline: str, parameters: Mapping[str, Any], context: Context
) -> dict[str, str]:
    """Where each secret reference the policy allows sits (`parameters.destination.key` -> reference)."""
    scope = _Scope(policy, tenant, context)
    if pipeline == PUSH:
        _check_push(scope, parameters)
    elif pipeline == RATCHET:
        _check_ratchet(scope, parameters)
    return dict(scope.bound)


def matching_rule(
    policy: Policy, tenant: Tenant | None, config: Mapping[str, Any], context: Context, *, cluster: bool
) -> Rule | None:
    """The rule that allows this destination (or cluster) struct, if one does."""
    scope = _Scope(policy, tenant, context)
    return scope.target(config, cluster=cluster)


def check_location(
    policy: Policy, tenant: Tenant | None, uri: str, context: Context, where: str, *, key: str
) -> list[Problem]:
    """Whether `uri` may be read as a source (`key` "sources") or as ratchet code and data (`key` "code")."""
    scope = _Scope(policy, tenant, context)
    scope.location(uri, where, key, "source" if key == "sources" else "code")
    return scope.problems


class _Scope:
    """One decision: the problems found and the secret references bound so far."""

    def __init__(self, policy: Policy, tenant: Tenant | None, context: Context) -> None:
        self.policy = policy
        self.tenant = tenant
        self.context = context
        self.problems: list[Problem] = []
        self.bound: dict[str, str] = {}

    def listed(self, key: str) -> str:
        """The policy entry that would allow something, as a message names it."""
        if self.tenant is not None:
            return f"tenants.{self.tenant.name}.{key}"
        return f"tenants[].{key} of {'a tenant' if self.policy.source else 'a policy (none is configured)'}"

    def deny(self, field_name: str, expected: str, found: str) -> None:
        self.problems.append(Problem(field_name, expected, found))

    def location(self, uri: object, field_name: str, key: str, what: str) -> None:
        """`uri` must lie under one of the tenant's `key` locations (sources or code)."""
        if not isinstance(uri, str) or secrets.is_reference(uri):
            return  # the pipeline's own type check reports a value of the wrong type
        uri = as_location(uri)
        allowed: tuple[str, ...] = getattr(self.tenant, key) if self.tenant else ()
        if not _well_formed_location(uri):
            self.deny(field_name, f"a {what} location without '..', '.' or empty path segments", repr(uri))
        elif self.protected(uri):
            # Which of Relay's locations it is stays out of the record: trigger authors read records.
            self.deny(field_name, f"a {what} location outside Relay's own storage", repr(uri))
        elif uri.startswith("file:") and not self.context.local:
            self.deny(field_name, f"a gs:// or s3:// {what} location (file:// only with the local backend)", repr(uri))
        elif not any(within(uri, rule) for rule in allowed):
            listed = ", ".join(allowed) or "none"
            self.deny(field_name, f"a {what} location under {self.listed(key)} ({listed})", repr(uri))

    def protected(self, uri: str) -> str | None:
        return protected_by(uri, (*self.context.protected, *self.policy.protect))

    def target(self, config: Mapping[str, Any], *, cluster: bool) -> Rule | None:
        """The tenant's rule that allows this destination or cluster; binds its secrets; denies if none does."""
        field_name = "parameters.destination"  # push's destination and ratchet's cluster alike
        kind = str(config.get("kind") or "local")  # a cluster's default; no destination is "local"
        rules = (self.tenant.clusters if cluster else self.tenant.destinations) if self.tenant else ()
        key = "clusters" if cluster else "destinations"
        candidates = [r for r in rules if r.kind == kind]
        failures: list[str] = []
        for rule in candidates:
            mismatch = _mismatch(rule, config, self._bindings(rule), self.protected)
            if mismatch is None:
                self._bind(rule, config, field_name, cluster=cluster)
                return rule
            failures.append(f"{rule.id}: {mismatch}")
        described = "; ".join(describe_rule(r) for r in rules) or "none"
        why = f" ({'; '.join(failures)})" if failures else ""
        self.deny(field_name, f"a {key[:-1]} {self.listed(key)} allows: {described}", describe_target(config) + why)
        return None

    def _bindings(self, rule: Rule) -> dict[str, str]:
        """field -> normalised secret name, for the secrets bound to this rule."""
        if self.tenant is None:
            return {}
        return {b.field: secrets.secret_id(b.secret) for b in self.tenant.secrets if b.to == rule.id}

    def _bind(self, rule: Rule, config: Mapping[str, Any], field_name: str, *, cluster: bool) -> None:
        bindings = self._bindings(rule)
        kind = f"cluster:{rule.kind}" if cluster else rule.kind
        for path, reference in secrets.reference_paths(config):
            allowed_field = _field_allowed(path, SECRET_FIELDS[kind])
            bound = next((f for f in bindings if _field_allowed(path, (f,))), None)
            if allowed_field and bound is not None and bindings[bound] == secrets.secret_id(reference):
                if _in_project(reference, self.policy.project):
                    self.bound[f"{field_name}.{path}"] = reference
                    continue
                self.deny(f"{field_name}.{path}", f"a secret in the project {self.policy.project!r}", reference)


def _check_push(scope: _Scope, parameters: Mapping[str, Any]) -> None:
    sources = parameters.get("sources")
    for i, uri in enumerate(sources if isinstance(sources, list) else []):
        scope.location(uri, f"parameters.sources[{i}]", "sources", "source")
    destination = parameters.get("destination")
    if isinstance(destination, Mapping):
        scope.target(destination, cluster=False)
        limits = scope.tenant.limits if scope.tenant else Limits()
        for option, ceiling in (("max_attempts", limits.attempts), ("timeout", limits.timeout)):
            value = destination.get(option)
            if isinstance(value, int | float) and not isinstance(value, bool) and not 0 < value <= ceiling:
                scope.deny(f"parameters.destination.{option}", f"a number in (0, {ceiling:g}] (limits)", repr(value))


def _check_ratchet(scope: _Scope, parameters: Mapping[str, Any]) -> None:
    workflow = parameters.get("workflow")
    if isinstance(workflow, Mapping) and set(workflow) == {"uri"}:
        workflow = workflow["uri"]
    if isinstance(workflow, str):
        scope.location(workflow, "parameters.workflow", "code", "code")
    if parameters.get("source"):
        scope.location(parameters["source"], "parameters.source", "code", "code")
    destination = parameters.get("destination") or {}
    if isinstance(destination, Mapping):
        scope.target(destination, cluster=True)


def _mismatch(
    rule: Rule, config: Mapping[str, Any], bindings: Mapping[str, str], protected: Callable[[str], str | None]
) -> str | None:
    """Why `config` is not what `rule` allows, or None when it is. A bound secret satisfies its own field."""

    def value(name: str, default: str = "") -> str | None:
        # A reference bound to this very field stands for a value the operator chose; any other reference is
        # denied by check_request's last pass, and a value of the wrong type by the pipeline's type check.
        found = config.get(name, default)
        if secrets.is_reference(found) and bindings.get(name) == secrets.secret_id(str(found)):
            return None
        return found if isinstance(found, str) else repr(found)

    def check(name: str, ok: Callable[[str], bool], expected: str, default: str = "") -> str | None:
        found = value(name, default)
        if found is None or ok(found):
            return None
        return f"{name} {expected}"

    checks: list[str | None] = []
    if rule.kind in ("gcs", "s3"):
        # No secret fills a bucket or prefix (SECRET_FIELDS): both are the values written, "" when left out.
        target = f"{'gs' if rule.kind == 'gcs' else 's3'}://{value('bucket')}/{value('prefix')}"
        if protected(target):
            return f"{target} is inside Relay's own storage"
        checks.append(check("bucket", lambda b: b == rule.bucket, f"must be {rule.bucket}"))
        checks.append(check("prefix", lambda p: _prefix_within(p, rule.prefix), f"must lie under {rule.prefix!r}"))
    if rule.kind == "s3":
        checks.append(check("endpoint", lambda e: same_origin(e, rule.endpoint), f"must be {rule.endpoint}"))
    if rule.kind == "http":
        checks.append(check("url", lambda u: url_within(u, rule.url), f"must start with {rule.url}"))
        if "exists_url" in config:
            checks.append(check("exists_url", lambda u: url_within(u, rule.url), f"must start with {rule.url}"))
    if rule.kind == "kaggle":
        checks.append(check("dataset", lambda d: _owned_by(d, rule.owner), f"must belong to {rule.owner}"))
        # Left out, the endpoint is the step's default, not the rule's: a mirror's rule never allows the public API.
        endpoint = rule.endpoint or KAGGLE
        checks.append(check("endpoint", lambda e: same_origin(e, endpoint), f"must be {endpoint}", KAGGLE))
    if rule.kind == "huggingface":
        checks.append(check("repo", lambda r: _owned_by(r, rule.namespace), f"must belong to {rule.namespace}"))
        endpoint = rule.endpoint or HUB
        checks.append(check("endpoint", lambda e: same_origin(e, endpoint), f"must be {endpoint}", HUB))
    if rule.kind == "kfp":
        checks.append(check("host", lambda h: same_origin(h, rule.host), f"must be {rule.host}"))
        if "data_uri" in config:
            checks.append(check("data_uri", lambda d: bool(rule.data_uri) and within(d, rule.data_uri),
                                f"must lie under {rule.data_uri or '(no data_uri in the rule)'}"))  # fmt: skip
    if rule.kind == "local" and "root" in config:
        checks.append(check("root", lambda r: bool(rule.root) and within(_as_file(r), rule.root),
                            f"must lie under {rule.root or '(no root in the rule)'}"))  # fmt: skip
    if rule.kind in ("http", "kfp") and "ca_cert" in config:  # a path would make the step read a file of its own
        checks.append(check("ca_cert", lambda c: c.lstrip().startswith("-----BEGIN "), "must be PEM text, not a path"))
    for name in ("call_path", "load_path", "upload_path", "code_upload_path"):  # http cluster: paths on `url`
        if name in config:
            checks.append(check(name, _relative_path, "must be a path starting with / and without '..'"))
    failed = [c for c in checks if c]
    return "; ".join(failed) if failed else None


def describe_rule(rule: Rule) -> str:
    constraints = {
        name: getattr(rule, name)
        for name in ("bucket", "prefix", "endpoint", "url", "owner", "namespace", "host", "data_uri", "root")
        if getattr(rule, name)
    }
    shown = ", ".join(f"{k} {v}" for k, v in constraints.items())
    return f"{rule.kind} {shown} ({rule.id})".replace("  ", " ")


def describe_target(config: Mapping[str, Any]) -> str:
    """A destination struct as a message may show it: where, never who (no secret option is shown)."""
    shown = ("bucket", "prefix", "endpoint", "url", "dataset", "repo", "host", "data_uri", "root")
    parts = [f"{k} {config[k]!r}" for k in shown if k in config and not secrets.is_reference(config[k])]
    kind = str(config.get("kind") or "local")
    return f"{kind} with {', '.join(parts)}" if parts else kind
