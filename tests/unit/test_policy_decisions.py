"""The policy's decisions, rule kind by rule kind: what passes, and the message for what does not."""

from __future__ import annotations

from typing import Any

import pytest

from relay.errors import PolicyDeniedError
from relay.policy import (
    NO_POLICY,
    Context,
    Rule,
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
    parse_policy,
    parse_seconds,
    parse_size,
    protected_by,
    refuse_notification,
    refuse_object,
    refuse_origin,
    refuse_topic,
    rule_location,
    same_origin,
    tenant_for_object,
    url_within,
    within,
)

TEXT = """
project: lab-project
protect: [gs://relay-results, "s3://vault"]
tenants:
  - name: lab
    triggers: [gs://trig/lab/]
    topics: [projects/lab-project/topics/lab]
    sources: [gs://data/lab/, "file:///srv/data/"]
    code: [gs://code/]
    destinations:
      - {id: g, kind: gcs, bucket: out, prefix: runs/}
      - {id: g2, kind: gcs, bucket: out2}
      - {id: s, kind: s3, endpoint: "https://s3.example:9000", bucket: drop, prefix: lab/}
      - {id: h, kind: http, url: "https://lims.example/api"}
      - {id: k, kind: kaggle, owner: lab, endpoint: "https://kaggle.example"}
      - {id: hf, kind: huggingface, namespace: lab}
      - {id: mail, kind: gcs, bucket: mail, prefix: /INBOX/}
    clusters:
      - {id: c, kind: http, url: "https://infer.example/"}
      - {id: kf, kind: kfp, host: "https://kfp.example", data_uri: "gs://bench/"}
      - {id: loc, kind: local, root: "file:///srv/algos/"}
    secrets:
      - {secret: "secret://h-url", to: h, field: url}
      - {secret: "secret://h-auth", to: h, field: headers.*}
      - {secret: "secret://k-key", to: k, field: key}
      - {secret: "secret://projects/lab-project/secrets/c-tok", to: c, field: token}
      - {secret: "secret://s-key", to: s, field: secret_access_key}
      - {secret: "secret://Infer_Key", to: c, field: api_key}
    limits: {attempts: 3, timeout: 60}
  - name: other
    triggers: [gs://trig/other/, gs://trig/lab/deep/]
"""
POLICY = parse_policy(TEXT, "gs://c/policy.yaml")
LAB = POLICY.tenant("lab")
CLOUD = Context(local=False, protected=("gs://catalog",))
DESTINATIONS = (
    "a destination tenants.lab.destinations allows: gcs bucket out, prefix runs/ (g); gcs bucket out2 (g2); "
    "s3 bucket drop, prefix lab/, endpoint https://s3.example:9000 (s); http url https://lims.example/api (h); "
    "kaggle endpoint https://kaggle.example, owner lab (k); huggingface namespace lab (hf); "
    "gcs bucket mail, prefix /INBOX/ (mail)"
)
CLUSTERS = (
    "a cluster tenants.lab.clusters allows: http url https://infer.example/ (c); "
    "kfp host https://kfp.example, data_uri gs://bench/ (kf); local root file:///srv/algos/ (loc)"
)


def push(destination: object, *sources: object) -> list[str]:
    parameters = {"sources": list(sources or ["gs://data/lab/x"]), "destination": destination}
    return [str(p) for p in check_request(POLICY, LAB, "push", parameters, CLOUD)]


def ratchet(destination: object = None, **parameters: Any) -> list[str]:
    parameters = {"workflow": "gs://code/w.json", **parameters}
    if destination is not None:
        parameters["destination"] = destination
    return [str(p) for p in check_request(POLICY, LAB, "ratchet", parameters, CLOUD)]


