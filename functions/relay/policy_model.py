"""What a policy says, as frozen dataclasses: tenants, their rules and bindings, limits, resources, notifications.

The file's format is described in relay.policy; relay.policy_reader builds these from it, and relay.policy_decisions
applies them. Also here: what each kind of destination or cluster is constrained by, and which of its fields a secret
may fill, which both the reader (to refuse a policy) and the decisions (to refuse a trigger) consult.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import TYPE_CHECKING

from relay import secrets
from relay.chains import DEFAULT_MAX_CHAIN
from relay.errors import RelayError
from relay.ports import FAILURE_INFRASTRUCTURE, FAILURE_PREEMPTED
from relay.routes import Route

if TYPE_CHECKING:
    from relay.expectations import Schedule

PUSH, RATCHET = "push", "ratchet"
TENANT_NAME = re.compile(r"[a-z][a-z0-9]{0,19}")
RULE_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


class PolicyError(RelayError):
    """The policy file is missing, unreadable or wrong; `problems` lists every problem found."""

    def __init__(self, where: str, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__(f"{where}: {len(self.problems)} problem(s) in the policy: " + "; ".join(self.problems))


@dataclass(frozen=True)
class Limits:
    """Ceilings on what one run may do; a trigger asking for more is refused, a step never goes past them."""

    objects: int = 10_000  # objects per push
    bytes: int = 100 * 2**30  # bytes per push
    attempts: int = 5  # attempts per request (http destination)
    timeout: float = 600.0  # seconds: one request, one benchmark call
    tests: int = 100  # benchmark tests per workflow
    repeats: int = 20  # calls per test
    code_bytes: int = 64 * 2**20  # an algorithm's code, extracted
    code_files: int = 2000  # an algorithm's code, files


# What a trigger past a cap does: wait in the queue (the default), be rejected, or, a newer generation of an object,
# take the place of the older generation's run (relay.supersede).
AT_CAP = ("queue", "reject", "supersede")


@dataclass(frozen=True)
class Cap:
    """How many runs of one scope may be in flight at once and launch per minute (None: no such cap), and what a
    trigger past either does (AT_CAP)."""

    max_in_flight: int | None = None
    max_per_minute: int | None = None
    at_cap: str = "queue"

    @property
    def empty(self) -> bool:
        return self.max_in_flight is None and self.max_per_minute is None


@dataclass(frozen=True)
class Caps:
    """A scope's cap (the deployment's or a tenant's) and, within it, one per pipeline."""

    cap: Cap = field(default_factory=Cap)
    pipelines: tuple[tuple[str, Cap], ...] = ()
    max_priority: int = 0  # the highest `priority` a trigger of this scope may ask for (a tenant's, or none's)

    def pipeline(self, name: str) -> Cap:
        return next((cap for pipeline, cap in self.pipelines if pipeline == name), Cap())


@dataclass(frozen=True)
class Retry:
    """How many times a failed run of one pipeline is started again by itself, after what wait, and which failures
    (relay.ports.FAILURES) count; relay.retries decides."""

    retries: int = 0
    backoff: float = 60.0  # seconds before the first retry; doubled for each next one
    max_backoff: float = 3600.0  # the longest wait between two attempts
    failures: tuple[str, ...] = (FAILURE_INFRASTRUCTURE, FAILURE_PREEMPTED)
    max_retries: int = 0  # the most a trigger may ask for (its `retries`); the reader makes it at least `retries`


@dataclass(frozen=True)
class Resources:
    """What each task of a compiled pipeline gets (applied when the catalog is compiled)."""

    task_timeout: float = 6 * 3600.0
    cpu: str = "1"
    memory: str = "2G"


@dataclass(frozen=True)
class Rule:
    """One destination or cluster a tenant may use. Empty constraints are not set for this kind."""

    id: str
    kind: str
    bucket: str = ""  # gcs, s3
    prefix: str = ""  # gcs, s3: the destination prefix must lie under it
    endpoint: str = ""  # s3 (required), huggingface (default HUB), kaggle (default KAGGLE)
    url: str = ""  # http destination and http cluster: every URL must start with it
    owner: str = ""  # kaggle: the dataset owner
    namespace: str = ""  # huggingface: the repo owner
    host: str = ""  # kfp cluster: the API URL
    data_uri: str = ""  # kfp cluster: where data files may be written
    root: str = ""  # local cluster: the folder algorithms are installed under
    network: bool = False  # local cluster: may algorithms open network connections
    require_sandbox: bool = True  # local cluster: refuse to run algorithms where the sandbox is unavailable


