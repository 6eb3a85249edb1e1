"""The deployment policy: what a trigger may use, per tenant; parsed strictly, applied by pure functions.

The operator writes one YAML file, published beside the catalog where only the deployer writes. Deny by default:
a source, destination, secret, cluster or code location that no rule of the trigger's tenant names is refused,
with the rule that would allow it. The functions apply it when a trigger arrives; the steps apply the same
functions again to their own parameters, with the policy read from the deployment, before any byte or credential
leaves. Nothing a policy says can open Relay's own storage (catalog, policy, records): those locations are
`protected` and refused whatever the rules say.

The module is split along its seams, and this one gathers them under the name every caller imports: what a policy
says (relay.policy_model), reading one (relay.policy_reader), deciding with one (relay.policy_decisions), and the
locations, URLs, sizes and durations both compare (relay.policy_locations).

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

from relay.policy_decisions import (
    SEPARATOR,
    Context,
    bound_references,
    bound_secrets,
    check_location,
    check_request,
    check_trigger,
    describe_rule,
    describe_target,
    matching_rule,
    origins,
    own_locations,
    pipeline_denied,
    refuse_notification,
    refuse_object,
    refuse_origin,
    refuse_topic,
    route_of,
    scoped_run_key,
    tenant_for_object,
    tenant_for_topic,
    wired_buckets,
)
from relay.policy_locations import (
    as_location,
    parse_seconds,
    parse_size,
    protected_by,
    same_origin,
    url_within,
    within,
)
from relay.policy_model import (
    HUB,
    KAGGLE,
    NO_POLICY,
    PUSH,
    RATCHET,
    RULE_ID,
    SECRET_FIELDS,
    TENANT_NAME,
    Binding,
    Limits,
    Notifications,
    Policy,
    PolicyError,
    Resources,
    Rule,
    Tenant,
    rule_location,
)
from relay.policy_reader import (
    MAX_POLICY_BYTES,
    parse_policy,
    read_policy,
)

__all__ = [
    "HUB",
    "KAGGLE",
    "MAX_POLICY_BYTES",
    "NO_POLICY",
    "PUSH",
    "RATCHET",
    "RULE_ID",
    "SECRET_FIELDS",
    "SEPARATOR",
    "TENANT_NAME",
    "Binding",
    "Context",
    "Limits",
    "Notifications",
    "Policy",
    "PolicyError",
    "Resources",
    "Rule",
    "Tenant",
    "as_location",
    "bound_references",
    "bound_secrets",
    "check_location",
    "check_request",
    "check_trigger",
    "describe_rule",
    "describe_target",
    "matching_rule",
    "origins",
    "own_locations",
    "parse_policy",
    "parse_seconds",
    "parse_size",
    "pipeline_denied",
    "protected_by",
    "read_policy",
    "refuse_notification",
    "refuse_object",
    "refuse_origin",
    "refuse_topic",
    "route_of",
    "rule_location",
    "same_origin",
    "scoped_run_key",
    "tenant_for_object",
    "tenant_for_topic",
    "url_within",
    "wired_buckets",
    "within",
]