@pytest.mark.parametrize(
    "destination",
    [
        {"kind": "gcs", "bucket": "out", "prefix": "runs/a"},
        {"kind": "gcs", "bucket": "out", "prefix": "runs"},
        {"kind": "gcs", "bucket": "out", "prefix": "/runs/a/"},
        {"kind": "gcs", "bucket": "out2", "prefix": "anything/at/all"},
        {"kind": "s3", "endpoint": "https://s3.example:9000/", "bucket": "drop", "prefix": "lab/x",
         "secret_access_key": "secret://s-key"},
        {"kind": "http", "url": "secret://h-url"},
        {"kind": "http", "url": "https://lims.example/api/x", "exists_url": "https://lims.example/api/e",
         "headers": {"Authorization": "secret://h-auth"}},
        {"kind": "http", "url": "https://lims.example/api", "max_attempts": 3, "timeout": 60},
        {"kind": "http", "url": "https://lims.example/api", "max_attempts": True, "timeout": "60"},
        {"kind": "http", "url": "https://lims.example/api", "max_attempts": 1, "timeout": 0.5},
        {"kind": "gcs", "bucket": "mail", "prefix": "INBOX/2026"},  # the rule's prefix written with slashes
        {"kind": "kaggle", "dataset": "lab/x", "endpoint": "https://kaggle.example", "key": "secret://k-key"},
        {"kind": "huggingface", "repo": "lab/x"},
        {"kind": "huggingface", "repo": "lab/x", "endpoint": "https://huggingface.co:443"},
    ],
)  # fmt: skip
def test_what_a_destination_rule_allows(destination: dict[str, Any]):
    assert push(destination) == []


@pytest.mark.parametrize(
    ("destination", "found"),
    [
        ({"kind": "gcs", "bucket": "out", "prefix": "runs/../x"},
         "gcs with bucket 'out', prefix 'runs/../x' (g: prefix must lie under 'runs/'; g2: bucket must be out2; "
         "mail: bucket must be mail; prefix must lie under '/INBOX/')"),
        ({"kind": "gcs", "bucket": "out", "prefix": "runs/./x"}, "(g: prefix must lie under 'runs/'; g2:"),
        ({"kind": "gcs", "bucket": "out", "prefix": "runsx"}, "(g: prefix must lie under 'runs/'; g2:"),
        ({"kind": "gcs", "bucket": "other", "prefix": "x"},
         "gcs with bucket 'other', prefix 'x' (g: bucket must be out; prefix must lie under 'runs/'; "
         "g2: bucket must be out2; mail: bucket must be mail; "
         "prefix must lie under '/INBOX/')"),
        ({"kind": "gcs", "bucket": "relay-results", "prefix": "x"},
         "gcs with bucket 'relay-results', prefix 'x' (g: gs://relay-results/x is inside Relay's own storage; "
         "g2: gs://relay-results/x is inside Relay's own storage; "
         "mail: gs://relay-results/x is inside Relay's own storage)"),
        ({"kind": "gcs", "bucket": "out", "prefix": "X/runs/a"}, "(g: prefix must lie under 'runs/'; g2:"),
        ({"kind": "s3", "endpoint": "https://s3.example:9000", "bucket": "other", "prefix": "lab/x"},
         "(s: bucket must be drop)"),
        ({"kind": "s3", "endpoint": "https://s3.example:9000", "bucket": "drop", "prefix": "other"},
         "(s: prefix must lie under 'lab/')"),
        ({"kind": "s3", "endpoint": "https://s3.example:9000", "bucket": "vault", "prefix": "x"},
         "(s: s3://vault/x is inside Relay's own storage)"),
        ({"kind": "s3", "endpoint": "https://s3.example", "bucket": "drop", "prefix": "lab/x"},
         "s3 with bucket 'drop', prefix 'lab/x', endpoint 'https://s3.example' "
         "(s: endpoint must be https://s3.example:9000)"),
        ({"kind": "http", "url": "https://lims.example/apix"},
         "http with url 'https://lims.example/apix' (h: url must start with https://lims.example/api)"),
        ({"kind": "http", "url": "https://lims.example/api", "exists_url": "https://lims.example/other"},
         "(h: exists_url must start with https://lims.example/api)"),
        ({"kind": "http", "url": 7}, "http with url 7 (h: url must start with https://lims.example/api)"),
        ({"kind": "kaggle", "dataset": "lab/x", "endpoint": "https://api.kaggle.com"},
         "(k: endpoint must be https://kaggle.example)"),
        ({"kind": "kaggle", "dataset": "labx/y", "endpoint": "https://kaggle.example"},
         "(k: dataset must belong to lab)"),
        ({"kind": "huggingface", "repo": "lab/x", "endpoint": "https://hub.example"},
         "(hf: endpoint must be https://huggingface.co)"),
        ({"kind": "huggingface", "repo": "lab"}, "(hf: repo must belong to lab)"),
        ({"kind": "huggingface", "repo": "lab/"}, "(hf: repo must belong to lab)"),
        ({"kind": "huggingface", "repo": "lab/x/y"}, "(hf: repo must belong to lab)"),
        ({"kind": "kaggle", "dataset": "lab", "endpoint": "https://kaggle.example"}, "(k: dataset must belong to lab)"),
        # Without an endpoint the step talks to the public API, which a rule naming a mirror does not allow.
        ({"kind": "kaggle", "dataset": "lab/x"}, "(k: endpoint must be https://kaggle.example)"),
    ],
)  # fmt: skip
def test_why_a_destination_is_refused_rule_by_rule(destination: dict[str, Any], found: str):
    problems = push(destination)
    assert problems and problems[0].startswith(f"parameters.destination: expected {DESTINATIONS}, found "), problems
    assert found in problems[0], problems[0]


