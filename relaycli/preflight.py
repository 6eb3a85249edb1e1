"""`relay preflight`: what a deployment is about to create, checked against its policy before any side effect.

infra/deploy.sh runs it before its first gcloud call (in a dry run too) and infra/terraform reads it as an
`external` data source during plan: both stop with every problem listed. The checks take the policy reader's and
the settings' own rules (relay.policy, relay.config); nothing here decides what a policy allows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from relay import naming
from relay import policy as rules
from relay.config import Settings
from relay.errors import ConfigError
from relaycli.command import Command, add_json
from relaycli.config import Context
from relaycli.errors import EXIT_OK, EXIT_USAGE, CliError, UsageError
from relaycli.next_steps import next_steps
from relaycli.output import plural, to_json

# What a spec must name for its steps to act in this deployment (pipelines.compile stamps both into every task).
_STAMPS = (("RELAY_POLICY_URI", "--policy-uri"), ("RELAY_RESULTS_URI", "--results-uri"))
SECRET_VALUE = "(from Secret Manager)"  # stands for a setting's value the deploy reads from Secret Manager


@dataclass(frozen=True)
class Deployment:
    """What a deploy is about to create, as far as the policy and the settings are concerned."""

    env: Mapping[str, str]  # the functions' RELAY_* settings, as deployed
    secrets: Mapping[str, str] = field(default_factory=dict)  # setting -> SECRET[:VERSION] from Secret Manager
    trigger_bucket: str = ""
    trigger_topic: str = ""  # projects/P/topics/T
    step_secrets: tuple[str, ...] = ()  # the secrets the pipelines' account may read
    notify_buckets: tuple[str, ...] = ()  # buckets whose notifications go to the trigger topic
    pipelines_account: str = ""  # the account the steps run as (for the grants left to the operator)

    @property
    def project(self) -> str:
        parts = self.trigger_topic.split("/")
        return parts[1] if len(parts) == 4 and parts[0] == "projects" else ""


@dataclass(frozen=True)
class Report:
    problems: tuple[str, ...] = ()  # the deploy stops
    warnings: tuple[str, ...] = ()  # it goes on, and says so
    todo: tuple[str, ...] = ()  # commands: the grants the policy implies, which the deploy does not apply
    policy: rules.Policy | None = None  # as parsed; None when there is none or it is invalid

    @property
    def ok(self) -> bool:
        return not self.problems


def preflight(
    deployment: Deployment, policy: tuple[bytes, str] | None, catalog: Mapping[str, bytes] | None = None
) -> Report:
    """Every problem and warning of `deployment` with `policy` (its bytes and where they were read) and the compiled
    specs it publishes (`catalog`: where -> bytes; None when the deploy compiles its own)."""
    problems = _settings_problems(deployment)
    problems += _catalog_problems(catalog or {}, deployment.env)
    warnings: list[str] = []
    if policy is None:
        warnings.append("no policy file given: the policy published with the catalog is not checked here")
        return Report(tuple(problems), tuple(warnings))
    raw, where = policy
    try:
        parsed = rules.parse_policy(raw, where)
    except rules.PolicyError as error:
        problems += [f"{where}: {problem}" for problem in error.problems]
        return Report(tuple(problems), tuple(warnings))
    uncovered = _uncovered(parsed, deployment)
    if deployment.trigger_bucket and deployment.trigger_topic and len(uncovered) == 2:
        # Neither origin: nothing this deployment receives can ever start a run.
        problems.append(f"{where}: no tenant takes triggers from this deployment: " + "; ".join(uncovered))
    else:
        warnings += uncovered
    found, granted_only = _secrets(parsed, deployment)
    problems += found
    warnings += granted_only
    problems += _notifications(parsed, deployment)
    return Report(tuple(problems), tuple(warnings), _grants(parsed, deployment), parsed)


def _settings_problems(deployment: Deployment) -> list[str]:
    """The functions' settings as they will read them at start (relay.config), secrets standing in by name."""
    env = {**deployment.env, **dict.fromkeys(deployment.secrets, SECRET_VALUE)}
    try:
        Settings.from_env(env)
    except ConfigError as error:
        return [f"settings: {problem}" for problem in error.problems]
    return []


