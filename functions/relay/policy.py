"""The deployment policy: what a trigger may use, per tenant; parsed strictly, applied by pure functions.

The operator writes one YAML file, published beside the catalog where only the deployer writes. Deny by default:
a source, destination, secret, cluster or code location that no rule of the trigger's tenant names is refused,
with the rule that would allow it. The functions apply it when a trigger arrives; the steps apply the same
functions again to their own parameters, with the policy read from the deployment, before any byte or credential
leaves. Nothing a policy says can open Relay's own storage (catalog, policy, records): those locations are
`protected` and refused whatever the rules say.

    version: 1
    project: my-project                 # secret resource names must be in this project
    protect: [gs://my-project-relay-results]
    tenants:
      - name: assay                     # lower case letters and digits; scopes the tenant's run keys
        triggers: [gs://my-project-relay-triggers/assay/]   # where its trigger files land
        topics: [projects/my-project/topics/assay-triggers]   # where its inline messages are published
        pipelines: [push]               # optional: the catalog pipelines it may run (default: all)
        sources: [gs://lab-data/assay/]
        destinations:
          - {id: kaggle-lab, kind: kaggle, owner: lab}
          - {id: hf-lab, kind: huggingface, namespace: lab}
        secrets:
          - {secret: secret://kaggle-key, to: kaggle-lab, field: key}
          - {secret: secret://hf-token, to: hf-lab, field: token}
        clusters: [{id: inference, kind: http, url: "https://inference.lab.example/"}]
        code: [gs://lab-benchmarks/]    # where ratchet workflows and algorithm code may come from
        limits: {objects: 1000, bytes: 10GiB}
    pipelines: {task_timeout: 2h, cpu: "2", memory: 4G}     # what the compiled pipelines' tasks get
    notifications:                      # the topics the deployment wired to buckets' Cloud Storage notifications
      - {topic: projects/my-project/topics/assay-triggers, buckets: [lab-data]}
    direct_runs: {tenant: assay}        # optional: runs started on the backend by hand act as this tenant only
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from relay import secrets
from relay.config import parse_duration
from relay.errors import BlobNotFoundError, PolicyDeniedError, Problem, RelayError
from relay.naming import MAX_RUN_KEY, PIPELINE_NAME, PROJECT_ID, RUN_KEY, is_bucket_name
from relay.ports import BlobStore
from relay.routes import Route, template_problems
from relay.triggers import StrictLoader, describe_value
from relay.urls import CREDENTIALS_URL, safe_for_credentials

PUSH, RATCHET = "push", "ratchet"
TENANT_NAME = re.compile(r"[a-z][a-z0-9]{0,19}")
RULE_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
SEPARATOR = "--"  # between a tenant and the run key it chose: tenant names have no "-", so the split is unique
MAX_POLICY_BYTES = 1024 * 1024
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?", re.IGNORECASE)
_CPU = re.compile(r"\d+(?:\.\d+)?m?")
_MEMORY = re.compile(r"\d+(?:\.\d+)?(?:[KMGT]i?)?")


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


# ---------------------------------------------------------------------------------------------------------------
# Reading a policy file


def parse_policy(raw: bytes | str, where: str) -> Policy:
    """The policy in `raw` (YAML or JSON); PolicyError listing every problem at once."""
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(where, [f"expected at most {MAX_POLICY_BYTES} bytes, found {len(raw)}"])
    try:
        document = yaml.load(raw, Loader=StrictLoader)
    except (yaml.YAMLError, TypeError, RecursionError) as exc:
        raise PolicyError(where, [f"expected valid YAML, found: {' '.join(str(exc).split())}"]) from exc
    reader = _Reader()
    policy = reader.policy(document)
    reader.problems.extend(_contradictions(policy))
    reader.problems.extend(_unowned_notifications(policy))
    if reader.problems:
        raise PolicyError(where, reader.problems)
    return replace(policy, source=where)


class _Reader:
    """Reads the document field by field, collecting every problem instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def _fail(self, where: str, expected: str, found: object) -> None:
        self.problems.append(f"{where}: expected {expected}, found {describe_value(found)}")

    def _mapping(self, value: object, where: str, keys: Sequence[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            self._fail(where, "a mapping", value)
            return {}
        for key in value:
            if key not in keys:
                self.problems.append(f"{where}.{key}: unknown key (expected one of {', '.join(keys)})")
        return value

    def _list(self, value: object, where: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self._fail(where, "a list", value)
            return []
        return value

    def _text(self, value: object, where: str, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
        if not isinstance(value, str) or not value or (pattern is not None and not pattern.fullmatch(value)):
            self._fail(where, what or "a non-empty string", value)
            return ""
        return value

    def _texts(self, value: object, where: str, check: Callable[[str, str], str]) -> tuple[str, ...]:
        return tuple(
            checked for i, item in enumerate(self._list(value, where)) if (checked := check(item, f"{where}[{i}]"))
        )

    def policy(self, document: object) -> Policy:
        keys = ("version", "project", "protect", "tenants", "pipelines", "notifications")
        top = self._mapping(document, "(policy)", (*keys, "direct_runs"))
        if top.get("version", 1) != 1 or isinstance(top.get("version"), bool):
            self._fail("version", "1", top.get("version"))
        project = top.get("project", "")
        if project != "":
            project = self._text(project, "project", PROJECT_ID, "a project id")
        listed = self._list(top.get("tenants"), "tenants")
        tenants = tuple(self.tenant(t, f"tenants[{i}]") for i, t in enumerate(listed))
        return Policy(
            tenants=tenants,
            project=project,
            protect=self._texts(top.get("protect"), "protect", self._location),
            resources=self.resources(top.get("pipelines", {}), "pipelines"),
            notifications=tuple(
                self.notifications(n, f"notifications[{i}]")
                for i, n in enumerate(self._list(top.get("notifications"), "notifications"))
            ),
            direct_tenant=self.direct_runs(top.get("direct_runs"), tenants),
        )

    def direct_runs(self, value: object, tenants: Sequence[Tenant]) -> str:
        """`direct_runs: {tenant: NAME}`: NAME must be a tenant of the policy; absent, direct runs do nothing."""
        if value is None:
            return ""
        item = self._mapping(value, "direct_runs", ("tenant",))
        names = [t.name for t in tenants if t.name]
        expected = f"a tenant of the policy ({', '.join(names) or 'none'})"
        name = item.get("tenant")
        if isinstance(value, dict) and name not in names:
            self._fail("direct_runs.tenant", expected, name)
            return ""
        return str(name or "")

    def tenant(self, value: object, where: str) -> Tenant:
        keys = ("name", "triggers", "topics", "pipelines", "sources", "destinations", "secrets", "clusters", "code")
        item = self._mapping(value, where, (*keys, "limits", "routes"))
        what = f"a tenant name matching {TENANT_NAME.pattern}"
        name = self._text(item.get("name"), f"{where}.name", TENANT_NAME, what)
        where = f"tenants.{name}" if name else where  # a tenant without a valid name: by its index
        pipelines = item.get("pipelines")
        return Tenant(
            name=name,
            triggers=self._texts(item.get("triggers"), f"{where}.triggers", self._trigger_prefix),
            topics=self._texts(item.get("topics"), f"{where}.topics", self._topic),
            pipelines=None if pipelines is None else self._texts(pipelines, f"{where}.pipelines", self._pipeline),
            sources=self._texts(item.get("sources"), f"{where}.sources", self._location),
            destinations=tuple(
                self.rule(r, f"{where}.destinations[{i}]", _DESTINATION_KINDS)
                for i, r in enumerate(self._list(item.get("destinations"), f"{where}.destinations"))
            ),
            clusters=tuple(
                self.rule(r, f"{where}.clusters[{i}]", _CLUSTER_KINDS)
                for i, r in enumerate(self._list(item.get("clusters"), f"{where}.clusters"))
            ),
            secrets=tuple(
                self.binding(b, f"{where}.secrets[{i}]")
                for i, b in enumerate(self._list(item.get("secrets"), f"{where}.secrets"))
            ),
            code=self._texts(item.get("code"), f"{where}.code", self._location),
            limits=self.limits(item.get("limits", {}), f"{where}.limits"),
            routes=tuple(
                self.route(r, f"{where}.routes[{i}]")
                for i, r in enumerate(self._list(item.get("routes"), f"{where}.routes"))
            ),
        )

    def notifications(self, value: object, where: str) -> Notifications:
        item = self._mapping(value, where, ("topic", "buckets"))
        topic = self._topic(item.get("topic"), f"{where}.topic")
        raw = item.get("buckets")
        if raw is None or raw == []:
            self._fail(f"{where}.buckets", "a list of the bucket names whose notifications reach the topic", raw)
        return Notifications(topic=topic, buckets=self._texts(raw, f"{where}.buckets", self._bucket))

    def _bucket(self, value: object, where: str) -> str:
        text = self._text(value, where, what="a bucket name")
        if text and not is_bucket_name(text):
            self._fail(where, "a bucket name", value)
            return ""
        return text

    def route(self, value: object, where: str) -> Route:
        item = self._mapping(value, where, ("id", "bucket", "prefix", "glob", "pipeline", "parameters"))
        bucket = self._bucket(item.get("bucket"), f"{where}.bucket")
        prefix = item.get("prefix", "")
        # The same segment rules as every other location: no '..', '.' or empty segment can slip a route elsewhere.
        if not isinstance(prefix, str) or (prefix and not _well_formed_location(f"gs://b/{prefix}")):
            self._fail(f"{where}.prefix", "an object name prefix without '..', '.' or empty segments", prefix)
            prefix = ""
        parameters = item.get("parameters", {})
        if not isinstance(parameters, dict):
            self._fail(f"{where}.parameters", "a mapping of the pipeline's parameters", parameters)
            parameters = {}
        self.problems.extend(template_problems(parameters, f"{where}.parameters"))
        return Route(
            id=self._text(item.get("id"), f"{where}.id", RULE_ID, f"an id matching {RULE_ID.pattern}"),
            bucket=bucket,
            prefix=prefix,
            glob=self._text(item.get("glob", "*"), f"{where}.glob", what="a glob such as *.csv"),
            pipeline=self._text(item.get("pipeline"), f"{where}.pipeline", PIPELINE_NAME, "a pipeline name"),
            parameters=parameters,
        )

    def rule(self, value: object, where: str, kinds: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]]) -> Rule:
        raw_kind = value.get("kind") if isinstance(value, dict) else None
        kind = raw_kind if isinstance(raw_kind, str) and raw_kind in kinds else ""
        if not kind:
            self._fail(f"{where}.kind", f"one of {', '.join(kinds)}", raw_kind)
        needed, optional = kinds.get(kind, ((), ()))
        item = self._mapping(value, where, ("id", "kind", *needed, *optional))
        rule_id = self._text(item.get("id", kind), f"{where}.id", RULE_ID, f"an id matching {RULE_ID.pattern}")
        values: dict[str, Any] = {}
        for name in (*needed, *optional):
            if name not in item:
                if name in needed:
                    self._fail(f"{where}.{name}", f"a value for a {kind} rule", None)
                continue
            if name in ("network", "require_sandbox"):
                if not isinstance(item[name], bool):
                    self._fail(f"{where}.{name}", "true or false", item[name])
                values[name] = item[name] is True
            elif name in ("endpoint", "url", "host"):
                values[name] = self._url(item[name], f"{where}.{name}")
            elif name in ("data_uri", "root"):
                values[name] = self._location(item[name], f"{where}.{name}")
            else:
                values[name] = self._text(item[name], f"{where}.{name}")
        return Rule(id=rule_id, kind=kind, **values)

    def binding(self, value: object, where: str) -> Binding:
        item = self._mapping(value, where, ("secret", "to", "field"))
        reference = item.get("secret")
        if not isinstance(reference, str) or not secrets.is_reference(reference) or not secrets.well_formed(reference):
            self._fail(f"{where}.secret", "secret://NAME or secret://projects/P/secrets/S", reference)
            reference = ""
        return Binding(
            secret=reference,
            to=self._text(item.get("to"), f"{where}.to", RULE_ID, "the id of a destination or cluster"),
            field=self._text(item.get("field"), f"{where}.field"),
        )

    def limits(self, value: object, where: str) -> Limits:
        item = self._mapping(value, where, [f.name for f in fields(Limits)])
        parsed: dict[str, Any] = {}
        for name, raw in item.items():
            if name not in {f.name for f in fields(Limits)}:
                continue
            number = parse_seconds(raw) if name == "timeout" else parse_size(raw)
            if number is None or number <= 0 or number > 2**62:
                what = "a duration like 90s or 10m" if name == "timeout" else "a positive whole number (or 10GiB)"
                self._fail(f"{where}.{name}", what, raw)
                continue
            parsed[name] = float(number) if name == "timeout" else int(number)
        return Limits(**parsed)

    def resources(self, value: object, where: str) -> Resources:
        item = self._mapping(value, where, ("task_timeout", "cpu", "memory"))
        parsed: dict[str, Any] = {}
        if "task_timeout" in item:
            seconds = parse_seconds(item["task_timeout"])
            if seconds is None or seconds <= 0:
                self._fail(f"{where}.task_timeout", "a duration like 2h", item["task_timeout"])
            else:
                parsed["task_timeout"] = seconds
        for name, pattern, example in (("cpu", _CPU, "2 or 500m"), ("memory", _MEMORY, "4G or 512Mi")):
            if name in item:
                raw = str(item[name]) if isinstance(item[name], int | float | str) else item[name]
                parsed[name] = self._text(raw, f"{where}.{name}", pattern, f"a Kubernetes quantity like {example}")
        return Resources(**parsed)

    def _location(self, value: object, where: str) -> str:
        text = self._text(value, where, what="a gs://, s3:// or file:// location")
        if text and not _well_formed_location(text):  # which takes only gs://, s3:// and file:///
            self._fail(where, "a gs://bucket/prefix, s3://bucket/prefix or file:///folder location", text)
            return ""
        return text

    def _trigger_prefix(self, value: object, where: str) -> str:
        text = self._location(value, where)
        if text and not text.startswith("gs://"):
            self._fail(where, "a gs://bucket/prefix the trigger files land under", text)
            return ""
        return text

    def _topic(self, value: object, where: str) -> str:
        return self._text(value, where, re.compile(r"projects/[^/\s]+/topics/[^/\s]+"), "projects/P/topics/T")

    def _pipeline(self, value: object, where: str) -> str:
        return self._text(value, where, PIPELINE_NAME, "a pipeline name")

    def _url(self, value: object, where: str) -> str:
        text = self._text(value, where, what="an https:// URL")
        parts = urlsplit(text)
        if text and (parts.scheme not in ("https", "http") or not parts.hostname or parts.username or parts.query):
            self._fail(where, "an https:// URL with a host and no user or query", text)
            return ""
        if text and not safe_for_credentials(text):
            self._fail(where, CREDENTIALS_URL, text)
            return ""
        return text


def _contradictions(policy: Policy) -> list[str]:
    """What cannot hold together: two tenants on one trigger prefix or topic, ids bound twice, protected targets."""
    problems = []
    owners: dict[str, str] = {}
    for tenant in policy.tenants:
        for origin in (*tenant.triggers, *tenant.topics):
            key = origin.rstrip("/")
            if key in owners and owners[key] != tenant.name:
                problems.append(f"tenants.{tenant.name}: {origin} is already the origin of tenant {owners[key]}")
            owners.setdefault(key, tenant.name)
    names = [t.name for t in policy.tenants]
    problems += [f"tenants: the name {n!r} is used twice" for n in sorted({n for n in names if names.count(n) > 1})]
    for index, tenant in enumerate(policy.tenants):
        where = f"tenants.{tenant.name}" if tenant.name else f"tenants[{index}]"
        ids = [r.id for r in (*tenant.destinations, *tenant.clusters)]
        problems += [f"{where}: the id {i!r} is used twice" for i in sorted({i for i in ids if ids.count(i) > 1})]
        for binding in tenant.secrets:
            rule = tenant.rule(binding.to)
            if rule is None:
                problems.append(f"{where}.secrets: {binding.secret} is bound to {binding.to!r}, which no rule has")
                continue
            kind = rule.kind if rule in tenant.destinations else f"cluster:{rule.kind}"
            if not _field_allowed(binding.field, SECRET_FIELDS[kind]):
                allowed = ", ".join(SECRET_FIELDS[kind]) or "none"
                problems.append(
                    f"{where}.secrets: {binding.secret} fills {binding.field!r} of {binding.to}, "
                    f"but a {rule.kind} takes secrets only in: {allowed}"
                )
            if binding.secret and not _in_project(binding.secret, policy.project):
                project = policy.project or "(none: set project)"
                problems.append(f"{where}.secrets: {binding.secret} is not in the deployment's project {project}")
        for rule in (*tenant.destinations, *tenant.clusters):
            target = rule_location(rule)
            if target and (inside := protected_by(target, policy.protect)):
                problems.append(f"{where}: {rule.id} would reach {target}, inside Relay's own {inside}")
        for location in (*tenant.sources, *tenant.code):
            if inside := protected_by(location, policy.protect):
                problems.append(f"{where}: {location} lies inside Relay's own {inside}")
        route_ids = [r.id for r in tenant.routes]
        problems += [
            f"{where}.routes: the id {i!r} is used twice"
            for i in sorted({i for i in route_ids if route_ids.count(i) > 1})
        ]
        for route in tenant.routes:
            if inside := protected_by(route.location, policy.protect):
                problems.append(f"{where}.routes.{route.id}: {route.location} lies inside Relay's own {inside}")
            # A trigger file is read as a trigger, a data object never is: no object may be both.
            for other in policy.tenants:
                for prefix in other.triggers:
                    if within(route.location, prefix) or within(prefix, route.location):
                        problems.append(
                            f"{where}.routes.{route.id}: {route.location} overlaps the trigger location {prefix} "
                            f"of tenant {other.name}"
                        )
    return problems


def _unowned_notifications(policy: Policy) -> list[str]:
    """Notifications wired to a topic no tenant owns (every one would be refused), or one topic listed twice."""
    problems = []
    owned = {topic for tenant in policy.tenants for topic in tenant.topics}
    topics = [n.topic for n in policy.notifications if n.topic]
    problems += [
        f"notifications: the topic {t} is listed twice" for t in sorted({t for t in topics if topics.count(t) > 1})
    ]
    for index, wired in enumerate(policy.notifications):
        if wired.topic and wired.topic not in owned:
            problems.append(
                f"notifications[{index}].topic: expected a topic of a tenant (tenants[].topics), found {wired.topic}"
            )
    return problems


# ---------------------------------------------------------------------------------------------------------------
# Deciding


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


def read_policy(store: BlobStore, uri: str, *, required: bool) -> Policy:
    """The policy at `uri`; NO_POLICY when there is none and none is `required`; PolicyError otherwise."""
    try:
        return parse_policy(store.read(uri).data, uri)
    except BlobNotFoundError:
        if required:
            raise PolicyError(uri, ["expected a policy file, found no object"]) from None
        return NO_POLICY


def tenant_for_object(policy: Policy, uri: str) -> Tenant | None:
    """The tenant whose trigger prefix holds `uri` (the longest prefix wins), if any."""
    matches = [(len(p), t) for t in policy.tenants for p in t.triggers if within(uri, p)]
    return max(matches, key=lambda m: m[0])[1] if matches else None


def route_for(policy: Policy, bucket: str, name: str) -> tuple[Tenant, Route] | None:
    """The first route (tenants, then routes, in the policy's order) that takes gs://bucket/name, and its tenant."""
    return next(((t, r) for t in policy.tenants for r in t.routes if r.matches(bucket, name)), None)


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
) -> list[Problem]:
    """Everything a trigger asks for beyond what its tenant may, its own run key in the tenant's namespace included."""
    problems = check_request(policy, tenant, pipeline, parameters, context)
    if run_key and not RUN_KEY.match(scoped_run_key(tenant, run_key)):
        room = MAX_RUN_KEY - len(scoped_run_key(tenant, ""))
        problems.append(Problem("run_key", f"at most {room} characters in this tenant", f"{len(run_key)}"))
    return problems


def check_request(
    policy: Policy, tenant: Tenant | None, pipeline: str, parameters: Mapping[str, Any], context: Context
) -> list[Problem]:
    """Every way a run of `pipeline` with `parameters` goes beyond what `tenant` may use (empty: allowed)."""
    scope = _Scope(policy, tenant, context)
    if tenant is not None and tenant.pipelines is not None and pipeline not in tenant.pipelines:
        allowed = ", ".join(tenant.pipelines) or "none"
        scope.deny("pipeline", f"a pipeline tenants.{tenant.name}.pipelines lists ({allowed})", repr(pipeline))
    if pipeline == PUSH:
        _check_push(scope, parameters)
    elif pipeline == RATCHET:
        _check_ratchet(scope, parameters)
    denied = {problem.field for problem in scope.problems}
    for path, reference in secrets.reference_paths(parameters):
        if f"parameters.{path}" not in scope.bound and f"parameters.{path}" not in denied:
            scope.deny(f"parameters.{path}", f"a secret only where {scope.listed('secrets')} binds it", reference)
    return scope.problems


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


# ---------------------------------------------------------------------------------------------------------------
# Locations and URLs


def within(uri: str, prefix: str) -> bool:
    """`uri` is `prefix` or lies under it, path segment by path segment (gs://b/ab is not under gs://b/a)."""
    base = prefix.rstrip("/")
    if base.endswith(":"):  # a whole scheme: file:///
        return uri.startswith(prefix)
    return uri == base or uri.startswith(base + "/")


def protected_by(uri: str, protected: Sequence[str]) -> str | None:
    """The protected location holding `uri` (whole buckets: a bucket is where IAM draws its lines), if any."""
    for location in protected:
        if not location:
            continue
        scope = _bucket(location) if location.startswith(("gs://", "s3://")) else location
        if within(uri, scope) or within(_as_file(uri), _as_file(scope)):
            return location
    return None


def as_location(uri: str) -> str:
    """A source as a location: an absolute path is the file:// URI the steps read it as."""
    return Path(uri).as_uri() if uri.startswith("/") else uri


def rule_location(rule: Rule) -> str:
    if rule.kind == "gcs":
        return f"gs://{rule.bucket}/{rule.prefix}"
    return rule.data_uri or rule.root


def url_within(url: str, prefix: str) -> bool:
    """Same scheme, host and port, and the path under the prefix's path; no credentials in the URL."""
    a, b = urlsplit(url), urlsplit(prefix)
    if a.username or a.password or not same_origin(url, prefix):
        return False
    path = a.path or "/"
    if any(segment in ("..", ".") for segment in path.split("/")) or "%2e" in path.lower() or "\\" in path:
        return False
    base = b.path or "/"
    if base.endswith("/"):
        return path.startswith(base) or path == base.rstrip("/")
    return path == base or path.startswith(base + "/")


def same_origin(url: str, other: str) -> bool:
    a, b = urlsplit(url), urlsplit(other)
    try:
        ports = _port(a.scheme, a.port), _port(b.scheme, b.port)
    except ValueError:  # a port that is not a number
        return False
    return a.scheme == b.scheme and bool(a.hostname) and a.hostname == b.hostname and ports[0] == ports[1]


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


def parse_size(value: object) -> float | None:
    """Bytes in 1000, '10GiB', '64 MiB' or '1.5GB'; None when it is not a size."""
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        return float(match.group(1)) * _UNITS[(match.group(2) or "").lower()] if match else None
    return _plain_number(value)


def parse_seconds(value: object) -> float | None:
    """Seconds in 90, '90s', '10m', '2h' or '1d' (the settings' duration syntax); None when it is not a duration."""
    return parse_duration(value) if isinstance(value, str) else _plain_number(value)


def _plain_number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _well_formed_location(uri: str) -> bool:
    scheme, _, rest = uri.partition("://")
    if not rest or scheme not in ("gs", "s3", "file"):
        return False
    if scheme == "file" and not rest.startswith("/"):
        return False  # file://host/... names another machine
    path = rest[1:] if scheme == "file" else rest  # after the root's "/"
    segments = path.removesuffix("/").split("/")  # a folder may end in "/"
    return all(segment not in ("", ".", "..") for segment in segments) and "\\" not in uri and "\n" not in uri


def _field_allowed(path: str, allowed: Sequence[str]) -> bool:
    return any(path == a or (a.endswith(".*") and path.startswith(a[:-1]) and "." not in path[len(a) - 1 :])
               for a in allowed)  # fmt: skip


def _in_project(reference: str, project: str) -> bool:
    name = reference.removeprefix(secrets.PREFIX)
    if not name.startswith("projects/"):
        return True
    return bool(project) and name.split("/")[1] == project


def _bucket(location: str) -> str:
    scheme, _, rest = location.partition("://")
    return f"{scheme}://{rest.partition('/')[0]}"


def _as_file(location: str) -> str:
    return "file://" + location if location.startswith("/") else location


def _prefix_within(prefix: str, allowed: str) -> bool:
    if not allowed:
        return True
    if any(segment in ("..", ".") for segment in prefix.split("/")):
        return False
    return within(prefix.strip("/"), allowed.strip("/"))


def _owned_by(name: str, owner: str) -> bool:
    """`name` is owner/slug with this owner; anything else (the steps refuse it) belongs to no owner."""
    parts = name.split("/")
    return len(parts) == 2 and parts[0] == owner and bool(parts[1])


def _relative_path(path: str) -> bool:
    # "//host/..." is a network-path reference: joined with a base URL it names another host.
    return path.startswith("/") and not path.startswith("//") and "://" not in path and ".." not in path


def _port(scheme: str, port: int | None) -> int:
    return port if port is not None else (443 if scheme == "https" else 80)