def test_a_secret_bound_elsewhere_does_not_satisfy_a_rule():
    # secret://k-key is bound to k's key, not to g's token: the rule still matches, the secret is refused.
    assert push({"kind": "gcs", "bucket": "out", "prefix": "runs/a", "token": "secret://k-key"}) == [
        "parameters.destination.token: expected a secret only where tenants.lab.secrets binds it, found secret://k-key"
    ]
    assert push({"kind": "http", "url": "https://lims.example/api", "headers": {"A": {"B": "secret://h-auth"}}}) == [
        "parameters.destination.headers.A.B: expected a secret only where tenants.lab.secrets binds it, "
        "found secret://h-auth"
    ]
    # A secret bound to headers.* goes in a header, not in an option whose name merely starts alike.
    for option in ("host_header", "headers_extra"):
        assert push({"kind": "http", "url": "https://lims.example/api", option: "secret://h-auth"}) == [
            f"parameters.destination.{option}: expected a secret only where tenants.lab.secrets binds it, "
            "found secret://h-auth"
        ]
    assert push({"kind": "http", "url": "secret://k-key"})[0].endswith(
        "found http (h: url must start with https://lims.example/api)"
    )


@pytest.mark.parametrize(
    ("option", "value", "problem"),
    [
        ("max_attempts", 0, "parameters.destination.max_attempts: expected a number in (0, 3] (limits), found 0"),
        ("max_attempts", 4, "parameters.destination.max_attempts: expected a number in (0, 3] (limits), found 4"),
        ("timeout", 60.5, "parameters.destination.timeout: expected a number in (0, 60] (limits), found 60.5"),
        ("timeout", -1, "parameters.destination.timeout: expected a number in (0, 60] (limits), found -1"),
    ],
)
def test_a_destination_asking_more_than_the_limits_is_refused(option: str, value: object, problem: str):
    assert push({"kind": "http", "url": "https://lims.example/api", option: value}) == [problem]


def test_the_default_limits_apply_without_a_tenant():
    parameters = {"destination": {"kind": "http", "url": "https://x.example/", "max_attempts": 6, "timeout": 600}}
    assert [str(p) for p in check_request(NO_POLICY, None, "push", parameters, CLOUD)] == [
        "parameters.destination: expected a destination tenants[].destinations of a policy (none is configured) "
        "allows: none, found http with url 'https://x.example/'",
        "parameters.destination.max_attempts: expected a number in (0, 5] (limits), found 6",
    ]


def test_sources_are_locations_of_the_tenant_or_nothing_at_all():
    destination = {"kind": "gcs", "bucket": "out2", "prefix": "x"}
    assert push(destination, 5, "gs://data/lab/a") == []  # the pipeline's type check reports the 5
    assert push(destination, "/srv/data/x") == [
        "parameters.sources[0]: expected a gs:// or s3:// source location (file:// only with the local backend), "
        "found 'file:///srv/data/x'"
    ]
    local = Context(local=True, protected=())
    assert check_request(POLICY, LAB, "push", {"sources": ["/srv/data/x"], "destination": destination}, local) == []
    not_a_list = {"sources": "gs://elsewhere/x", "destination": "gs://elsewhere/y"}
    assert check_request(POLICY, LAB, "push", not_a_list, CLOUD) == []  # the pipeline's type check reports these


