"""The deployment policy as the functions find and apply it: the tenant a trigger speaks for, and its run key.

The decisions are the functions' own (relay.policy and relay.service); this module only finds the policy where
they do and takes the steps of `service.handle_delivery` in its order, so that what `relay` says is what Relay does.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay import naming
from relay import policy as rules
from relay.errors import BlobNotFoundError, InvalidTriggerError, PolicyDeniedError, Problem
from relay.service import origin_run_key, run_key_for
from relay.triggers import Trigger
from relaycli.config import CliConfig, Context
from relaycli.errors import CliError, UsageError
from relaycli.output import plural


@dataclass(frozen=True)
class Origin:
    """Where a trigger comes from, which alone decides its tenant: an object, or a topic for inline messages."""

    uri: str  # gs://bucket/name, or projects/P/topics/T
    topic: bool = False

    def tenant(self, policy: rules.Policy) -> rules.Tenant | None:
        return rules.tenant_for_topic(policy, self.uri) if self.topic else rules.tenant_for_object(policy, self.uri)

    @property
    def identity(self) -> str:
        """What a derived run key is a digest of, as a reader is told before it exists."""
        if self.topic:
            return "the topic, the message id and its nonce or publish time"
        return "the object and its generation"


@dataclass(frozen=True)
class PolicyCheck:
    """What a policy verdict needs: the policy, where the trigger comes from, and the deployment it runs in."""

    policy: rules.Policy
    origin: Origin
    context: rules.Context

    @property
    def tenant(self) -> rules.Tenant | None:
        return self.origin.tenant(self.policy)


def read_policy_file(context: Context, config: CliConfig) -> bytes | None:
    """The bytes of the policy the functions would read; None when there is no such file."""
    where = config.policy_location
    try:
        return context.blob_store(config, where).read(where).data
    except BlobNotFoundError:
        return None
    except IsADirectoryError:
        raise UsageError(f"{config.policy_from}: expected a policy file, found a folder {where}") from None
    except OSError as exc:
        raise CliError(f"{where}: expected a readable policy file, found {exc.strerror or exc}") from None


def load_policy(context: Context, config: CliConfig) -> rules.Policy:
    """The policy as `runtime.load_policy` reads it: `--policy` or RELAY_POLICY_URI must exist, the catalog's
    policy.yaml may not (then there is none). One that is missing where it must be, or wrong, is a configuration
    error: the functions would not start with it."""
    where = config.policy_location
    raw = read_policy_file(context, config)
    if raw is None:
        if config.policy_uri:
            raise UsageError(f"{config.policy_from}: expected a policy file, found none at {where}")
        return rules.NO_POLICY
    try:
        return rules.parse_policy(raw, where)
    except rules.PolicyError as error:
        raise UsageError(
            f"{config.policy_from}: expected a valid policy at {where}, found {plural(len(error.problems), 'problem')}",
            [f"  {problem}" for problem in error.problems],
        ) from None


def decision_context(config: CliConfig) -> rules.Context:
    """The functions' `Relay.policy_context`, from the same settings: the backend, and Relay's own storage."""
    own = rules.own_locations(config.results_uri, config.catalog_uri, config.policy_uri)
    return rules.Context(local=config.backend == "local", protected=own)


def refusal(policy: rules.Policy, origin: Origin) -> PolicyDeniedError | None:
    """The functions' refusal of a delivery from where no tenant takes triggers, made before the document is read."""
    return rules.refuse_origin(policy, origin.tenant(policy), origin.uri)


def check(policy: rules.Policy, origin: Origin, trigger: Trigger, context: rules.Context) -> tuple[Problem, ...]:
    """Everything `trigger` uses beyond what its tenant may: the checks of `service.check_policy`."""
    tenant = origin.tenant(policy)
    return tuple(
        rules.check_trigger(
            policy,
            tenant,
            trigger.pipeline,
            trigger.parameters,
            trigger.run_key,
            context,
            priority=trigger.priority,
            retries=trigger.retries,
        )
    )


def run_key(policy: rules.Policy, origin: Origin, parsed: Trigger | InvalidTriggerError, identity: str) -> str:
    """The run key Relay gives this delivery: the trigger's own in its tenant's namespace, or a digest."""
    if refusal(policy, origin) is not None:
        return origin_run_key(identity)
    return run_key_for(parsed, identity, origin.tenant(policy))


def scoped_keys(policy: rules.Policy, key: str) -> list[str]:
    """Every run key a caller's `key` becomes in one of the policy's tenants."""
    scoped = (rules.scoped_run_key(tenant, key) for tenant in policy.tenants)
    return [candidate for candidate in scoped if naming.RUN_KEY.match(candidate)]