def _catalog_problems(catalog: Mapping[str, bytes], env: Mapping[str, str]) -> list[str]:
    """Each spec's steps must read this deployment's policy and write its records (what pipelines.compile
    stamps in with --policy-uri and --results-uri): a spec compiled elsewhere sends its steps to another policy."""
    problems = []
    for where, raw in sorted(catalog.items()):
        containers = _containers(raw)
        if containers is None:
            problems.append(f"{where}: expected a compiled pipeline spec (YAML with deploymentSpec), found none")
            continue
        for name, flag in _STAMPS:
            expected = env.get(name, "")
            if not expected:
                continue
            wrong = {step: found for step, found in containers.items() if found.get(name) != expected}
            if not containers or wrong:
                step, found = next(iter(wrong.items()), ("(no step)", {}))
                problems.append(
                    f"{where}: does not name {expected}: compile it with {flag} {expected} "
                    f"(step {step}: expected {name} {expected}, found {found.get(name) or 'none'})"
                )
    return problems


def _containers(raw: bytes) -> dict[str, dict[str, str]] | None:
    """Each container step of a compiled spec and the environment it is given; None when it is not a spec."""
    try:
        documents = [d for d in yaml.safe_load_all(raw) if isinstance(d, dict)]
    except yaml.YAMLError:
        return None
    spec = next((d for d in documents if isinstance(d.get("deploymentSpec"), dict)), None)
    if spec is None:
        return None
    executors = spec["deploymentSpec"].get("executors")
    found: dict[str, dict[str, str]] = {}
    for name, executor in (executors if isinstance(executors, dict) else {}).items():
        container = executor.get("container") if isinstance(executor, dict) else None
        if isinstance(container, dict):
            listed = container.get("env")
            pairs: list[Any] = listed if isinstance(listed, list) else []
            found[str(name)] = {str(p.get("name")): str(p.get("value")) for p in pairs if isinstance(p, dict)}
    return found


def _uncovered(policy: rules.Policy, deployment: Deployment) -> list[str]:
    """The deployed origins no tenant takes triggers from: every trigger from there is refused (policy_denied)."""
    warnings = []
    bucket = f"gs://{deployment.trigger_bucket}"
    if deployment.trigger_bucket and not any(rules.within(p, bucket) for t in policy.tenants for p in t.triggers):
        warnings.append(
            f"{bucket}: no tenant takes trigger files from the trigger bucket (expected a tenants[].triggers "
            f"prefix under it, found {rules.origins(policy)}): every file dropped there is refused"
        )
    topic = deployment.trigger_topic
    if topic and rules.tenant_for_topic(policy, topic) is None:
        warnings.append(
            f"{topic}: no tenant takes messages from the trigger topic (expected it in a tenants[].topics, "
            f"found {rules.origins(policy)}): every message published there is refused"
        )
    return warnings


def _secrets(policy: rules.Policy, deployment: Deployment) -> tuple[list[str], list[str]]:
    """A secret the policy binds must be readable by the steps: the pipelines' account is the deploy's own and
    holds only what it grants, so without --step-secret every run that uses the binding fails in its step, after
    it was launched. A granted secret no tenant binds is readable by the steps yet usable by no trigger."""
    bound = rules.bound_secrets(policy)
    granted = set(deployment.step_secrets)
    problems = [
        f"{policy.source}: the secret {name} is bound (tenants {', '.join(tenants)}) but not granted to the "
        f"steps: expected --step-secret {name} (step_secrets in Terraform), found "
        f"{', '.join(deployment.step_secrets) or 'none'}"
        for name, tenants in sorted(bound.items())
        if name not in granted
    ]
    warnings = [
        f"--step-secret {name}: granted to the steps, but no tenant binds it (tenants[].secrets): no trigger can use it"
        for name in deployment.step_secrets
        if name not in bound
    ]
    return problems, warnings


def _notifications(policy: rules.Policy, deployment: Deployment) -> list[str]:
    """A bucket wired to the trigger topic must be listed for it, else Relay refuses each of its notifications."""
    wired = rules.wired_buckets(policy, deployment.trigger_topic)
    return [
        f"--notify-bucket {bucket}: expected under notifications for {deployment.trigger_topic} in "
        f"{policy.source} (found {', '.join(wired) or 'none'}): else every notification from it is refused"
        for bucket in deployment.notify_buckets
        if bucket not in wired
    ]


