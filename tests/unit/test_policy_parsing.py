"""The policy file, field by field: what each field takes, its bounds, and the message for what it does not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from relay.naming import BUCKET_RULE, PROJECT_ID_RULE, TOPIC_PATH_RULE
from relay.policy import (
    MAX_POLICY_BYTES,
    NO_POLICY,
    Limits,
    PolicyError,
    Resources,
    Rule,
    parse_policy,
    read_policy,
)
from tests.fakes import MemoryBlobStore

URL = "expected an https:// URL with a host and no user or query, found string"
LOCATION = "expected a gs://bucket/prefix, s3://bucket/prefix or file:///folder location, found string"
RULE_ID = "expected an id matching [a-z0-9][a-z0-9._-]{0,62}, found string"
SIZE = "expected a positive whole number (or 10GiB), found"
NAME = "expected a tenant name matching [a-z][a-z0-9]{0,19}, found string"
PLAIN_HTTP = "expected https:// (plain http only to this machine: credentials travel over it), found string"
SECRET = "expected secret://NAME or secret://projects/P/secrets/S, found"
QUANTITY = "expected a Kubernetes quantity like"
DIRECT = "expected a tenant of the policy (assay), found"
PREFIX = "expected an object name prefix without '..', '.' or empty segments, found"


def refused(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "p.yaml")
    return list(caught.value.problems)


PROJECT = f"expected {PROJECT_ID_RULE}, found string"


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        ("version: true", ["version: expected 1, found boolean true"]),
        ("version: '1'", ["version: expected 1, found string '1'"]),
        ("project: abcde", [f"project: {PROJECT} 'abcde'"]),  # 5: one short
        ("project: a" + "b" * 29 + "c", [f"project: {PROJECT} 'a" + "b" * 29 + "c'"]),
        ("project: abcde-", [f"project: {PROJECT} 'abcde-'"]),
        (
            "project: 7",
            [
                "project: expected a project id: 6-30 lower-case letters, digits or -, starting with a letter, "
                "not ending in -, found number 7"
            ],
        ),
        ("tenants: {}", ["tenants: expected a list, found a mapping of 0"]),
        ("tenants: [{name: " + "a" * 21 + "}]", [f"tenants[0].name: {NAME} '{'a' * 21}'"]),
        ("tenants: [{name: 1a}]", [f"tenants[0].name: {NAME} '1a'"]),
        (
            "tenants: [{name: a, pipelines: [Bad]}]",
            ["tenants.a.pipelines[0]: expected a pipeline name, found string 'Bad'"],
        ),
        (
            "tenants: [{name: a, topics: [projects/proj-p/topics/tee, projects/p/t, 'projects/proj-p/topics/tee x']}]",
            [
                f"tenants.a.topics[1]: expected {TOPIC_PATH_RULE}, found string 'projects/p/t'",
                f"tenants.a.topics[2]: expected {TOPIC_PATH_RULE}, found string 'projects/proj-p/topics/tee x'",
            ],
        ),
        (
            # Pub/Sub's own rule: the project an id of 6-30, the topic 3-255 ASCII characters, never goog...
            "tenants: [{name: a, topics: [projects/p/topics/relay, projects/proj-p/topics/ab, "
            "projects/proj-p/topics/goog-x, projects/proj-p/topics/rélay, projects/proj-p/topics/Ab~+%._-9]}]",
            [
                f"tenants.a.topics[0]: expected {TOPIC_PATH_RULE}, found string 'projects/p/topics/relay'",
                f"tenants.a.topics[1]: expected {TOPIC_PATH_RULE}, found string 'projects/proj-p/topics/ab'",
                f"tenants.a.topics[2]: expected {TOPIC_PATH_RULE}, found string 'projects/proj-p/topics/goog-x'",
                f"tenants.a.topics[3]: expected {TOPIC_PATH_RULE}, found string 'projects/proj-p/topics/rélay'",
            ],
        ),
        (
            "tenants: [{name: a, triggers: [gs://b/in/, gs://B00/in/, gs://b00/in/]}]",
            [
                f"tenants.a.triggers[0]: expected a gs://bucket/prefix with {BUCKET_RULE}, found string 'gs://b/in/'",
                f"tenants.a.triggers[1]: expected a gs://bucket/prefix with {BUCKET_RULE}, found string 'gs://B00/in/'",
            ],
        ),
        (
            "tenants: [{name: a, triggers: [s3://b/p/, file:///x/, gs://b/../x]}]",
            [
                "tenants.a.triggers[0]: expected a gs://bucket/prefix the trigger files land under, found string 's3://b/p/'",
                "tenants.a.triggers[1]: expected a gs://bucket/prefix the trigger files land under, found string 'file:///x/'",
                f"tenants.a.triggers[2]: {LOCATION} 'gs://b/../x'",
            ],
        ),
        (
            "tenants: [{name: a, sources: [http://x/, gs://b/./c, 'file://host/x', gs://, '']}]",
            [
                f"tenants.a.sources[0]: {LOCATION} 'http://x/'",
                f"tenants.a.sources[1]: {LOCATION} 'gs://b/./c'",
                f"tenants.a.sources[2]: {LOCATION} 'file://host/x'",
                f"tenants.a.sources[3]: {LOCATION} 'gs://'",
                "tenants.a.sources[4]: expected a gs://, s3:// or file:// location, found string ''",
            ],
        ),
        (
            "tenants: [{name: a, clusters: [{kind: local, network: 1}]}]",
            ["tenants.a.clusters[0].network: expected true or false, found number 1"],
        ),
        (
            "tenants: [{name: a, clusters: [{kind: local, root: /srv}]}]",
            [f"tenants.a.clusters[0].root: {LOCATION} '/srv'"],
        ),
        (
            "tenants: [{name: a, clusters: [{kind: kfp}]}]",
            ["tenants.a.clusters[0].host: expected a value for a kfp rule, found null"],
        ),
        (
            "tenants: [{name: a, clusters: [{kind: gcs, bucket: b}]}]",
            [
                "tenants.a.clusters[0].kind: expected one of local, http, kfp, found string 'gcs'",
                "tenants.a.clusters[0].bucket: unknown key (expected one of id, kind)",
                f"tenants.a.clusters[0].id: {RULE_ID} ''",
            ],
        ),
        (
            "tenants: [{name: a, destinations: [{id: a, kind: http, url: 'ftp://x/'}, "
            "{id: b, kind: http, url: 'https://u@x/'}, {id: c, kind: http, url: 'https://x/?q=1'}, "
            "{id: d, kind: http, url: 'https:///p'}, {id: e, kind: http, url: 5}]}]",
            [
                f"tenants.a.destinations[0].url: {URL} 'ftp://x/'",
                f"tenants.a.destinations[1].url: {URL} 'https://u@x/'",
                f"tenants.a.destinations[2].url: {URL} 'https://x/?q=1'",
                f"tenants.a.destinations[3].url: {URL} 'https:///p'",
                "tenants.a.destinations[4].url: expected an https:// URL, found number 5",
            ],
        ),
        (
            "tenants: [{name: a, destinations: [{kind: http, url: 'http://localhost:8080/'}, {id: b, kind: http, url: "
            "'http://127.0.0.1/'}, {id: c, kind: http, url: 'http://[::1]/'}, "
            "{id: d, kind: http, url: 'http://10.0.0.1/'}, "
            "{id: e, kind: http, url: 'http://localhost.example/'}]}]",
            [
                f"tenants.a.destinations[3].url: {PLAIN_HTTP} 'http://10.0.0.1/'",
                f"tenants.a.destinations[4].url: {PLAIN_HTTP} 'http://localhost.example/'",
            ],
        ),
        (
            "tenants: [{name: a, destinations: [{id: Bad, kind: gcs, bucket: b}, {id: '"
            + "a" * 64
            + "', kind: gcs, bucket: b}]}]",
            [
                f"tenants.a.destinations[0].id: {RULE_ID} 'Bad'",
                f"tenants.a.destinations[1].id: {RULE_ID} '{'a' * 57}...'",
                "tenants.a: the id '' is used twice",
            ],
        ),
        (
            "tenants: [{name: a, destinations: [7]}]",
            [
                "tenants.a.destinations[0].kind: expected one of gcs, s3, http, kaggle, huggingface, found null",
                "tenants.a.destinations[0]: expected a mapping, found number 7",
                f"tenants.a.destinations[0].id: {RULE_ID} ''",
            ],
        ),
        (
            "tenants: [{name: a, destinations: [{id: x, kind: gcs, bucket: b}], "
            "secrets: [{secret: k, to: x, field: f}, "
            "{secret: 'secret://bad name', to: X, field: ''}]}]",
            [
                f"tenants.a.secrets[0].secret: {SECRET} string 'k'",
                f"tenants.a.secrets[1].secret: {SECRET} string 'secret://bad name'",
                "tenants.a.secrets[1].to: expected the id of a destination or cluster, found string 'X'",
                "tenants.a.secrets[1].field: expected a non-empty string, found string ''",
                "tenants.a.secrets:  fills 'f' of x, but a gcs takes secrets only in: none",
                "tenants.a.secrets:  is bound to '', which no rule has",
            ],
        ),
        (
            "tenants: [{name: a, limits: {objects: 0, timeout: 0, tests: 9223372036854775808, code_files: true, "
            "repeats: x}}]",
            [
                f"tenants.a.limits.objects: {SIZE} number 0",
                "tenants.a.limits.timeout: expected a duration like 90s or 10m, found number 0",
                f"tenants.a.limits.tests: {SIZE} number 9223372036854775808",
                f"tenants.a.limits.code_files: {SIZE} boolean true",
                f"tenants.a.limits.repeats: {SIZE} string 'x'",
            ],
        ),
        ("tenants: [{name: a, limits: 5}]", ["tenants.a.limits: expected a mapping, found number 5"]),
        ("pipelines: {task_timeout: 0}", ["pipelines.task_timeout: expected a duration like 2h, found number 0"]),
        ("pipelines: {task_timeout: x}", ["pipelines.task_timeout: expected a duration like 2h, found string 'x'"]),
        (
            "pipelines: {cpu: 2x, memory: [1]}",
            [
                f"pipelines.cpu: {QUANTITY} 2 or 500m, found string '2x'",
                f"pipelines.memory: {QUANTITY} 4G or 512Mi, found a list of 1",
            ],
        ),
        ("pipelines: {memory: 4g}", [f"pipelines.memory: {QUANTITY} 4G or 512Mi, found string '4g'"]),
        ("pipelines: 3", ["pipelines: expected a mapping, found number 3"]),
        ("protect: gs://x", ["protect: expected a list, found string 'gs://x'"]),
        ("protect: [gs://x/, 'https://x']", [f"protect[1]: {LOCATION} 'https://x'"]),
    ],
)
def test_each_field_names_what_it_expected_and_what_it_found(text: str, problems: list[str]):
    assert refused(text) == problems


@pytest.mark.parametrize(
    ("text", "read"),
    [
        ("version: 1", lambda p: p.tenants == () and p.resources == Resources()),
        ("project: abcdef", lambda p: p.project == "abcdef"),  # 6: the shortest project id
        ("project: a" + "b" * 28 + "c", lambda p: len(p.project) == 30),  # 30: the longest
        ("tenants: [{name: " + "a" * 20 + "}]", lambda p: p.tenants[0].name == "a" * 20),
        ("tenants: [{name: a1}]", lambda p: p.tenants[0].pipelines is None and p.tenants[0].limits == Limits()),
        ("tenants: [{name: a, pipelines: []}]", lambda p: p.tenants[0].pipelines == ()),
        ("tenants: [{name: a, limits: {timeout: 2.5}}]", lambda p: p.tenants[0].limits.timeout == 2.5),
        ("pipelines: {task_timeout: 1}", lambda p: p.resources.task_timeout == 1.0),
        (
            "tenants: [{name: a, triggers: [gs://t00/INBOX/]}, {name: b, triggers: [gs://t00/INBO/]}]",
            lambda p: [t.triggers for t in p.tenants] == [("gs://t00/INBOX/",), ("gs://t00/INBO/",)],
        ),
        (
            "tenants: [{name: a, limits: {timeout: 90, bytes: 10 GiB, objects: 2.5KB, tests: 4611686018427387904}}]",
            lambda p: p.tenants[0].limits == Limits(timeout=90.0, bytes=10 * 2**30, objects=2500, tests=2**62),
        ),
        (
            "tenants: [{name: a, limits: {timeout: 1d, bytes: 1tb, code_bytes: 1.5KiB, code_files: 7}}]",
            lambda p: p.tenants[0].limits == Limits(timeout=86400.0, bytes=10**12, code_bytes=1536, code_files=7),
        ),
        (
            "tenants: [{name: a, limits: {bytes: 3mb, code_bytes: 2MiB, objects: 1 gb, repeats: 2B}}]",
            lambda p: p.tenants[0].limits == Limits(bytes=3 * 10**6, code_bytes=2**21, objects=10**9, repeats=2),
        ),
        (
            "tenants: [{name: a, limits: {bytes: 1TiB, code_bytes: 1gib, objects: 1kib}}]",
            lambda p: p.tenants[0].limits == Limits(bytes=2**40, code_bytes=2**30, objects=1024),
        ),
        (
            "pipelines: {task_timeout: 90m, cpu: 500m, memory: 512Mi}",
            lambda p: p.resources == Resources(task_timeout=5400.0, cpu="500m", memory="512Mi"),
        ),
        (
            "pipelines: {task_timeout: 60, cpu: 2.5, memory: 4}",
            lambda p: p.resources == Resources(task_timeout=60.0, cpu="2.5", memory="4"),
        ),
        (
            "tenants: [{name: a, clusters: [{kind: local, network: true, require_sandbox: false, root: 'file:///srv/'}]}]",
            lambda p: (
                p.tenants[0].clusters
                == (Rule("local", "local", root="file:///srv/", network=True, require_sandbox=False),)
            ),
        ),
        (
            "tenants: [{name: a, clusters: [{kind: local}]}]",
            lambda p: p.tenants[0].clusters == (Rule("local", "local", network=False, require_sandbox=True),),
        ),
        (
            "tenants: [{name: a, destinations: [{kind: s3, endpoint: 'https://s3.example', bucket: b, prefix: p/}]}]",
            lambda p: (
                p.tenants[0].rule("s3") == Rule("s3", "s3", bucket="b", prefix="p/", endpoint="https://s3.example")
            ),
        ),
        (
            "tenants: [{name: a, clusters: [{id: k, kind: kfp, host: 'http://127.0.0.1:8888', data_uri: 'gs://d/'}]}]",
            lambda p: p.tenants[0].rule("k") == Rule("k", "kfp", host="http://127.0.0.1:8888", data_uri="gs://d/"),
        ),
        (
            "tenants: [{name: a, triggers: [gs://trig/a/], topics: [projects/proj-p/topics/aaa]}, {name: b, triggers: [gs://trig/a/b/]}]",
            lambda p: [t.name for t in p.tenants] == ["a", "b"],
        ),
    ],
)
def test_what_a_field_takes(text: str, read: Any):
    assert read(parse_policy(text, "p.yaml"))


def test_a_policy_of_exactly_one_mebibyte_is_read_one_byte_more_is_not():
    head = "version: 1\n#"
    exact = head + "x" * (MAX_POLICY_BYTES - len(head))
    assert parse_policy(exact, "p.yaml").source == "p.yaml"
    with pytest.raises(PolicyError) as caught:
        parse_policy(exact + "x", "p.yaml")
    assert str(caught.value) == (
        f"p.yaml: 1 problem(s) in the policy: expected at most {MAX_POLICY_BYTES} bytes, found {MAX_POLICY_BYTES + 1}"
    )
    assert MAX_POLICY_BYTES == 2**20


def test_a_document_too_deep_to_read_is_not_a_policy():
    with pytest.raises(PolicyError) as caught:
        parse_policy("[" * 100_000, "p.yaml")
    assert str(caught.value).startswith("p.yaml: 1 problem(s) in the policy: expected valid YAML, found: ")


def test_contradictions_between_tenants_and_with_relay_s_own_storage():
    text = """