def test_ratchet_code_comes_from_the_tenant_s_code_locations():
    assert ratchet() == []
    assert ratchet(workflow={"uri": "gs://code/w.json"}) == []
    assert ratchet(workflow={"uri": "gs://elsewhere/w.json"}) == [
        "parameters.workflow: expected a code location under tenants.lab.code (gs://code/), found 'gs://elsewhere/w.json'"
    ]
    assert ratchet(source="gs://elsewhere/a") == [
        "parameters.source: expected a code location under tenants.lab.code (gs://code/), found 'gs://elsewhere/a'"
    ]
    assert ratchet(source="") == []


@pytest.mark.parametrize(
    "destination",
    [
        {"kind": "local", "root": "/srv/algos/a"},
        {"root": "file:///srv/algos"},
        {"kind": "kfp", "host": "https://kfp.example:443", "data_uri": "gs://bench/x"},
        {"kind": "kfp", "host": "https://kfp.example", "ca_cert": "  -----BEGIN CERTIFICATE-----"},
        {"kind": "http", "url": "https://infer.example/", "api_key": "secret://projects/lab-project/secrets/Infer_Key"},
        {"kind": "http", "url": "https://infer.example/v1", "token": "secret://c-tok", "call_path": "/call",
         "load_path": "/load", "upload_path": "/up", "code_upload_path": "/code"},
    ],
)  # fmt: skip
def test_what_a_cluster_rule_allows(destination: dict[str, Any]):
    assert ratchet(destination) == []


@pytest.mark.parametrize(
    ("destination", "found"),
    [
        ({"root": "/srv/other"}, "local with root '/srv/other' (loc: root must lie under file:///srv/algos/)"),
        ({"kind": "kfp", "host": "https://kfp.example", "data_uri": "gs://benchx/"},
         "(kf: data_uri must lie under gs://bench/)"),
        ({"kind": "kfp", "host": "http://kfp.example"}, "(kf: host must be https://kfp.example)"),
        ({"kind": "kfp", "host": "https://kfp.example", "ca_cert": "/etc/ssl/ca.pem"},
         "(kf: ca_cert must be PEM text, not a path)"),
        ({"kind": "http", "url": "https://infer.example/", "call_path": "rel", "load_path": "/a/../b",
          "upload_path": "//evil.example/x", "code_upload_path": "/a://b"},
         "(c: call_path must be a path starting with / and without '..'; load_path must be a path starting with / "
         "and without '..'; upload_path must be a path starting with / and without '..'; code_upload_path must be "
         "a path starting with / and without '..')"),
        ({"kind": "http", "url": "https://infer.example/", "ca_cert": "x"}, "(c: ca_cert must be PEM text"),
        ({"kind": "spark"}, "found spark"),
    ],
)  # fmt: skip
def test_why_a_cluster_is_refused_rule_by_rule(destination: dict[str, Any], found: str):
    problems = ratchet(destination)
    assert problems and problems[0].startswith(f"parameters.destination: expected {CLUSTERS}, found "), problems
    assert found in problems[0], problems[0]


def test_a_cluster_rule_without_a_location_refuses_any_location():
    clusters = "[{kind: local}, {kind: kfp, host: 'https://k.example'}]"
    policy = parse_policy(f"tenants: [{{name: a, code: [gs://c/], clusters: {clusters}}}]", "p")
    tenant = policy.tenant("a")
    for destination, why in (
        ({"root": "/srv"}, "local: root must lie under (no root in the rule)"),
        ({"kind": "kfp", "host": "https://k.example", "data_uri": "gs://d/"}, "kfp: data_uri must lie under (no "),
    ):
        parameters = {"workflow": "gs://c/w.json", "destination": destination}
        [problem] = [str(p) for p in check_request(policy, tenant, "ratchet", parameters, CLOUD)]
        assert f"({why}" in problem and problem.endswith(" in the rule))"), problem


def test_a_bound_secret_travels_only_inside_the_project():
    elsewhere = {"kind": "http", "url": "https://infer.example/", "token": "secret://projects/elsewhere/secrets/c-tok"}
    assert ratchet(elsewhere) == [
        "parameters.destination.token: expected a secret in the project 'lab-project', "
        "found secret://projects/elsewhere/secrets/c-tok"
    ]
    token = "secret://projects/lab-project/secrets/c-tok/versions/4"
    pinned = {"kind": "http", "url": "https://infer.example/", "token": token}
    assert ratchet(pinned) == []
    parameters = {"workflow": "gs://code/w.json", "destination": pinned}
    assert bound_references(POLICY, LAB, "ratchet", parameters, CLOUD) == {"parameters.destination.token": token}
    kaggle = {"kind": "kaggle", "dataset": "lab/x", "endpoint": "https://kaggle.example", "key": "secret://k-key"}
    assert bound_references(POLICY, LAB, "push", {"destination": kaggle}, CLOUD) == {
        "parameters.destination.key": "secret://k-key"
    }
    assert bound_references(POLICY, LAB, "echo", {"key": "secret://k-key"}, CLOUD) == {}