def _grants(policy: rules.Policy, deployment: Deployment) -> tuple[str, ...]:
    """The bucket roles the steps need for what the policy lets tenants use: read its sources and code (whole
    buckets: listing cannot be narrowed by a condition), write its gcs destinations. Left to the operator: these
    buckets are not the deployment's own."""
    member = f"serviceAccount:{deployment.pipelines_account or 'PIPELINES_ACCOUNT'}"
    wanted: dict[tuple[str, str], set[str]] = {}
    for tenant in policy.tenants:
        for location in (*tenant.sources, *tenant.code):
            if location.startswith("gs://"):
                bucket = location.removeprefix("gs://").split("/")[0]
                wanted.setdefault((bucket, "roles/storage.objectViewer"), set()).add(f"read {location}")
        for rule in tenant.destinations:
            if rule.kind == "gcs":
                # The push step reads what is there, creates, and replaces or removes what it sent (overwrite).
                where = f"gs://{rule.bucket}/{rule.prefix}"
                wanted.setdefault((rule.bucket, "roles/storage.objectUser"), set()).add(f"write {where}")
    return tuple(
        f"gcloud storage buckets add-iam-policy-binding gs://{bucket} --member={member} --role={role}"
        f"  # {'; '.join(sorted(uses))}"
        for (bucket, role), uses in sorted(wanted.items())
    )


# ---------------------------------------------------------------------------------------------------------------
# The command


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", type=Path, metavar="FILE", help="the deployment policy the deploy publishes")
    parser.add_argument("--backend", choices=("vertex", "kfp"), help="RELAY_BACKEND (as --env RELAY_BACKEND=...)")
    parser.add_argument(
        "--env", action="append", default=[], metavar="RELAY_NAME=VALUE", help="a setting the functions get"
    )
    parser.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="ENV=SECRET[:VERSION]",
        help="a setting the functions read from Secret Manager (deploy.sh --secret)",
    )
    parser.add_argument("--trigger-bucket", default="", metavar="BUCKET", help="the deployed trigger bucket")
    parser.add_argument("--trigger-topic", default="", metavar="projects/P/topics/T", help="the deployed trigger topic")
    parser.add_argument("--catalog-dir", type=Path, metavar="DIR", help="compiled specs <name>.yaml to be published")
    parser.add_argument(
        "--step-secret", action="append", default=[], metavar="SECRET", help="a secret granted to the steps"
    )
    parser.add_argument(
        "--notify-bucket", action="append", default=[], metavar="BUCKET", help="a bucket wired to the trigger topic"
    )
    parser.add_argument("--pipelines-account", default="", metavar="EMAIL", help="the account the steps run as")
    add_json(parser)
    parser.add_argument(
        "--terraform",
        action="store_true",
        help="answer as a Terraform external data source: a JSON object of strings; problems exit 2 on stderr",
    )
    parser.add_argument(
        "--next-steps", action="store_true", help="print what to do once deployed (exports, first commands) instead"
    )


def deployment_from(args: argparse.Namespace) -> Deployment:
    env: dict[str, str] = {}
    for pair in args.env:
        name, sep, value = pair.partition("=")
        if not sep or not name.startswith("RELAY_"):
            raise UsageError(f"--env: expected RELAY_NAME=VALUE, found {pair!r}")
        env[name] = value
    if args.backend:
        env["RELAY_BACKEND"] = args.backend
    secrets = {}
    for spec in args.secret:
        name, sep, secret = spec.partition("=")
        if not sep or not name or not secret:
            raise UsageError(f"--secret: expected ENV=SECRET[:VERSION], found {spec!r}")
        secrets[name] = secret
    return Deployment(
        env=env,
        secrets=secrets,
        trigger_bucket=args.trigger_bucket,
        trigger_topic=args.trigger_topic,
        step_secrets=tuple(dict.fromkeys(args.step_secret)),
        notify_buckets=tuple(dict.fromkeys(args.notify_bucket)),
        pipelines_account=args.pipelines_account,
    )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: expected a readable {what}, found {exc.strerror or exc}") from None


