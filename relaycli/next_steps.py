"""What to do once Relay is deployed: the grants left to the operator, the exports that point `relay` at the
deployment, and the first commands to try."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING

from relay import policy as rules

if TYPE_CHECKING:
    from relaycli.preflight import Deployment

EXAMPLE = "examples/push.json"  # a trigger of the repository's, to check against the deployed policy


def next_steps(deployment: Deployment, policy: rules.Policy | None, todo: Sequence[str]) -> list[str]:
    """Numbered steps as lines; the exports are the functions' own settings, which `relay` reads as they do."""
    lines: list[str] = []
    step = 0

    def heading(text: str) -> None:
        nonlocal step
        step += 1
        lines.append(f"{step}. {text}")

    if todo:
        heading("grant the steps what the policy lets tenants use (buckets that are not Relay's):")
        lines += [f"   {command}" for command in todo]
    heading("point relay at this deployment (paste these, or keep them in a file and `source` it):")
    for name, value in sorted(deployment.env.items()):
        lines.append(f"   export {name}={shlex.quote(value)}")
    for name, spec in sorted(deployment.secrets.items()):
        secret, _, version = spec.partition(":")
        read = f"gcloud secrets versions access {version or 'latest'} --secret={secret}"
        lines.append(f"   export {name}=$({read}{_project_flag(deployment)})  # for relay sync and cancel")
    if deployment.project:
        lines.append(f"   export GOOGLE_CLOUD_PROJECT={deployment.project}")
    origin = _origin(deployment, policy)
    if origin is None:
        heading("no tenant takes triggers from this deployment yet: add one to the policy and deploy again;")
        lines.append("   meanwhile, check that relay reaches the deployed policy:")
        lines.append('   relay validate --policy "$RELAY_POLICY_URI"')
        return lines
    command, where = origin
    heading("check a trigger against the deployed catalog and policy, launching nothing:")
    lines.append(f"   relay validate {EXAMPLE} {where}")
    heading("then send it (or a trigger of your own that validate accepts) and follow it:")
    lines.append(f"   relay {command} {EXAMPLE} {where}")
    lines.append("   relay runs --limit 5")
    return lines


def _origin(deployment: Deployment, policy: rules.Policy | None) -> tuple[str, str] | None:
    """How a first trigger gets in: into a tenant's trigger prefix in the trigger bucket, else to its topic."""
    if policy is None:
        return None
    bucket = f"gs://{deployment.trigger_bucket}"
    for tenant in policy.tenants:
        for prefix in tenant.triggers:
            if deployment.trigger_bucket and rules.within(prefix, bucket):
                folder = prefix.removeprefix(bucket).strip("/")
                name = f"{folder}/push.json" if folder else "push.json"
                return "trigger", f"--bucket {deployment.trigger_bucket} --name {shlex.quote(name)}"
    if deployment.trigger_topic and rules.tenant_for_topic(policy, deployment.trigger_topic):
        return "publish", f"--topic {deployment.trigger_topic}"
    return None


def _project_flag(deployment: Deployment) -> str:
    return f" --project={deployment.project}" if deployment.project else ""