def test_the_rule_a_struct_matches():
    assert matching_rule(POLICY, LAB, {"kind": "gcs", "bucket": "out2", "prefix": "a"}, CLOUD, cluster=False) == (
        LAB.rule("g2")
    )
    assert matching_rule(POLICY, LAB, {}, CLOUD, cluster=True) == LAB.rule("loc")
    assert matching_rule(POLICY, LAB, {}, CLOUD, cluster=False) is None


def test_a_trigger_s_own_run_key_must_fit_in_its_tenant_s_namespace():
    assert check_trigger(POLICY, LAB, "echo", {}, "k" * 122, CLOUD) == []  # lab-- and 122: 127 in all
    [problem] = check_trigger(POLICY, LAB, "echo", {}, "k" * 123, CLOUD)
    assert str(problem) == "run_key: expected at most 122 characters in this tenant, found 123"
    assert check_trigger(POLICY, None, "echo", {}, "k" * 127, CLOUD) == []
    assert [str(p) for p in check_trigger(POLICY, None, "echo", {}, "k" * 128, CLOUD)] == [
        "run_key: expected at most 127 characters in this tenant, found 128"
    ]
    assert check_trigger(POLICY, LAB, "echo", {}, None, CLOUD) == []


def test_a_trigger_from_no_tenant_s_origin_is_refused_only_under_a_policy():
    refusal = refuse_origin(POLICY, None, "gs://x/t.json")
    assert refusal is not None and refusal.code == "policy_denied" and refusal.uri == "gs://x/t.json"
    assert [str(p) for p in refusal.problems] == [
        "(origin): expected a trigger location or topic of a tenant (gs://trig/lab/, projects/lab-project/topics/lab, "
        "gs://trig/other/, gs://trig/lab/deep/), found gs://x/t.json"
    ]
    assert refuse_origin(POLICY, LAB, "gs://x/t.json") is None
    assert refuse_origin(NO_POLICY, None, "gs://x/t.json") is None
    assert origins(parse_policy("version: 1", "p")) == "none (no tenant is configured)"
    assert tenant_for_object(POLICY, "gs://trig/lab/deep/t.json").name == "other"  # the longest prefix


def test_relay_s_own_locations_are_compared_as_uris(tmp_path: Any):
    assert own_locations("gs://r", "", str(tmp_path), "s3://b", "file:///x") == (
        "gs://r",
        tmp_path.resolve().as_uri(),
        "s3://b",
        "file:///x",
    )


@pytest.mark.parametrize(
    ("uri", "protected", "inside"),
    [
        ("gs://b/a/x", "gs://b/other/", "gs://b/other/"),  # a whole bucket, whatever the prefix
        ("gs://bb/x", "gs://b", None),
        ("s3://b/x", "s3://b/y/", "s3://b/y/"),
        ("/srv/x/y", "file:///srv/x", "file:///srv/x"),
        ("file:///srv/x/y", "/srv/x", "/srv/x"),
        ("file:///srv/xy", "/srv/x", None),
        ("gs://b/x", "", None),
    ],
)
def test_what_relay_s_own_storage_covers(uri: str, protected: str, inside: str | None):
    assert protected_by(uri, (protected,)) == inside


@pytest.mark.parametrize(
    ("url", "prefix", "inside"),
    [
        ("https://h.example/api", "https://h.example/api", True),
        ("https://h.example/api/x", "https://h.example/api", True),
        ("https://h.example/apix", "https://h.example/api", False),
        ("https://h.example", "https://h.example/", True),
        ("https://h.example/x", "https://h.example", True),
        ("https://h.example/a\\b", "https://h.example/", False),
        ("https://h.example/a/./b", "https://h.example/", False),
        ("https://:p@h.example/", "https://h.example/", False),
        ("https://h.example/%2E%2E/", "https://h.example/", False),
        ("https://h.example/INBOX", "https://h.example/INBOX/", True),
        ("https://h.example/INBO", "https://h.example/INBOX/", False),
    ],
)
def test_a_url_lies_under_a_prefix_path_segment_by_segment(url: str, prefix: str, inside: bool):
    assert url_within(url, prefix) is inside