def _catalog(folder: Path | None) -> dict[str, bytes] | None:
    """The specs deploy.sh and Terraform publish from the folder: every *.yaml but a policy.yaml."""
    if folder is None:
        return None
    if not folder.is_dir():
        raise UsageError(f"--catalog-dir: expected a folder of compiled specs, found none at {folder}")
    return {
        str(path): _read(path, "compiled spec")
        for path in sorted(folder.glob("*.yaml"))
        if path.stem != naming.POLICY_ENTRY
    }


def render(report: Report) -> str:
    verdict = "ok" if report.ok else "stopped"
    counts = f"{plural(len(report.problems), 'problem')}, {plural(len(report.warnings), 'warning')}"
    lines = [f"preflight: {verdict} ({counts})"]
    lines += [f"  problem: {p}" for p in report.problems]
    lines += [f"  warning: {w}" for w in report.warnings]
    if report.todo:
        lines.append("  to do: the grants the policy implies (buckets that are not Relay's; not applied):")
        lines += [f"    {command}" for command in report.todo]
    return "\n".join(lines)


def _run(args: argparse.Namespace, context: Context) -> int:
    deployment = deployment_from(args)
    policy = (_read(args.policy, "policy file"), str(args.policy)) if args.policy else None
    report = preflight(deployment, policy, _catalog(args.catalog_dir))
    steps = next_steps(deployment, report.policy, report.todo)
    if args.next_steps:
        print("\n".join(steps))
        return EXIT_OK
    if args.terraform:
        if not report.ok:
            print(render(report), file=sys.stderr)
            return EXIT_USAGE
        answer = {"warnings": report.warnings, "todo": report.todo, "next_steps": steps}
        print(json.dumps({key: "\n".join(lines) for key, lines in answer.items()}))
        return EXIT_OK
    if args.json:
        print(to_json({"ok": report.ok, "problems": [*report.problems], "warnings": [*report.warnings],
                       "todo": [*report.todo]}))  # fmt: skip
    else:
        print(render(report), file=sys.stdout if report.ok else sys.stderr)
    return EXIT_OK if report.ok else EXIT_USAGE


COMMAND = Command(
    name="preflight",
    summary="check a deployment against its policy before deploying it, changing nothing",
    description=(
        "Check what a deploy is about to create against the policy it publishes, as infra/deploy.sh (its dry run "
        "included) and infra/terraform (during plan) do before anything else: the policy parses (every problem "
        "listed); the functions' settings are complete for the backend (--backend, --env, --secret); every spec in "
        "--catalog-dir was compiled for this policy location and results location; every secret a tenant binds is "
        "granted to the steps (--step-secret); every --notify-bucket is listed under notifications for the trigger "
        "topic; some tenant takes triggers from the trigger bucket or topic (one of the two left uncovered is a "
        "warning, as is a granted secret no tenant binds). "
        "The grants the policy implies on buckets that are not Relay's (read on sources and code, write on gcs "
        "destinations) are printed as commands to run. Exit status 0 when nothing stops the deploy, 2 otherwise."
    ),
    examples="""\
examples:
  relay preflight --policy policy.yaml --backend kfp --env RELAY_KFP_HOST=https://kfp.example.com \\
    --env RELAY_RESULTS_URI=gs://lab-relay-results --env RELAY_POLICY_URI=gs://lab-relay-catalog/v1/policy.yaml \\
    --trigger-bucket lab-relay-triggers --trigger-topic projects/lab/topics/relay-triggers \\
    --catalog-dir build/catalog --step-secret hf-token
  infra/deploy.sh --project lab --policy policy.yaml --dry-run   # runs it first""",
    add_arguments=_arguments,
    run=_run,
)


def main(argv: Sequence[str] | None = None, env: Mapping[str, Any] | None = None) -> int:
    """`python -m relaycli.preflight ARGS`, as `relay preflight ARGS` without loading every other command."""
    parser = argparse.ArgumentParser(prog="relay preflight", description=COMMAND.description)
    COMMAND.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return COMMAND.run(args, Context(env=os.environ if env is None else env))
    except CliError as error:
        print(f"relay preflight: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
