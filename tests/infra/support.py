"""What infra/deploy.sh and infra/terraform each say Relay is, read into one comparable model."""

from __future__ import annotations

import base64
import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.infra.hcl import Module, Scope

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "infra" / "deploy.sh"
TERRAFORM = ROOT / "infra" / "terraform"
EXAMPLE_ENV = TERRAFORM / "envs" / "example"
# What the tests pass as --policy / policy_file: the tools publish it and never read it.
POLICY = Path(__file__).with_name("policy.yaml")

# Terraform names the function upload's bucket itself; gcloud uploads into Cloud Functions' own.
TERRAFORM_ONLY_BUCKETS = frozenset({"sources"})

# Settings that would steer the script from outside the test: it must see only what a test passes.
_OUTSIDE_SETTINGS = ("RELAY_", "DEPLOY_", "GOOGLE_CLOUD_", "CLOUDSDK_")


@dataclass(frozen=True)
class Inputs:
    """One deployment's choices, as script flags and as Terraform variables."""

    project: str = "demo-project"
    number: str = "123456789012"
    region: str = "europe-west1"
    prefix: str = "relay"
    backend: str = "vertex"
    version: str = "abc123def456"
    settings: Mapping[str, str] = field(default_factory=dict)
    function_secrets: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    step_secrets: tuple[str, ...] = ()
    notify_bucket: str = ""
    notify_prefix: str = ""
    records_retention_days: int = 0
    audit_retention_days: int = 0  # 0: the script's and the module's default (365)
    lock_audit_retention: bool = False

    def script_args(self) -> list[str]:
        args = [
            f"--project={self.project}",
            f"--project-number={self.number}",
            f"--region={self.region}",
            f"--prefix={self.prefix}",
            f"--backend={self.backend}",
            f"--version={self.version}",
            f"--policy={POLICY}",
        ]
        if self.records_retention_days:
            args.append(f"--records-retention={self.records_retention_days}d")
        if self.audit_retention_days:
            args.append(f"--audit-retention={self.audit_retention_days}d")
        if self.lock_audit_retention:
            args.append("--lock-audit-retention")
        args += [f"--env={name}={value}" for name, value in self.settings.items()]
        args += [f"--secret={env}={secret}:{version}" for env, (secret, version) in self.function_secrets.items()]
        args += [f"--step-secret={secret}" for secret in self.step_secrets]
        if self.notify_bucket:
            args.append(f"--notify-bucket={self.notify_bucket}")
        if self.notify_prefix:
            args.append(f"--notify-prefix={self.notify_prefix}")
        return args

    def terraform_vars(self, catalog_dir: Path) -> dict[str, Any]:
        return {
            "project_id": self.project,
            "region": self.region,
            "prefix": self.prefix,
            "backend": self.backend,
            "relay_settings": dict(self.settings),
            "function_secrets": {env: {"secret": s, "version": v} for env, (s, v) in self.function_secrets.items()},
            "step_secrets": list(self.step_secrets),
            "notify_bucket": self.notify_bucket,
            "notify_prefix": self.notify_prefix,
            "catalog_dir": str(catalog_dir),
            "catalog_version": self.version,
            "policy_file": str(POLICY),
            "records_retention_days": self.records_retention_days,
            **({"audit_retention_days": self.audit_retention_days} if self.audit_retention_days else {}),
            "lock_audit_retention": self.lock_audit_retention,
        }

    def policy_uri(self) -> str:
        return f"gs://{self.project}-{self.prefix}-catalog/{self.version}/policy.yaml"

    def results_uri(self) -> str:
        return f"gs://{self.project}-{self.prefix}-results"


def compiled_spec(policy_uri: str, results_uri: str) -> str:
    """A compiled spec, the part a preflight reads: the deployment's locations stamped into each step."""
    env = [{"name": "RELAY_POLICY_URI", "value": policy_uri}, {"name": "RELAY_RESULTS_URI", "value": results_uri}]
    return yaml.safe_dump({"deploymentSpec": {"executors": {"exec-push": {"container": {"env": env}}}}})


def script_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(_OUTSIDE_SETTINGS)}
    env.update(extra or {})
    return env


def run_script(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(DEPLOY), *args],
        capture_output=True,
        text=True,
        env=script_env(env),
        cwd=cwd,
        timeout=60,
        check=False,
    )