@pytest.mark.parametrize(
    ("url", "other", "same"),
    [
        ("http://h.example", "http://h.example:80", True),
        ("https://h.example", "https://h.example:443", True),
        ("https://h.example", "https://h.example:80", False),
        ("http://h.example", "https://h.example", False),
        ("https://", "https://", False),
        ("https://h.example:99999", "https://h.example", False),
        ("https://H.example", "https://h.example", True),
    ],
)
def test_an_origin_is_scheme_host_and_port(url: str, other: str, same: bool):
    assert same_origin(url, other) is same


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (1000, 1000.0),
        (2.5, 2.5),
        ("5", 5.0),
        ("5 b", 5.0),
        (" 64 MiB ", 64 * 2**20),
        ("1.5GB", 1.5e9),
        ("2 kb", 2e3),
        ("2 KiB", 2048.0),
        ("3mb", 3e6),
        ("1TB", 1e12),
        ("1tib", 2.0**40),
        ("10GiB", 10.0 * 2**30),
        ("x", None),
        ("-1", None),
        ("1 PB", None),
        ("1e3", None),
        (True, None),
        (None, None),
    ],
)
def test_a_size_is_a_number_of_bytes_with_an_optional_unit(value: object, size: float | None):
    assert parse_size(value) == size


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(90, 90.0), (1.5, 1.5), ("90s", 90.0), ("10m", 600.0), ("2h", 7200.0), ("1d", 86400.0), ("x", None), (True, None)],
)
def test_a_duration_is_seconds_or_the_settings_syntax(value: object, seconds: float | None):
    assert parse_seconds(value) == seconds


@pytest.mark.parametrize(
    ("rule", "location", "described"),
    [
        (Rule("g", "gcs", bucket="b", prefix="p/"), "gs://b/p/", "gcs bucket b, prefix p/ (g)"),
        (Rule("g", "gcs", bucket="b"), "gs://b/", "gcs bucket b (g)"),
        (Rule("k", "kfp", host="https://k", data_uri="gs://d/"), "gs://d/", "kfp host https://k, data_uri gs://d/ (k)"),
        (Rule("l", "local", root="file:///r/"), "file:///r/", "local root file:///r/ (l)"),
        (Rule("l", "local"), "", "local (l)"),
        (Rule("h", "http", url="https://u/"), "", "http url https://u/ (h)"),
    ],
)
def test_a_rule_as_messages_show_it(rule: Rule, location: str, described: str):
    assert (rule_location(rule), describe_rule(rule)) == (location, described)


def test_a_target_as_messages_show_it_names_where_never_who():
    assert describe_target({"kind": "http", "url": "secret://x", "headers": {"a": "b"}}) == "http"
    assert describe_target({}) == "local"
    assert describe_target({"bucket": "b", "prefix": "p", "token": "t"}) == "local with bucket 'b', prefix 'p'"
    every = {k: k for k in ("bucket", "prefix", "endpoint", "url", "dataset", "repo", "host", "data_uri", "root")}
    assert describe_target({"kind": "x", **every}) == "x with " + ", ".join(f"{k} {k!r}" for k in every)


def test_a_location_is_checked_as_a_source_or_as_code():
    assert [str(p) for p in check_location(POLICY, LAB, "gs://elsewhere/x", CLOUD, "sources[0]", key="sources")] == [
        "sources[0]: expected a source location under tenants.lab.sources (gs://data/lab/, file:///srv/data/), "
        "found 'gs://elsewhere/x'"
    ]
    assert [str(p) for p in check_location(POLICY, LAB, "gs://elsewhere/x", CLOUD, "workflow", key="code")] == [
        "workflow: expected a code location under tenants.lab.code (gs://code/), found 'gs://elsewhere/x'"
    ]
    assert check_location(POLICY, LAB, "gs://code/w.json", CLOUD, "workflow", key="code") == []
    other = POLICY.tenant("other")
    assert [str(p) for p in check_location(POLICY, other, "gs://data/lab/x", CLOUD, "s", key="sources")] == [
        "s: expected a source location under tenants.other.sources (none), found 'gs://data/lab/x'"
    ]
    assert [str(p) for p in check_location(POLICY, LAB, "gs://data/lab//x", CLOUD, "s", key="sources")] == [
        "s: expected a source location without '..', '.' or empty path segments, found 'gs://data/lab//x'"
    ]
    assert [str(p) for p in check_location(POLICY, LAB, "gs://relay-results/x", CLOUD, "w", key="code")] == [
        "w: expected a code location outside Relay's own storage, found 'gs://relay-results/x'"
    ]