@dataclass(frozen=True)
class Binding:
    """A secret may fill `field` of the destination or cluster `to`, and nothing else."""

    secret: str
    to: str
    field: str


@dataclass(frozen=True)
class Expectation:
    """Something must arrive from a route (`route`, its id) or under a trigger prefix (`prefix`) of the tenant in
    each window of `schedule`, in time zone `zone` (relay.expectations; relay.absence checks and records)."""

    id: str
    schedule: Schedule
    zone: tzinfo
    route: str = ""
    prefix: str = ""


@dataclass(frozen=True)
class Tenant:
    name: str
    triggers: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()
    pipelines: tuple[str, ...] | None = None  # None: every pipeline in the catalog
    sources: tuple[str, ...] = ()
    destinations: tuple[Rule, ...] = ()
    clusters: tuple[Rule, ...] = ()
    secrets: tuple[Binding, ...] = ()
    code: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    routes: tuple[Route, ...] = ()  # data objects that start runs of this tenant (relay.routes)
    caps: Caps = field(default_factory=Caps)  # runs in flight and launches per minute (relay.policy_caps)
    retries: tuple[tuple[str, Retry], ...] = ()  # by pipeline name (relay.retries)
    max_chain: int = DEFAULT_MAX_CHAIN  # how many runs a chain may start after its first (relay.chains)
    expect: tuple[Expectation, ...] = ()  # absence declarations (relay.absence)
    expected_times: tuple[tuple[str, float], ...] = ()  # by pipeline name: seconds a run may go before "stuck"

    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in (*self.destinations, *self.clusters) if r.id == rule_id), None)


@dataclass(frozen=True)
class Notifications:
    """A topic the deployment wired to the Cloud Storage notifications of `buckets` (deploy.sh --notify-bucket):
    a notification counts only on such a topic, whoever else may publish to one."""

    topic: str
    buckets: tuple[str, ...]


@dataclass(frozen=True)
class Policy:
    tenants: tuple[Tenant, ...] = ()
    project: str = ""
    protect: tuple[str, ...] = ()
    resources: Resources = field(default_factory=Resources)
    source: str = ""  # where it was read from ("" when there is none)
    notifications: tuple[Notifications, ...] = ()
    # The one tenant a run without a launch record acts as ("": such a run does nothing).
    direct_tenant: str = ""
    caps: Caps = field(default_factory=Caps)  # the deployment's own, over every tenant
    retries: tuple[tuple[str, Retry], ...] = ()  # by pipeline name, for a deployment without tenants
    max_chain: int = DEFAULT_MAX_CHAIN  # for a deployment without tenants (relay.chains)

    def tenant(self, name: str) -> Tenant | None:
        return next((t for t in self.tenants if t.name == name), None)


NO_POLICY = Policy()
HUB = "https://huggingface.co"
KAGGLE = "https://api.kaggle.com"

# What each kind of destination or cluster is constrained by, and which of its options may hold a secret.
_DESTINATION_KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "gcs": (("bucket",), ("prefix",)),
    "s3": (("endpoint", "bucket"), ("prefix",)),
    "http": (("url",), ()),
    "kaggle": (("owner",), ("endpoint",)),
    "huggingface": (("namespace",), ("endpoint",)),
}
_CLUSTER_KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "local": ((), ("root", "network", "require_sandbox")),
    "http": (("url",), ()),
    "kfp": (("host",), ("data_uri",)),
}
SECRET_FIELDS = {
    "gcs": (),
    "s3": ("access_key_id", "secret_access_key", "session_token"),
    "http": ("url", "exists_url", "headers.*"),
    "kaggle": ("username", "key"),
    "huggingface": ("token",),
    "cluster:http": ("token", "api_key", "ca_cert"),
    "cluster:kfp": ("token", "ca_cert"),
    "cluster:local": (),
}


def _field_allowed(path: str, allowed: Sequence[str]) -> bool:
    return any(path == a or (a.endswith(".*") and path.startswith(a[:-1]) and "." not in path[len(a) - 1 :])
               for a in allowed)  # fmt: skip


def _in_project(reference: str, project: str) -> bool:
    name = reference.removeprefix(secrets.PREFIX)
    if not name.startswith("projects/"):
        return True
    return bool(project) and name.split("/")[1] == project


def rule_location(rule: Rule) -> str:
    if rule.kind == "gcs":
        return f"gs://{rule.bucket}/{rule.prefix}"
    return rule.data_uri or rule.root