def dry_run(*args: str, env: Mapping[str, str] | None = None) -> str:
    result = run_script("--dry-run", *args, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def command_lines(output: str) -> list[list[str]]:
    """Each printed command as argv; `A || B` (describe-or-create) and `A && B` (describe-then-delete) give two."""
    found: list[list[str]] = []
    for line in output.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        current: list[str] = []
        for token in [*shlex.split(line), "||"]:
            if token in ("||", "&&"):
                assert current, f"an empty command in {line!r}"
                found.append(current)
                current = []
            else:
                current.append(token)
    return found


def gcloud_commands(output: str) -> list[list[str]]:
    """The gcloud commands of a dry run, without the leading `gcloud`."""
    return [argv[1:] for argv in command_lines(output) if argv[0] == "gcloud"]


# --- the model ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Binding:
    kind: str  # project, bucket, topic, subscription, service-account, secret, run-service
    resource: str
    member: str
    role: str
    condition: tuple[str, str] | None = None  # (title, expression) of an IAM condition


@dataclass
class System:
    apis: set[str] = field(default_factory=set)
    buckets: dict[str, set[str]] = field(default_factory=dict)
    topics: set[str] = field(default_factory=set)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    service_accounts: set[str] = field(default_factory=set)
    repositories: set[tuple[str, str, str]] = field(default_factory=set)
    bindings: set[Binding] = field(default_factory=set)
    functions: dict[str, dict[str, Any]] = field(default_factory=dict)
    notifications: set[tuple[str, str, str, str, str]] = field(default_factory=set)
    # Cloud Scheduler jobs: name -> (region, schedule, time zone, topic, message body)
    schedules: dict[str, tuple[str, str, str, str, str]] = field(default_factory=dict)
    # Bindings the script removes: a teardown's, or a deploy's superseded ones (Terraform drops what it no longer
    # declares by itself, so it has none).
    revoked: set[Binding] = field(default_factory=set)


# Every command path the script may print, so that a new kind of command cannot slip past the comparison.
KNOWN_COMMANDS = {
    ("services", "enable"),
    ("projects", "describe"),
    ("projects", "add-iam-policy-binding"),
    ("projects", "remove-iam-policy-binding"),
    ("storage", "service-agent"),
    ("storage", "rsync"),
    ("storage", "cp"),
    ("storage", "rm"),
    ("storage", "buckets", "describe"),
    ("storage", "buckets", "create"),
    ("storage", "buckets", "update"),
    ("storage", "buckets", "add-iam-policy-binding"),
    ("storage", "buckets", "remove-iam-policy-binding"),
    ("storage", "buckets", "notifications", "list"),
    ("storage", "buckets", "notifications", "create"),
    ("storage", "buckets", "notifications", "delete"),
    ("pubsub", "topics", "describe"),
    ("pubsub", "topics", "create"),
    ("pubsub", "topics", "delete"),
    ("pubsub", "topics", "add-iam-policy-binding"),
    ("pubsub", "topics", "remove-iam-policy-binding"),
    ("pubsub", "subscriptions", "describe"),
    ("pubsub", "subscriptions", "create"),
    ("pubsub", "subscriptions", "update"),
    ("pubsub", "subscriptions", "delete"),
    ("pubsub", "subscriptions", "add-iam-policy-binding"),
    ("iam", "service-accounts", "describe"),
    ("iam", "service-accounts", "create"),
    ("iam", "service-accounts", "delete"),
    ("iam", "service-accounts", "add-iam-policy-binding"),
    ("iam", "service-accounts", "remove-iam-policy-binding"),
    ("secrets", "add-iam-policy-binding"),
    ("secrets", "remove-iam-policy-binding"),
    ("run", "services", "add-iam-policy-binding"),
    ("run", "services", "remove-iam-policy-binding"),
    ("artifacts", "repositories", "describe"),
    ("artifacts", "repositories", "create"),
    ("artifacts", "repositories", "delete"),
    ("artifacts", "docker", "images", "describe"),
    ("builds", "submit"),
    ("functions", "deploy"),
    ("functions", "describe"),
    ("functions", "delete"),
    ("eventarc", "triggers", "describe"),
    ("scheduler", "jobs", "describe"),
    ("scheduler", "jobs", "create", "pubsub"),
    ("scheduler", "jobs", "delete"),
    # The metrics and alerts: compared with Terraform's by tests/infra/test_monitoring.py, through the rendered files.
    ("logging", "metrics", "describe"),
    ("logging", "metrics", "create"),
    ("logging", "metrics", "update"),
    ("logging", "metrics", "delete"),
    ("alpha", "monitoring", "policies", "list"),
    ("alpha", "monitoring", "policies", "create"),
    ("alpha", "monitoring", "policies", "update"),
    ("alpha", "monitoring", "policies", "delete"),
}

_BINDING_KINDS = {
    ("projects",): "project",
    ("storage", "buckets"): "bucket",
    ("pubsub", "topics"): "topic",
    ("pubsub", "subscriptions"): "subscription",
    ("iam", "service-accounts"): "service-account",
    ("secrets",): "secret",
    ("run", "services"): "run-service",
}


@dataclass(frozen=True)
class Command:
    path: tuple[str, ...]
    positionals: tuple[str, ...]
    flags: Mapping[str, str | bool]


def split_command(argv: Sequence[str]) -> Command:
    for length in (4, 3, 2):
        if tuple(argv[:length]) in KNOWN_COMMANDS:
            path = tuple(argv[:length])
            break
    else:
        raise AssertionError(f"not a command the comparison knows: gcloud {' '.join(argv)}")
    positionals: list[str] = []
    flags: dict[str, str | bool] = {}
    for token in argv[len(path) :]:
        if token.startswith("--"):
            name, has_value, value = token[2:].partition("=")
            flags[name] = value if has_value else True
        else:
            positionals.append(token)
    return Command(path, tuple(positionals), flags)


_DURATIONS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(text: str) -> int:
    return int(text[:-1]) * _DURATIONS[text[-1]] if text[-1] in _DURATIONS else int(text)


def from_script(output: str) -> System:
    """The system a dry run would create (or, for --teardown, touch)."""
    system = System()
    for argv in gcloud_commands(output):
        command = split_command(argv)
        path, args, flags = command.path, command.positionals, command.flags
        project = str(flags.get("project", ""))
        if path == ("services", "enable"):
            system.apis.update(args)
        elif path == ("storage", "buckets", "create"):
            props = {f"location={flags['location']}"}
            props |= {"uniform"} if flags.get("uniform-bucket-level-access") is True else set()
            props |= {"public-access-prevention"} if flags.get("public-access-prevention") is True else set()
            system.buckets[args[0].removeprefix("gs://")] = props
        elif path == ("storage", "buckets", "update"):
            props = system.buckets[args[0].removeprefix("gs://")]
            if flags.get("versioning") is True:
                props.add("versioning")
            if "soft-delete-duration" in flags:
                props.add(f"soft-delete={seconds(str(flags['soft-delete-duration']))}")
            if "retention-period" in flags:
                props.add(f"retention={seconds(str(flags['retention-period']))}")
            if flags.get("lock-retention-period") is True:
                props.add("retention-locked")
        elif path == ("pubsub", "topics", "create"):
            system.topics.add(args[0])
        elif path == ("pubsub", "subscriptions", "create"):
            system.subscriptions[args[0]] = {
                "topic": str(flags["topic"]),
                "retention": seconds(str(flags["message-retention-duration"])),
                "expires": flags.get("expiration-period") != "never",
            }
        elif path == ("iam", "service-accounts", "create"):
            system.service_accounts.add(args[0])
        elif path == ("artifacts", "repositories", "create"):
            system.repositories.add((args[0], str(flags["location"]), str(flags["repository-format"])))
        elif path[-1] in ("add-iam-policy-binding", "remove-iam-policy-binding"):
            kind = _BINDING_KINDS[path[:-1]]
            binding = Binding(
                kind,
                args[0].removeprefix("gs://"),
                str(flags["member"]),
                str(flags["role"]),
                _condition(flags.get("condition")),
            )
            (system.bindings if path[-1] == "add-iam-policy-binding" else system.revoked).add(binding)
        elif path == ("functions", "deploy"):
            system.functions[args[0]] = _script_function(flags, project)
        elif path == ("scheduler", "jobs", "create", "pubsub"):
            system.schedules[args[0]] = (
                str(flags["location"]),
                str(flags["schedule"]),
                str(flags.get("time-zone", "Etc/UTC")),
                str(flags["topic"]),
                str(flags["message-body"]),
            )
        elif path == ("storage", "buckets", "notifications", "create"):
            system.notifications.add(
                (
                    args[0].removeprefix("gs://"),
                    str(flags["topic"]),
                    str(flags.get("object-prefix", "")),
                    str(flags["event-types"]),
                    {"json": "JSON_API_V1", "none": "NONE"}[str(flags["payload-format"])],
                )
            )
    return system


def _condition(flag: str | bool | None) -> tuple[str, str] | None:
    """gcloud's --condition=expression=...,title=... (or None) as (title, expression)."""
    if flag is None or flag == "None":
        return None
    assert isinstance(flag, str), flag
    pairs = dict(pair.split("=", 1) for pair in flag.split(","))
    assert set(pairs) == {"expression", "title"}, f"a condition this comparison does not read: {flag}"
    return pairs["title"], pairs["expression"]


def _script_function(flags: Mapping[str, str | bool], project: str) -> dict[str, Any]:
    if "trigger-bucket" in flags:
        trigger = ("google.cloud.storage.object.v1.finalized", str(flags["trigger-bucket"]))
    else:
        trigger = (
            "google.cloud.pubsub.topic.v1.messagePublished",
            f"projects/{project}/topics/{flags['trigger-topic']}",
        )
    secrets = {}
    if isinstance(flags.get("set-secrets"), str):
        secrets = dict(pair.split("=", 1) for pair in str(flags["set-secrets"]).split(","))
    return {
        "runtime": flags["runtime"],
        "entry_point": flags["entry-point"],
        "region": flags["region"],
        "trigger": trigger,
        "trigger_region": flags.get("trigger-location", flags["region"]),
        "service_account": flags["service-account"],
        "trigger_service_account": flags["trigger-service-account"],
        "retry": flags.get("retry") is True,
        "timeout": seconds(str(flags["timeout"])),
        "memory": flags["memory"],
        "cpu": str(flags["cpu"]),
        "concurrency": int(str(flags["concurrency"])),
        "max_instances": int(str(flags["max-instances"])),
        "ingress": {"internal-only": "ALLOW_INTERNAL_ONLY", "all": "ALLOW_ALL"}[str(flags["ingress-settings"])],
        "env": dict(pair.split("=", 1) for pair in str(flags["set-env-vars"]).split(",")),
        "secrets": secrets,
    }


# --- Terraform -----------------------------------------------------------------------------------------------------


def _service_account(module: Module, label: str, attrs: Any) -> dict[str, Any]:
    email = f"{attrs['account_id']}@{attrs['project']}.iam.gserviceaccount.com"
    return {
        "email": email,
        "member": f"serviceAccount:{email}",
        "name": f"projects/{attrs['project']}/serviceAccounts/{email}",
    }


def _topic(module: Module, label: str, attrs: Any) -> dict[str, Any]:
    return {"id": f"projects/{attrs['project']}/topics/{attrs['name']}"}


def _subscription(module: Module, label: str, attrs: Any) -> dict[str, Any]:
    return {"id": f"projects/{attrs['project']}/subscriptions/{attrs['name']}"}


def _function(module: Module, label: str, attrs: Any) -> dict[str, Any]:
    where = f"projects/{attrs['project']}/locations/{attrs['location']}"
    return {
        "service_config": [{"service": f"{where}/services/{attrs['name']}"}],
        "event_trigger": [{"trigger": f"{where}/triggers/{attrs['name']}-000000"}],
    }


def terraform_module(inputs: Inputs, catalog_dir: Path) -> Module:
    return Module(
        TERRAFORM,
        inputs.terraform_vars(catalog_dir),
        computed={
            "google_service_account": _service_account,
            "google_pubsub_topic": _topic,
            "google_pubsub_subscription": _subscription,
            "google_cloudfunctions2_function": _function,
        },
        data={
            "google_project.this": {"number": inputs.number},
            "google_storage_project_service_account.this": {
                "email_address": f"service-{inputs.number}@gs-project-accounts.iam.gserviceaccount.com"
            },
        },
    )


def _short(name: str, collection: str) -> str:
    """`projects/P/<collection>/NAME` or NAME -> NAME."""
    marker = f"/{collection}/"
    return name.split(marker, 1)[1] if marker in name else name


_IAM_RESOURCES = {
    "google_project_iam_member": ("project", lambda i: i["project"]),
    "google_storage_bucket_iam_member": ("bucket", lambda i: i["bucket"]),
    "google_pubsub_topic_iam_member": ("topic", lambda i: _short(i["topic"], "topics")),
    "google_pubsub_subscription_iam_member": ("subscription", lambda i: _short(i["subscription"], "subscriptions")),
    "google_service_account_iam_member": (
        "service-account",
        lambda i: _short(i["service_account_id"], "serviceAccounts"),
    ),
    "google_secret_manager_secret_iam_member": ("secret", lambda i: i["secret_id"]),
    "google_cloud_run_v2_service_iam_member": ("run-service", lambda i: _short(i["name"], "services")),
}


def from_terraform(module: Module, prefix_of_buckets: str) -> System:
    """The system the module declares, less what only Terraform needs (the sources bucket)."""
    terraform_only = {f"{prefix_of_buckets}-{name}" for name in TERRAFORM_ONLY_BUCKETS}
    system = System()
    system.apis = {i["service"] for _, i, _ in module.instances("google_project_service")}
    for _, bucket, body in module.instances("google_storage_bucket"):
        if bucket["name"] in terraform_only:
            continue
        props = {f"location={bucket['location']}"}
        props |= {"uniform"} if bucket["uniform_bucket_level_access"] is True else set()
        props |= {"public-access-prevention"} if bucket["public_access_prevention"] == "enforced" else set()
        if any(block.get("enabled") is True for block in module.blocks_of(body, "versioning")):
            props.add("versioning")
        for policy in module.blocks_of(body, "soft_delete_policy"):
            props.add(f"soft-delete={policy['retention_duration_seconds']}")
        for policy in module.blocks_of(body, "retention_policy"):
            props.add(f"retention={policy['retention_period']}")
            props |= {"retention-locked"} if policy["is_locked"] is True else set()
        system.buckets[bucket["name"]] = props
    system.topics = {i["name"] for _, i, _ in module.instances("google_pubsub_topic")}
    for _, subscription, body in module.instances("google_pubsub_subscription"):
        policies = module.blocks_of(body, "expiration_policy")
        system.subscriptions[subscription["name"]] = {
            "topic": _short(subscription["topic"], "topics"),
            "retention": seconds(subscription["message_retention_duration"]),
            "expires": not any(policy.get("ttl") == "" for policy in policies),
        }
    system.service_accounts = {i["account_id"] for _, i, _ in module.instances("google_service_account")}
    system.repositories = {
        (i["repository_id"], i["location"], i["format"].lower())
        for _, i, _ in module.instances("google_artifact_registry_repository")
    }
    for kind, (binding_kind, resource) in _IAM_RESOURCES.items():
        for _, iam, body, scope in module.scoped_instances(kind):
            if binding_kind == "bucket" and iam["bucket"] in terraform_only:
                continue
            conditions = [(c["title"], c["expression"]) for c in module.blocks_of(body, "condition", scope)]
            assert len(conditions) <= 1, f"{kind}: more than one condition"
            condition = conditions[0] if conditions else None
            system.bindings.add(Binding(binding_kind, resource(iam), iam["member"], iam["role"], condition))
    for _, function, body, scope in module.scoped_instances("google_cloudfunctions2_function"):
        system.functions[function["name"]] = _terraform_function(module, function, body, scope)
    for _, job, body, scope in module.scoped_instances("google_cloud_scheduler_job"):
        [target] = module.blocks_of(body, "pubsub_target", scope)
        system.schedules[job["name"]] = (
            job["region"],
            job["schedule"],
            job["time_zone"],
            target["topic_name"],
            base64.b64decode(target["data"]).decode(),
        )
    for _, notification, _ in module.instances("google_storage_notification"):
        system.notifications.add(
            (
                notification["bucket"],
                notification["topic"],
                notification["object_name_prefix"] or "",
                ",".join(notification["event_types"]),
                notification["payload_format"],
            )
        )
    return system


def _terraform_function(module: Module, function: Any, body: dict[str, Any], scope: Scope | None) -> dict[str, Any]:
    [build] = module.blocks_of(body, "build_config", scope)
    [service_body] = body["service_config"]
    [service] = module.blocks_of(body, "service_config", scope)
    [trigger_body] = body["event_trigger"]
    [trigger] = module.blocks_of(body, "event_trigger", scope)
    filters = {f["attribute"]: f["value"] for f in module.blocks_of(trigger_body, "event_filters", scope)}
    resource = filters["bucket"] if "bucket" in filters else trigger["pubsub_topic"]
    secrets = {
        s["key"]: f"{s['secret']}:{s['version']}"
        for s in module.blocks_of(service_body, "secret_environment_variables", scope)
    }
    return {
        "runtime": build["runtime"],
        "entry_point": build["entry_point"],
        "region": function["location"],
        "trigger": (trigger["event_type"], resource),
        "trigger_region": trigger["trigger_region"],
        "service_account": service["service_account_email"],
        "trigger_service_account": trigger["service_account_email"],
        "retry": trigger["retry_policy"] == "RETRY_POLICY_RETRY",
        "timeout": service["timeout_seconds"],
        "memory": service["available_memory"],
        "cpu": str(service["available_cpu"]),
        "concurrency": service["max_instance_request_concurrency"],
        "max_instances": service["max_instance_count"],
        "ingress": service["ingress_settings"],
        "env": service["environment_variables"],
        "secrets": secrets,
    }