def test_without_a_tenant_the_message_says_whether_a_policy_is_configured():
    assert [str(p) for p in check_request(POLICY, None, "push", {"sources": ["gs://x/"]}, CLOUD)] == [
        "parameters.sources[0]: expected a source location under tenants[].sources of a tenant (none), found 'gs://x/'"
    ]
    assert [str(p) for p in check_request(NO_POLICY, None, "push", {"sources": ["gs://x/"]}, CLOUD)] == [
        "parameters.sources[0]: expected a source location under tenants[].sources of a policy (none is configured) "
        "(none), found 'gs://x/'"
    ]


def test_a_workflow_of_the_wrong_shape_is_left_to_the_pipeline_s_type_check():
    assert ratchet(workflow=["uri"]) == []
    assert ratchet(workflow={"uri": "gs://elsewhere/w.json", "tests": []}) == []  # an inline workflow, not a location


@pytest.mark.parametrize(
    "source",
    [
        "gs:///x",
        "gs://data/lab/a\\b",
        "gs://data/lab/a\nb",
        "http://data/lab/x",
        "gs://data/lab//x",
        "gs://data/lab/x//",
    ],
)
def test_a_source_that_is_no_well_formed_location_is_refused_as_such(source: str):
    assert push({"kind": "gcs", "bucket": "out2", "prefix": "x"}, source) == [
        f"parameters.sources[0]: expected a source location without '..', '.' or empty path segments, found {source!r}"
    ]


def test_a_tenant_listing_no_pipeline_may_run_none():
    policy = parse_policy("tenants: [{name: a, pipelines: []}]", "p")
    assert [str(p) for p in check_request(policy, policy.tenant("a"), "echo", {}, CLOUD)] == [
        "pipeline: expected a pipeline tenants.a.pipelines lists (none), found 'echo'"
    ]


def test_an_unset_location_of_relay_s_own_protects_nothing_and_hides_nothing():
    context = Context(local=False, protected=("", "gs://relay-catalog"))
    [problem] = check_location(POLICY, LAB, "gs://relay-catalog/x", context, "w", key="code")
    assert str(problem) == "w: expected a code location outside Relay's own storage, found 'gs://relay-catalog/x'"
    assert check_location(POLICY, LAB, "gs://code/x", context, "w", key="code") == []


@pytest.mark.parametrize(
    ("uri", "prefix", "inside"),
    [
        ("gs://b/INBOX/a", "gs://b/INBOX/", True),
        ("gs://b/INBOX", "gs://b/INBOX/", True),
        ("gs://b/INBO/a", "gs://b/INBOX/", False),
        ("file:///etc/x", "file:///", True),
        ("file:/etc/x", "file:///", False),
    ],
)
def test_within_a_folder_or_a_whole_scheme(uri: str, prefix: str, inside: bool):
    assert within(uri, prefix) is inside


KAGGLE_RULE = '{id: k, kind: kaggle, owner: lab, endpoint: "https://kaggle.example"}'
HUB_RULE = "{id: hf, kind: huggingface, namespace: lab}"


@pytest.mark.parametrize(("rule", "mirror", "target", "public"), [
    (KAGGLE_RULE, KAGGLE_RULE.replace("kaggle.example", "mirror.example"), {"kind": "kaggle", "dataset": "lab/x"},
     "https://api.kaggle.com"),
    (HUB_RULE, HUB_RULE.replace("}", ', endpoint: "https://mirror.example"}'), {"kind": "huggingface", "repo": "lab/x"},
     "https://huggingface.co"),
])  # fmt: skip
def test_a_rule_naming_a_mirror_never_allows_the_public_endpoint(
    rule: str, mirror: str, target: dict[str, str], public: str
):
    # A destination that leaves its endpoint out goes to the public service (the step's default), not the mirror.
    assert rule in TEXT
    policy = parse_policy(TEXT.replace(rule, mirror), "gs://c/policy.yaml")
    tenant = policy.tenant("lab")
    for destination in (target, {**target, "endpoint": public}):
        parameters = {"sources": ["gs://data/lab/x"], "destination": destination}
        [problem] = [str(p) for p in check_request(policy, tenant, "push", parameters, CLOUD)]
        assert "endpoint must be https://mirror.example)" in problem, problem
    allowed = {"sources": ["gs://data/lab/x"], "destination": {**target, "endpoint": "https://mirror.example"}}
    assert check_request(policy, tenant, "push", allowed, CLOUD) == []


