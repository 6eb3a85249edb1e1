"""Reading a policy file strictly: every problem at once, then what cannot hold together across tenants.

The schema reader is one class (`_Reader`, a method per entry of the file) and the checks across entries
(`_contradictions`, `_unowned_notifications`); it passes 300 lines because the file has that many entries, each
with its own message, and splitting the class would split one walk of one document.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import yaml

from relay import secrets
from relay.chains import DEFAULT_MAX_CHAIN, MAX_CHAIN, parse_chain
from relay.errors import BlobNotFoundError
from relay.naming import (
    BUCKET_RULE,
    PIPELINE_NAME,
    PROJECT_ID,
    PROJECT_ID_RULE,
    TOPIC_PATH_RULE,
    is_bucket_name,
    is_topic_path,
    split_gs_uri,
)
from relay.policy_locations import _well_formed_location, parse_seconds, parse_size, protected_by, within
from relay.policy_model import (
    _CLUSTER_KINDS,
    _DESTINATION_KINDS,
    AT_CAP,
    NO_POLICY,
    RULE_ID,
    SECRET_FIELDS,
    TENANT_NAME,
    Binding,
    Cap,
    Caps,
    Expectation,
    Limits,
    Notifications,
    Policy,
    PolicyError,
    Resources,
    Retry,
    Rule,
    Tenant,
    _field_allowed,
    _in_project,
    rule_location,
)
from relay.ports import FAILURES, BlobStore
from relay.routes import FIELDS, SET_FIELDS, Route, template_problems
from relay.triggers import MAX_PRIORITY, MAX_RETRIES, StrictLoader, describe_value
from relay.urls import CREDENTIALS_URL, safe_for_credentials

if TYPE_CHECKING:
    from relay.sets import SetRule

MAX_POLICY_BYTES = 1024 * 1024
_OBSERVED_KEYS = ("expect", "expected_times")  # a tenant's, read by _Reader.observed
# The most a cap may say: each run in flight under a cap holds one object of its own (relay.queue), and a cap is
# listed whole to be counted.
MAX_CAP = 1000
_CAP_KEYS = ("max_in_flight", "max_per_minute", "at_cap")
# The longest wait between two attempts of a failed run.
MAX_BACKOFF = 86400.0
MAX_SET_WAIT = 7 * 86400.0  # a set's quiet period or deadline: at most a week, as long as Pub/Sub keeps a message
_CPU = re.compile(r"\d+(?:\.\d+)?m?")
_MEMORY = re.compile(r"\d+(?:\.\d+)?(?:[KMGT]i?)?")


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
        top = self._mapping(document, "(policy)", (*keys, "direct_runs", "caps", "retries", "max_chain"))
        if top.get("version", 1) != 1 or isinstance(top.get("version"), bool):
            self._fail("version", "1", top.get("version"))
        project = top.get("project", "")
        if project != "":
            project = self._text(project, "project", PROJECT_ID, PROJECT_ID_RULE)
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
            caps=self.caps(top.get("caps"), "caps"),
            retries=self.retries(top.get("retries"), "retries"),
            max_chain=self.max_chain(top.get("max_chain"), "max_chain"),
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
        item = self._mapping(value, where, (*keys, "limits", "routes", "caps", "retries", "max_chain", *_OBSERVED_KEYS))
        what = f"a tenant name matching {TENANT_NAME.pattern}"
        name = self._text(item.get("name"), f"{where}.name", TENANT_NAME, what)
        where = f"tenants.{name}" if name else where  # a tenant without a valid name: by its index
        pipelines = item.get("pipelines")
        tenant = Tenant(
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
            caps=self.caps(item.get("caps"), f"{where}.caps"),
            retries=self.retries(item.get("retries"), f"{where}.retries"),
            max_chain=self.max_chain(item.get("max_chain"), f"{where}.max_chain"),
        )
        return self.observed(tenant, item, where)

    def observed(self, tenant: Tenant, item: Mapping[str, Any], where: str) -> Tenant:
        """`expect` (absence declarations, relay.expectations) and `expected_times` (`{PIPELINE: 2h}`: a run going
        longer is logged stuck), read against the tenant's own routes and trigger prefixes."""
        times = item.get("expected_times")
        expected: list[tuple[str, float]] = []
        if times is not None and not isinstance(times, dict):
            self._fail(f"{where}.expected_times", "a mapping of pipeline names to durations (2h)", times)
        for name, raw in (times or {}).items() if isinstance(times, dict) else ():
            seconds = parse_seconds(raw)
            if not self._pipeline(name, f"{where}.expected_times (a key)"):
                continue
            if seconds is None or seconds <= 0:
                self._fail(f"{where}.expected_times.{name}", "a duration such as 90m or 2h", raw)
                continue
            expected.append((name, seconds))
        declared = [
            self.expectation(e, f"{where}.expect[{i}]", tenant)
            for i, e in enumerate(self._list(item.get("expect"), f"{where}.expect"))
        ]
        ids = [e.id for e in declared if e is not None]
        for twice in sorted({i for i in ids if ids.count(i) > 1}):
            self._fail(f"{where}.expect", "one declaration per id", f"{twice} twice")
        return replace(tenant, expect=tuple(e for e in declared if e is not None), expected_times=tuple(expected))

    def expectation(self, value: object, where: str, tenant: Tenant) -> Expectation | None:
        item = self._mapping(value, where, ("id", "route", "prefix", "when", "timezone"))
        if not item:
            return None
        expectation_id = self._text(item.get("id"), f"{where}.id", RULE_ID, f"an id matching {RULE_ID.pattern}")
        route, prefix = item.get("route", ""), item.get("prefix", "")
        routes = [r.id for r in tenant.routes]
        if bool(route) == bool(prefix):
            self._fail(where, "one of route (a route id of the tenant) or prefix (a trigger prefix of it)", item)
        elif route and route not in routes:
            self._fail(f"{where}.route", f"a route of the tenant ({', '.join(routes) or 'none'})", route)
        elif prefix and not (
            isinstance(prefix, str) and prefix.startswith("gs://") and any(within(prefix, t) for t in tenant.triggers)
        ):
            self._fail(
                f"{where}.prefix", f"a gs:// prefix under the tenant's triggers ({', '.join(tenant.triggers)})", prefix
            )
        from relay.expectations import ScheduleError, parse_schedule, parse_zone  # only a policy declaring them

        try:
            schedule, zone = parse_schedule(item.get("when")), parse_zone(item.get("timezone"))
        except ScheduleError as error:
            self.problems.append(f"{where}: {error}")
            return None
        if not expectation_id:
            return None
        return Expectation(expectation_id, schedule, zone, str(route or ""), str(prefix or ""))

    def notifications(self, value: object, where: str) -> Notifications:
        item = self._mapping(value, where, ("topic", "buckets"))
        topic = self._topic(item.get("topic"), f"{where}.topic")
        raw = item.get("buckets")
        if raw is None or raw == []:
            self._fail(f"{where}.buckets", "a list of the bucket names whose notifications reach the topic", raw)
        return Notifications(topic=topic, buckets=self._texts(raw, f"{where}.buckets", self._bucket))

    def _bucket(self, value: object, where: str) -> str:
        text = self._text(value, where, what=BUCKET_RULE)
        if text and not is_bucket_name(text):
            self._fail(where, BUCKET_RULE, value)
            return ""
        return text

    def route(self, value: object, where: str) -> Route:
        item = self._mapping(value, where, ("id", "bucket", "prefix", "glob", "pipeline", "parameters", "set", "chain"))
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
        set_rule = None if item.get("set") is None else self.set_rule(item["set"], f"{where}.set")
        fields = FIELDS if set_rule is None else SET_FIELDS
        self.problems.extend(template_problems(parameters, f"{where}.parameters", fields))
        chain, chain_problems = parse_chain(item.get("chain"), f"{where}.chain")
        self.problems.extend(str(problem) for problem in chain_problems)
        return Route(
            id=self._text(item.get("id"), f"{where}.id", RULE_ID, f"an id matching {RULE_ID.pattern}"),
            bucket=bucket,
            prefix=prefix,
            glob=self._text(item.get("glob", "*"), f"{where}.glob", what="a glob such as *.csv"),
            pipeline=self._text(item.get("pipeline"), f"{where}.pipeline", PIPELINE_NAME, "a pipeline name"),
            parameters=parameters,
            set_rule=set_rule,
            chain=chain,
        )

    def set_rule(self, value: object, where: str) -> SetRule:
        """`set: {size: N, marker: NAME, quiet: DURATION, deadline: DURATION}`: one of the first three at least."""
        from relay.sets import DEFAULT_DEADLINE, MAX_SIZE, SetRule  # only a policy with sets: not a cold start's

        item = self._mapping(value, where, ("size", "marker", "quiet", "deadline"))
        size = item.get("size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_SIZE):
            self._fail(f"{where}.size", f"a whole number of objects from 1 to {MAX_SIZE}", size)
            size = None
        marker = item.get("marker")
        if marker is not None and (not isinstance(marker, str) or not marker or "/" in marker):
            self._fail(f"{where}.marker", "an object's last name segment, like _SUCCESS (no /)", marker)
            marker = None
        waits: dict[str, float | None] = {}
        for name in ("quiet", "deadline"):
            raw = item.get(name)
            seconds = None if raw is None else parse_seconds(raw)
            if raw is not None and (seconds is None or not 0 < seconds <= MAX_SET_WAIT):
                self._fail(f"{where}.{name}", "a duration from 1s to 7d, like 30s, 10m or 2h", raw)
                seconds = None
            waits[name] = seconds
        if isinstance(value, dict) and not any(key in value for key in ("size", "marker", "quiet")):
            found = "none" if not value else ", ".join(map(str, value))
            self.problems.append(f"{where}: expected size, marker or quiet (when a set is complete), found {found}")
        quiet, deadline = waits["quiet"], waits["deadline"] or DEFAULT_DEADLINE
        if quiet is not None and deadline <= quiet:
            found = f"{describe_value(item.get('deadline', '1d'))}, not beyond quiet {describe_value(item['quiet'])}"
            self.problems.append(f"{where}.deadline: expected longer than quiet, found {found}")
        return SetRule(size=size, marker=marker, quiet_seconds=quiet, deadline_seconds=deadline)

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

    def caps(self, value: object, where: str) -> Caps:
        """`caps: {max_in_flight, max_per_minute, at_cap, pipelines: {NAME: {the same but pipelines}}}`."""
        if value is None:
            return Caps()
        cap = self.cap(value, where, (*_CAP_KEYS, "pipelines", "max_priority"))
        raw = value.get("pipelines", {}) if isinstance(value, dict) else {}
        priority = value.get("max_priority", 0) if isinstance(value, dict) else 0
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= MAX_PRIORITY:
            self._fail(f"{where}.max_priority", f"a whole number from 0 to {MAX_PRIORITY}", priority)
            priority = 0
        if not isinstance(raw, dict):
            self._fail(f"{where}.pipelines", "a mapping of pipeline names to caps", raw)
            raw = {}
        pipelines = tuple(
            (name, self.cap(item, f"{where}.pipelines.{name}", _CAP_KEYS))
            for name, item in raw.items()
            if self._pipeline(name, f"{where}.pipelines (a key)")
        )
        return Caps(cap=cap, pipelines=pipelines, max_priority=priority)

    def cap(self, value: object, where: str, keys: Sequence[str]) -> Cap:
        item = self._mapping(value, where, keys)
        counts: dict[str, int | None] = {}
        for name in ("max_in_flight", "max_per_minute"):
            raw = item.get(name)
            if raw is None:
                counts[name] = None
            elif isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_CAP:
                self._fail(f"{where}.{name}", f"a whole number from 1 to {MAX_CAP}", raw)
                counts[name] = None
            else:
                counts[name] = raw
        at_cap = item.get("at_cap", "queue")
        if at_cap not in AT_CAP:
            self._fail(f"{where}.at_cap", f"one of {', '.join(AT_CAP)}", at_cap)
            at_cap = "queue"
        if "at_cap" in item and "max_in_flight" not in item and "max_per_minute" not in item:
            self.problems.append(f"{where}: expected max_in_flight or max_per_minute beside at_cap, found at_cap alone")
        return Cap(counts["max_in_flight"], counts["max_per_minute"], str(at_cap))

    def retries(self, value: object, where: str) -> tuple[tuple[str, Retry], ...]:
        """`retries: {PIPELINE: {retries: N, max_retries: M, backoff: 1m, max_backoff: 1h, failures: [...]}}`."""
        if value is None:
            return ()
        if not isinstance(value, dict):
            self._fail(where, "a mapping of pipeline names to retry settings", value)
            return ()
        return tuple(
            (name, self.retry(item, f"{where}.{name}"))
            for name, item in value.items()
            if self._pipeline(name, f"{where} (a key)")
        )

    def retry(self, value: object, where: str) -> Retry:
        item = self._mapping(value, where, ("retries", "max_retries", "backoff", "max_backoff", "failures"))
        default = Retry()
        counts: dict[str, int] = {}
        for name in ("retries", "max_retries"):
            count = item.get(name, counts.get("retries", default.retries))
            if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_RETRIES:
                self._fail(f"{where}.{name}", f"a whole number from 0 to {MAX_RETRIES}", count)
                count = counts.get("retries", 0)
            counts[name] = count
        if counts["max_retries"] < counts["retries"]:
            found = f"{counts['max_retries']} below retries {counts['retries']}"
            self.problems.append(f"{where}.max_retries: expected at least retries, found {found}")
        waits: dict[str, float] = {}
        for name in ("backoff", "max_backoff"):
            raw = item.get(name, getattr(default, name))
            seconds = parse_seconds(raw)
            if seconds is None or not 0 < seconds <= MAX_BACKOFF:
                self._fail(f"{where}.{name}", "a duration from 1s to 1d, like 30s or 10m", raw)
                seconds = getattr(default, name)
            waits[name] = seconds
        if waits["max_backoff"] < waits["backoff"]:
            found = f"{describe_value(item.get('max_backoff'))} below backoff {describe_value(item.get('backoff'))}"
            self.problems.append(f"{where}.max_backoff: expected at least backoff, found {found}")
        kinds = item.get("failures", list(default.failures))
        if not isinstance(kinds, list) or not kinds or any(kind not in FAILURES for kind in kinds):
            self._fail(f"{where}.failures", f"a non-empty list of {', '.join(FAILURES)}", kinds)
            kinds = list(default.failures)
        kinds_seen = tuple(dict.fromkeys(kinds))
        return Retry(counts["retries"], waits["backoff"], waits["max_backoff"], kinds_seen, counts["max_retries"])

    def max_chain(self, value: object, where: str) -> int:
        """`max_chain: N`: how many runs a chain may start after its first (0: chains are refused)."""
        if value is None:
            return DEFAULT_MAX_CHAIN
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_CHAIN:
            self._fail(where, f"a whole number from 0 to {MAX_CHAIN} (runs a chain may start after its first)", value)
            return DEFAULT_MAX_CHAIN
        return value

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
        if not text:
            return ""
        if not text.startswith("gs://"):
            self._fail(where, "a gs://bucket/prefix the trigger files land under", text)
            return ""
        if not is_bucket_name(split_gs_uri(text)[0]):
            self._fail(where, f"a gs://bucket/prefix with {BUCKET_RULE}", text)
            return ""
        return text

    def _topic(self, value: object, where: str) -> str:
        text = self._text(value, where, what=TOPIC_PATH_RULE)
        if text and not is_topic_path(text):
            self._fail(where, TOPIC_PATH_RULE, value)
            return ""
        return text

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
    owned = {topic for tenant in policy.tenants for topic in tenant.topics}
    topics = [n.topic for n in policy.notifications if n.topic]
    problems = [
        f"notifications: the topic {t} is listed twice" for t in sorted({t for t in topics if topics.count(t) > 1})
    ]
    for index, wired in enumerate(policy.notifications):
        if wired.topic and wired.topic not in owned:
            problems.append(
                f"notifications[{index}].topic: expected a topic of a tenant (tenants[].topics), found {wired.topic}"
            )
    return problems


def read_policy(store: BlobStore, uri: str, *, required: bool) -> Policy:
    """The policy at `uri`; NO_POLICY when there is none and none is `required`; PolicyError otherwise."""
    try:
        return parse_policy(store.read(uri).data, uri)
    except BlobNotFoundError:
        if required:
            raise PolicyError(uri, ["expected a policy file, found no object"]) from None
        return NO_POLICY