project: lab-project
protect: [gs://relay-results/]
tenants:
  - name: a
    triggers: [gs://trig/a/]
    topics: [projects/lab-project/topics/aaa, projects/lab-project/topics/aaa]
    sources: [gs://relay-results/x/]
    code: [gs://relay-results]
    destinations: [{id: hf, kind: huggingface, namespace: lab}]
    clusters: [{id: k, kind: kfp, host: "https://kfp.example", data_uri: "gs://relay-results/d/"}]
    secrets:
      - {secret: "secret://projects/lab-project/secrets/t", to: hf, field: token}
      - {secret: "secret://projects/other/secrets/t", to: hf, field: token}
      - {secret: "secret://c", to: k, field: url}
    routes:
      - {id: r, bucket: relay-results, prefix: in/, pipeline: push}
      - {id: r, bucket: trig, prefix: a/x/, pipeline: push}
      - {id: s, bucket: trig, pipeline: push}
  - name: b
    topics: [projects/lab-project/topics/aaa]
  - name: a
"""
    assert refused(text) == [
        "tenants.b: projects/lab-project/topics/aaa is already the origin of tenant a",
        "tenants: the name 'a' is used twice",
        "tenants.a.secrets: secret://projects/other/secrets/t is not in the deployment's project lab-project",
        "tenants.a.secrets: secret://c fills 'url' of k, but a kfp takes secrets only in: token, ca_cert",
        "tenants.a: k would reach gs://relay-results/d/, inside Relay's own gs://relay-results/",
        "tenants.a: gs://relay-results/x/ lies inside Relay's own gs://relay-results/",
        "tenants.a: gs://relay-results lies inside Relay's own gs://relay-results/",
        "tenants.a.routes: the id 'r' is used twice",
        "tenants.a.routes.r: gs://relay-results/in/ lies inside Relay's own gs://relay-results/",
        "tenants.a.routes.r: gs://trig/a/x/ overlaps the trigger location gs://trig/a/ of tenant a",
        "tenants.a.routes.s: gs://trig/ overlaps the trigger location gs://trig/a/ of tenant a",
    ]


@pytest.mark.parametrize(
    ("route", "problems"),
    [
        (
            "{id: r, bucket: B, prefix: ../x, pipeline: Push, parameters: [1], glob: ''}",
            [
                f"tenants.a.routes[0].bucket: expected {BUCKET_RULE}, found string 'B'",
                f"tenants.a.routes[0].prefix: {PREFIX} string '../x'",
                "tenants.a.routes[0].parameters: expected a mapping of the pipeline's parameters, found a list of 1",
                "tenants.a.routes[0].glob: expected a glob such as *.csv, found string ''",
                "tenants.a.routes[0].pipeline: expected a pipeline name, found string 'Push'",
            ],
        ),
        (
            "{id: R, bucket: bkt, prefix: 5, pipeline: push}",
            [f"tenants.a.routes[0].prefix: {PREFIX} number 5", f"tenants.a.routes[0].id: {RULE_ID} 'R'"],
        ),
    ],
)
def test_a_route_names_what_is_wrong_with_it(route: str, problems: list[str]):
    assert refused(f"tenants: [{{name: a, routes: [{route}]}}]") == problems


def test_a_route_takes_every_object_under_its_prefix_by_default():
    routes = "[{id: r, bucket: bkt, prefix: in/, pipeline: push}, {id: s, bucket: bkt, pipeline: push}]"
    route, bare = parse_policy(f"tenants: [{{name: a, routes: {routes}}}]", "p").tenants[0].routes
    assert (route.bucket, route.prefix, route.glob, route.pipeline, dict(route.parameters)) == (
        "bkt",
        "in/",
        "*",
        "push",
        {},
    )
    assert bare.prefix == ""
    assert refused("tenants: [{name: a, routes: [{id: r, bucket: bkt, prefix: /in/, pipeline: push}]}]") == [
        "tenants.a.routes[0].prefix: expected an object name prefix without '..', '.' or empty segments, "
        "found string '/in/'"
    ]


def test_a_policy_is_read_from_the_store_or_its_absence_is_an_answer():
    store = MemoryBlobStore()
    assert read_policy(store, "gs://c/policy.yaml", required=False) is NO_POLICY
    with pytest.raises(PolicyError) as caught:
        read_policy(store, "gs://c/policy.yaml", required=True)
    assert (
        str(caught.value) == "gs://c/policy.yaml: 1 problem(s) in the policy: expected a policy file, found no object"
    )
    store.write("gs://c/policy.yaml", b"tenants: [{name: a}]")
    read = read_policy(store, "gs://c/policy.yaml", required=True)
    assert read.source == "gs://c/policy.yaml" and read.tenant("a") is not None and read.tenant("b") is None


def test_a_policy_error_lists_every_problem_after_where_it_was_read():
    with pytest.raises(PolicyError) as caught:
        parse_policy("version: 2\nextra: 1\n", "gs://c/policy.yaml")
    assert str(caught.value) == (
        "gs://c/policy.yaml: 2 problem(s) in the policy: "
        "(policy).extra: unknown key (expected one of version, project, protect, tenants, pipelines, notifications, "
        "direct_runs, caps, retries, max_chain); "
        "version: expected 1, found number 2"
    )


def test_a_secret_binding_names_what_is_wrong_with_it():
    secrets = "[5, {secret: 'secret://k', to: x, field: key, scope: all}]"
    text = f"tenants: [{{name: a, destinations: [{{id: x, kind: kaggle, owner: o}}], secrets: {secrets}}}]"
    assert refused(text) == [
        "tenants.a.secrets[0]: expected a mapping, found number 5",
        f"tenants.a.secrets[0].secret: {SECRET} null",
        "tenants.a.secrets[0].to: expected the id of a destination or cluster, found null",
        "tenants.a.secrets[0].field: expected a non-empty string, found null",
        "tenants.a.secrets[1].scope: unknown key (expected one of secret, to, field)",
        "tenants.a.secrets:  is bound to '', which no rule has",
    ]


def test_a_rule_s_urls_locations_and_names_are_each_checked_as_such():
    text = """
tenants:
  - name: a
    destinations:
      - {id: k, kind: kaggle, owner: 5, endpoint: "ftp://kaggle.example"}
    clusters:
      - {id: f, kind: kfp, host: "http://10.0.0.1", data_uri: "https://bench.example/"}
"""
    assert refused(text) == [
        "tenants.a.destinations[0].owner: expected a non-empty string, found number 5",
        f"tenants.a.destinations[0].endpoint: {URL} 'ftp://kaggle.example'",
        f"tenants.a.clusters[0].host: {PLAIN_HTTP} 'http://10.0.0.1'",
        f"tenants.a.clusters[0].data_uri: {LOCATION} 'https://bench.example/'",
    ]


def test_every_list_of_a_tenant_is_named_where_it_is_wrong():
    text = "tenants: [{name: a, destinations: x, clusters: x, secrets: x, routes: x, code: [http://x], colour: red}]"
    assert refused(text) == [
        "tenants[0].colour: unknown key (expected one of name, triggers, topics, pipelines, sources, destinations, "
        "secrets, clusters, code, limits, routes, caps, retries, max_chain)",
        "tenants.a.destinations: expected a list, found string 'x'",
        "tenants.a.clusters: expected a list, found string 'x'",
        "tenants.a.secrets: expected a list, found string 'x'",
        f"tenants.a.code[0]: {LOCATION} 'http://x'",
        "tenants.a.routes: expected a list, found string 'x'",
    ]


def test_limits_past_an_unknown_key_are_still_read_and_one_is_a_limit():
    assert refused("tenants: [{name: a, limits: {colour: 1, objects: -1}}]") == [
        "tenants.a.limits.colour: unknown key (expected one of objects, bytes, attempts, timeout, tests, repeats, "
        "code_bytes, code_files)",
        f"tenants.a.limits.objects: {SIZE} number -1",
    ]
    assert parse_policy("tenants: [{name: a, limits: {objects: 1}}]", "p").tenants[0].limits == Limits(objects=1)
    # A count is whole: a fractional one is cut down, never rounded up past what the operator wrote.
    assert parse_policy("tenants: [{name: a, limits: {objects: 2.5}}]", "p").tenants[0].limits == Limits(objects=2)


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        ("direct_runs: {tenant: imaging}", [f"direct_runs.tenant: {DIRECT} string 'imaging'"]),
        ("direct_runs: {}", [f"direct_runs.tenant: {DIRECT} null"]),
        ("direct_runs: assay", ["direct_runs: expected a mapping, found string 'assay'"]),
        ("direct_runs: {tenant: assay, as: root}", ["direct_runs.as: unknown key (expected one of tenant)"]),
    ],
)  # fmt: skip
def test_direct_runs_name_one_tenant_of_the_policy(text: str, problems: list[str]):
    assert refused(f"tenants: [{{name: assay}}]\n{text}\n") == problems


def test_without_direct_runs_a_direct_run_acts_as_no_tenant():
    assert parse_policy("tenants: [{name: assay}]\n", "p.yaml").direct_tenant == ""
    assert parse_policy("tenants: [{name: assay}]\ndirect_runs: {tenant: assay}\n", "p.yaml").direct_tenant == "assay"


def test_the_readmes_policy_example_is_a_valid_policy():
    page = (Path(__file__).resolve().parents[2] / "docs" / "policy.md").read_text()
    example = page.split("# Writing a policy", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    policy = parse_policy(example, "docs/policy.md")
    assert [tenant.name for tenant in policy.tenants] == ["assay"]
    assert policy.direct_tenant == "assay"
    assert [(wired.topic, wired.buckets) for wired in policy.notifications] == [
        ("projects/my-project/topics/assay-triggers", ("lab-data",))
    ]


@pytest.mark.parametrize(
    ("trigger", "expected"),
    [
        ("gs://trig/../x/", "a gs://bucket/prefix, s3://bucket/prefix or file:///folder location"),
        ("s3://trig/in/", "a gs://bucket/prefix the trigger files land under"),
        ("gs://t/in/", f"a gs://bucket/prefix with {BUCKET_RULE}"),
    ],
)
def test_a_trigger_prefix_two_tenants_both_get_wrong_is_one_problem_each_and_no_shared_origin(
    trigger: str, expected: str
):
    # A refused prefix takes no place in the policy: it cannot make the two tenants share an origin as well.
    assert refused(f"tenants: [{{name: a, triggers: ['{trigger}']}}, {{name: b, triggers: ['{trigger}']}}]") == [
        f"tenants.a.triggers[0]: expected {expected}, found string '{trigger}'",
        f"tenants.b.triggers[0]: expected {expected}, found string '{trigger}'",
    ]


@pytest.mark.parametrize(
    ("bucket", "found"),
    [("5", "number 5"), ("''", "string ''"), ("[b00]", "a list of 1"), ("B00", "string 'B00'")],
)
def test_a_route_s_bucket_that_is_no_bucket_name_is_one_problem_naming_the_rule(bucket: str, found: str):
    text = f"""
tenants:
  - name: a
    topics: [projects/proj-p/topics/a-triggers]
    destinations: [{{id: g, kind: gcs, bucket: out}}]
    routes: [{{id: r, bucket: {bucket}, prefix: in/, pipeline: push, parameters: {{destination: {{kind: gcs}}}}}}]
    sources: [gs://b00/in/]
"""
    problems = refused(text)
    assert problems[0] == f"tenants.a.routes[0].bucket: expected {BUCKET_RULE}, found {found}"
    assert not any("XXXX" in problem or problem.startswith("None") for problem in problems), problems


@pytest.mark.parametrize(("tenants", "listed"), [("[{name: a}, {name: b}]", "a, b"), ("[]", "none")])
def test_direct_runs_for_no_tenant_of_the_policy_names_the_tenants_there_are(tenants: str, listed: str):
    assert refused(f"tenants: {tenants}\ndirect_runs: {{tenant: x}}") == [
        f"direct_runs.tenant: expected a tenant of the policy ({listed}), found string 'x'"
    ]


def test_a_route_whose_prefix_is_refused_is_checked_as_the_whole_bucket_for_the_rest():
    # The overlap with a trigger location is still told: the operator fixes both at once, not one after the other.
    text = """
tenants:
  - name: a
    triggers: [gs://b00/in/]
    destinations: [{id: g, kind: gcs, bucket: out}]
    routes: [{id: r, bucket: b00, prefix: ../x, pipeline: push, parameters: {destination: {kind: gcs}}}]
"""
    assert refused(text) == [
        f"tenants.a.routes[0].prefix: {PREFIX} string '../x'",
        "tenants.a.routes.r: gs://b00/ overlaps the trigger location gs://b00/in/ of tenant a",
    ]