def refusal(error: object) -> tuple[str, list[str]]:
    assert isinstance(error, PolicyDeniedError)
    return error.uri, [str(problem) for problem in error.problems]


def test_a_message_on_a_topic_no_tenant_owns_is_refused_naming_every_tenant_topic():
    uri = "gs://trig/lab/t.json"
    assert refusal(refuse_topic(POLICY, None, "projects/lab-project/topics/x", uri)) == (
        uri,
        [
            "(origin): expected a topic of a tenant (projects/lab-project/topics/lab), "
            "found projects/lab-project/topics/x"
        ],
    )
    no_topics = parse_policy("tenants: [{name: lab, triggers: [gs://trig/lab/]}]", "p.yaml")
    assert refusal(refuse_topic(no_topics, None, "", uri)) == (
        uri,
        ["(origin): expected a topic of a tenant (none), found no topic"],
    )
    assert refuse_topic(POLICY, LAB, "projects/lab-project/topics/lab", uri) is None
    assert refuse_topic(NO_POLICY, None, "projects/lab-project/topics/x", uri) is None


def test_a_notification_of_a_bucket_not_wired_to_its_topic_is_refused_naming_the_wired_ones():
    topic, uri = "projects/lab-project/topics/lab", "gs://scans/a.csv"
    assert refusal(refuse_notification(POLICY, topic, "scans", uri)) == (
        uri,
        [
            "(origin): expected a notification of a bucket that notifications wires to this topic (none), "
            f"found a notification of scans on {topic}"
        ],
    )
    wired = parse_policy(
        f"tenants: [{{name: lab, topics: [{topic}]}}]\nnotifications: [{{topic: {topic}, buckets: [scans, plates]}}]",
        "p.yaml",
    )
    assert refusal(refuse_notification(wired, topic, "other", uri))[1] == [
        "(origin): expected a notification of a bucket that notifications wires to this topic (scans, plates), "
        f"found a notification of other on {topic}"
    ]
    assert refuse_notification(wired, topic, "plates", uri) is None
    assert refuse_notification(NO_POLICY, topic, "other", uri) is None


def test_an_object_outside_the_topic_s_tenant_s_triggers_is_refused_naming_them():
    uri = "gs://trig/elsewhere/t.json"
    other = POLICY.tenant("other")
    assert refusal(refuse_object(POLICY, other, uri)) == (
        uri,
        [
            "(origin): expected an object under tenants.other.triggers (gs://trig/other/, gs://trig/lab/deep/), "
            f"found {uri}"
        ],
    )
    bare = parse_policy("tenants: [{name: lab, topics: [projects/lab-project/topics/lab]}]", "p.yaml")
    assert refusal(refuse_object(bare, bare.tenant("lab"), uri))[1] == [
        f"(origin): expected an object under tenants.lab.triggers (none), found {uri}"
    ]
    # No tenant: refuse_topic has refused the message already; under its own triggers, or without a policy: allowed.
    assert refuse_object(POLICY, None, uri) is None
    assert refuse_object(POLICY, LAB, "gs://trig/lab/t.json") is None
    assert refuse_object(NO_POLICY, LAB, uri) is None


def test_a_secret_bound_by_several_tenants_names_each_of_them_once():
    text = """
project: lab-project
tenants:
  - name: lab
    destinations: [{id: h, kind: http, url: "https://lims.example/api"}]
    secrets:
      - {secret: "secret://hf-token", to: h, field: url}
      - {secret: "secret://projects/lab-project/secrets/hf-token", to: h, field: headers.*}
  - name: other
    destinations: [{id: h, kind: http, url: "https://lims.example/api"}]
    secrets: [{secret: "secret://hf-token", to: h, field: url}]
"""
    assert bound_secrets(parse_policy(text, "p.yaml")) == {"hf-token": ("lab", "other")}
