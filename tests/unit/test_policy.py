"""The deployment policy: strict parsing with every problem at once, and the decisions, table by table."""

from __future__ import annotations

from typing import Any

import pytest

from relay.policy import (
    NO_POLICY,
    Context,
    Limits,
    PolicyError,
    Resources,
    check_location,
    check_request,
    parse_policy,
    scoped_run_key,
    tenant_for_object,
    tenant_for_topic,
    url_within,
    within,
)

LAB = """
version: 1
project: lab-project
protect: [gs://relay-results]
tenants:
  - name: assay
    triggers: [gs://relay-triggers/assay/]
    topics: [projects/lab-project/topics/assay]
    pipelines: [push, ratchet, echo]
    sources: [gs://lab-data/assay/, s3://raw/assay/]
    destinations:
      - {id: ml, kind: gcs, bucket: ml-data, prefix: incoming/}
      - {id: minio, kind: s3, endpoint: "https://minio.lab.example:9000", bucket: drop, prefix: lab/}
      - {id: lims, kind: http, url: "https://lims.lab.example/api/"}
      - {id: kaggle-lab, kind: kaggle, owner: lab}
      - {id: hf-lab, kind: huggingface, namespace: lab}
    secrets:
      - {secret: "secret://kaggle-key", to: kaggle-lab, field: key}
      - {secret: "secret://kaggle-user", to: kaggle-lab, field: username}
      - {secret: "secret://hf-token", to: hf-lab, field: token}
      - {secret: "secret://lims-token", to: lims, field: headers.Authorization}
      - {secret: "secret://projects/lab-project/secrets/minio-key", to: minio, field: secret_access_key}
      - {secret: "secret://infer-token", to: infer, field: token}
    clusters:
      - {id: infer, kind: http, url: "https://infer.lab.example/"}
      - {id: kfp-new, kind: kfp, host: "https://kfp.lab.example", data_uri: gs://lab-bench-data/}
    code: [gs://lab-bench/]
    limits: {objects: 100, bytes: 1GiB, attempts: 3, timeout: 2m, tests: 5, repeats: 4}
  - name: imaging
    triggers: [gs://relay-triggers/imaging/, gs://relay-triggers/assay/imaging/]
    clusters: [{kind: local, network: false}]
    code: [gs://imaging-bench/]
pipelines: {task_timeout: 2h, cpu: "2", memory: 4G}
"""
POLICY = parse_policy(LAB, "policy.yaml")
ASSAY = POLICY.tenant("assay")
CLOUD = Context(local=False, protected=("gs://relay-catalog",))
KAGGLE = {"kind": "kaggle", "dataset": "lab/assay", "username": "secret://kaggle-user", "key": "secret://kaggle-key"}


def problems(parameters: dict[str, Any], pipeline: str = "push", tenant: str = "assay", **kw: Any) -> list[str]:
    context = kw.pop("context", CLOUD)
    return [str(p) for p in check_request(POLICY, POLICY.tenant(tenant), pipeline, parameters, context)]


def test_a_full_policy_reads_as_written():
    assert [t.name for t in POLICY.tenants] == ["assay", "imaging"]
    assert ASSAY is not None and ASSAY.limits == Limits(
        objects=100, bytes=2**30, attempts=3, timeout=120.0, tests=5, repeats=4
    )
    assert POLICY.resources == Resources(task_timeout=7200.0, cpu="2", memory="4G")
    assert POLICY.source == "policy.yaml" and POLICY.protect == ("gs://relay-results",)
    assert POLICY.tenant("imaging").clusters[0].require_sandbox is True  # on unless the operator turns it off


def test_every_problem_in_a_policy_is_reported_at_once():
    text = """
version: 2
tenants:
  - name: Bad-Name
    triggers: [https://example.com/]
    destinations:
      - {id: a, kind: ftp}
      - {id: b, kind: gcs}
      - {id: c, kind: http, url: "http://lims.example/"}
      - {id: d, kind: gcs, bucket: relay-results}
      - {id: d, kind: kaggle, owner: x, colour: red}
    secrets:
      - {secret: "secret://k", to: nowhere, field: key}
      - {secret: "secret://k2", to: d, field: url}
      - {secret: "secret://projects/other/secrets/k3", to: d, field: key}
    limits: {objects: -1, sizes: 3}
  - {name: two, triggers: ["gs://t00/x/"]}
  - {name: three, triggers: ["gs://t00/x"]}
protect: [gs://relay-results]
extra: true
"""
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "p.yaml")
    assert list(caught.value.problems) == [
        "(policy).extra: unknown key "
        "(expected one of version, project, protect, tenants, pipelines, notifications, direct_runs, caps, retries, "
        "max_chain)",
        "version: expected 1, found number 2",
        "tenants[0].name: expected a tenant name matching [a-z][a-z0-9]{0,19}, found string 'Bad-Name'",
        "tenants[0].triggers[0]: expected a gs://bucket/prefix, s3://bucket/prefix or file:///folder location, "
        "found string 'https://example.com/'",
        "tenants[0].destinations[0].kind: expected one of gcs, s3, http, kaggle, huggingface, found string 'ftp'",
        "tenants[0].destinations[1].bucket: expected a value for a gcs rule, found null",
        "tenants[0].destinations[2].url: expected https:// (plain http only to this machine: credentials travel "
        "over it), found string 'http://lims.example/'",
        "tenants[0].destinations[4].colour: unknown key (expected one of id, kind, owner, endpoint)",
        "tenants[0].limits.sizes: unknown key (expected one of objects, bytes, attempts, timeout, tests, repeats, "
        "code_bytes, code_files)",
        "tenants[0].limits.objects: expected a positive whole number (or 10GiB), found number -1",
        "tenants.three: gs://t00/x is already the origin of tenant two",
        "tenants[0]: the id 'd' is used twice",
        "tenants[0].secrets: secret://k is bound to 'nowhere', which no rule has",
        "tenants[0].secrets: secret://k2 fills 'url' of d, but a gcs takes secrets only in: none",
        "tenants[0].secrets: secret://projects/other/secrets/k3 fills 'key' of d, but a gcs takes secrets only in: "
        "none",
        "tenants[0].secrets: secret://projects/other/secrets/k3 is not in the deployment's project (none: set project)",
        "tenants[0]: d would reach gs://relay-results/, inside Relay's own gs://relay-results",
    ]
    assert str(caught.value).startswith("p.yaml: 17 problem(s) in the policy: (policy).extra: unknown key")


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("tenants: [", "expected valid YAML"),
        ("a: &x 1\nb: *x\n", "aliases"),
        ("tenants: []\ntenants: []\n", "duplicate key"),
        ("- 1\n", "(policy): expected a mapping"),
    ],
)
def test_documents_that_are_not_a_policy(text: str, fragment: str):
    with pytest.raises(PolicyError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        parse_policy(text, "p.yaml")


def test_the_tenant_is_where_the_trigger_was_written_longest_prefix_first():
    assert tenant_for_object(POLICY, "gs://relay-triggers/assay/a.json") is ASSAY
    assert tenant_for_object(POLICY, "gs://relay-triggers/assay/imaging/a.json").name == "imaging"
    assert tenant_for_object(POLICY, "gs://relay-triggers/assay-x/a.json") is None  # segment by segment
    assert tenant_for_object(POLICY, "gs://other/assay/a.json") is None
    assert tenant_for_topic(POLICY, "projects/lab-project/topics/assay") is ASSAY
    assert tenant_for_topic(POLICY, "projects/lab-project/topics/other") is None


def test_caller_run_keys_live_in_their_tenant_namespace():
    assert scoped_run_key(ASSAY, "nightly") == "assay--nightly"
    assert scoped_run_key(POLICY.tenant("imaging"), "nightly") != scoped_run_key(ASSAY, "nightly")
    assert scoped_run_key(None, "nightly") == "nightly"  # no policy: one operator, one namespace


def test_an_allowed_push_has_no_problem():
    assert problems({"sources": ["gs://lab-data/assay/2026/"], "destination": KAGGLE}) == []
    to_bucket = {"kind": "gcs", "bucket": "ml-data", "prefix": "incoming/run-1"}
    assert problems({"sources": ["s3://raw/assay/x.csv"], "destination": to_bucket}) == []


@pytest.mark.parametrize(
    "source, fragment",
    [
        ("gs://lab-data/", "a source location under tenants.assay.sources (gs://lab-data/assay/, s3://raw/assay/)"),
        ("gs://lab-data/assay-other/x", "under tenants.assay.sources"),
        ("gs://lab-data/assay/../secrets/x", "without '..'"),
        ("gs://relay-results/runs/x/result.json", "outside Relay's own storage, found"),
        ("gs://relay-catalog/push.yaml", "outside Relay's own storage, found"),
        ("file:///etc/passwd", "file:// only with the local backend"),
        ("/etc/passwd", "file:// only with the local backend"),
    ],
)
def test_sources_outside_the_tenant_are_refused(source: str, fragment: str):
    [problem] = problems({"sources": [source], "destination": KAGGLE})
    assert problem.startswith("parameters.sources[0]: expected") and fragment in problem, problem


@pytest.mark.parametrize(
    "destination, fragment",
    [
        ({"kind": "http", "url": "https://attacker.example/x"}, "url must start with https://lims.lab.example/api/"),
        ({"kind": "http", "url": "https://lims.lab.example/apix"}, "url must start with"),
        ({"kind": "http", "url": "https://lims.lab.example/api/../admin"}, "url must start with"),
        ({"kind": "http", "url": "https://u:p@lims.lab.example/api/"}, "url must start with"),
        ({"kind": "http", "url": "https://lims.lab.example/api/", "exists_url": "https://169.254.169.254/"},
         "exists_url must start with"),
        ({"kind": "gcs", "bucket": "relay-results", "prefix": "catalog/v1"}, "inside Relay's own"),
        ({"kind": "gcs", "bucket": "relay-catalog", "prefix": "v1"}, "found gcs with bucket 'relay-catalog'"),
        ({"kind": "gcs", "bucket": "ml-data", "prefix": "other"}, "prefix must lie under 'incoming/'"),
        ({"kind": "s3", "endpoint": "https://169.254.169.254", "bucket": "drop", "prefix": "lab/"}, "endpoint must be"),
        ({"kind": "kaggle", "dataset": "attacker/x"}, "dataset must belong to lab"),
        ({"kind": "kaggle", "dataset": "lab/x", "endpoint": "http://10.0.0.5"}, "endpoint must be https://api.kaggle"),
        ({"kind": "huggingface", "repo": "other/x"}, "repo must belong to lab"),
        ({"kind": "huggingface", "repo": "lab/x", "endpoint": "http://evil.example"}, "endpoint must be https://hug"),
        ({"kind": "ftp"}, "found ftp"),
    ],
)  # fmt: skip
def test_destinations_outside_the_tenant_are_refused(destination: dict[str, Any], fragment: str):
    found = problems({"sources": ["gs://lab-data/assay/"], "destination": destination})
    assert found and found[0].startswith("parameters.destination: expected a destination tenants.assay.destinations")
    assert fragment in found[0], found


def test_a_secret_travels_only_where_it_is_bound():
    stolen = {
        "kind": "http",
        "url": "https://lims.lab.example/api/",
        "headers": {"Authorization": "secret://lims-token", "X-A": "secret://hf-token"},
    }
    assert problems({"sources": ["gs://lab-data/assay/"], "destination": stolen}) == [
        "parameters.destination.headers.X-A: expected a secret only where tenants.assay.secrets binds it, "
        "found secret://hf-token"
    ]
    kaggle_with_hf = {**KAGGLE, "key": "secret://hf-token"}
    assert problems({"sources": ["gs://lab-data/assay/"], "destination": kaggle_with_hf}) == [
        "parameters.destination.key: expected a secret only where tenants.assay.secrets binds it, "
        "found secret://hf-token"
    ]
    in_a_source = problems({"sources": ["secret://kaggle-key"], "destination": KAGGLE})
    assert in_a_source == [
        "parameters.sources[0]: expected a secret only where tenants.assay.secrets binds it, found secret://kaggle-key"
    ]
    other_project = {**KAGGLE, "key": "secret://projects/elsewhere/secrets/kaggle-key"}
    assert (
        "parameters.destination.key" in problems({"sources": ["gs://lab-data/assay/"], "destination": other_project})[0]
    )
    own_project = {**KAGGLE, "key": "secret://projects/lab-project/secrets/kaggle-key/versions/3"}
    assert problems({"sources": ["gs://lab-data/assay/"], "destination": own_project}) == []


def test_secrets_in_pipelines_relay_cannot_interpret_are_refused():
    assert problems({"message": "secret://kaggle-key"}, pipeline="echo") == [
        "parameters.message: expected a secret only where tenants.assay.secrets binds it, found secret://kaggle-key"
    ]
    assert problems({"message": "hi"}, pipeline="echo") == []
    assert problems({"message": "hi"}, pipeline="other") == [
        "pipeline: expected a pipeline tenants.assay.pipelines lists (push, ratchet, echo), found 'other'"
    ]


def test_ceilings_on_attempts_and_timeouts():
    lims = {"kind": "http", "url": "https://lims.lab.example/api/", "max_attempts": 10**9, "timeout": 121}
    assert problems({"sources": ["gs://lab-data/assay/"], "destination": lims}) == [
        "parameters.destination.max_attempts: expected a number in (0, 3] (limits), found 1000000000",
        "parameters.destination.timeout: expected a number in (0, 120] (limits), found 121",
    ]


def test_without_a_policy_nothing_outside_is_allowed():
    found = [str(p) for p in check_request(NO_POLICY, None, "push", {"sources": ["gs://a/"], "destination": KAGGLE},
                                           CLOUD)]  # fmt: skip
    assert len(found) == 4 and all("a policy (none is configured)" in p for p in found), found
    assert check_request(NO_POLICY, None, "echo", {"message": "hi"}, CLOUD) == []


@pytest.mark.parametrize(
    "parameters, tenant, fragment",
    [
        ({"workflow": {"uri": "gs://attacker/wf.json"}}, "assay", "parameters.workflow: expected a code location"),
        ({"workflow": {"uri": "gs://lab-bench/wf.json"}, "source": "file:///srv/"}, "assay", "file:// only with"),
        ({"workflow": {"uri": "gs://lab-bench/wf.json"}}, "assay", "a cluster tenants.assay.clusters allows"),
        ({"workflow": {"uri": "gs://lab-bench/wf.json"}, "destination": {"kind": "http", "url": "https://x.example/"}},
         "assay", "url must start with https://infer.lab.example/"),
        ({"workflow": {"uri": "gs://lab-bench/wf.json"},
          "destination": {"kind": "http", "url": "https://infer.lab.example/", "call_path": "//evil.example/x"}},
         "assay", "call_path must be a path"),
        ({"workflow": {"uri": "gs://lab-bench/wf.json"},
          "destination": {"kind": "http", "url": "https://infer.lab.example/", "ca_cert": "/var/run/secrets/x"}},
         "assay", "ca_cert must be PEM text, not a path"),
        ({"workflow": {"uri": "gs://lab-bench/wf.json"},
          "destination": {"kind": "kfp", "host": "https://kfp.lab.example", "data_uri": "gs://relay-results/x"}},
         "assay", "data_uri must lie under gs://lab-bench-data/"),
        ({"workflow": {"uri": "gs://imaging-bench/wf.json"}, "destination": {"kind": "local", "root": "/etc"}},
         "imaging", "root must lie under (no root in the rule)"),
    ],
)  # fmt: skip
def test_ratchet_code_and_clusters_outside_the_tenant_are_refused(
    parameters: dict[str, Any], tenant: str, fragment: str
):
    found = problems(parameters, pipeline="ratchet", tenant=tenant)
    assert any(fragment in p for p in found), found


def test_an_allowed_ratchet_binds_its_cluster_token():
    destination = {"kind": "http", "url": "https://infer.lab.example/v2", "token": "secret://infer-token"}
    assert problems({"workflow": {"uri": "gs://lab-bench/wf.json"}, "destination": destination}, "ratchet") == []
    local = problems({"workflow": {"uri": "gs://imaging-bench/wf.json"}}, "ratchet", tenant="imaging")
    assert local == []  # the local cluster is on for this tenant


def test_file_locations_only_with_the_local_backend():
    local = parse_policy("tenants: [{name: dev, code: ['file:///srv/bench/']}]", "p")
    dev = local.tenant("dev")
    on_cloud = check_location(local, dev, "file:///srv/bench/wf.json", CLOUD, "w", key="code")
    assert "file:// only with the local backend" in str(on_cloud[0])
    assert check_location(local, dev, "file:///srv/bench/wf.json", Context(True, ()), "w", key="code") == []
    assert check_location(local, dev, "file:///srv/bench/../../etc/x", Context(True, ()), "w", key="code")
    mine = Context(local=True, protected=("file:///srv/bench/results",))
    assert "Relay's own storage" in str(
        check_location(local, dev, "file:///srv/bench/results/x", mine, "w", key="code")[0]
    )


@pytest.mark.parametrize(
    "uri, prefix, inside",
    [
        ("gs://b/a/x", "gs://b/a/", True),
        ("gs://b/a", "gs://b/a/", True),
        ("gs://b/ab/x", "gs://b/a", False),
        ("gs://b/x", "gs://b", True),
        ("gs://bb/x", "gs://b", False),
        ("file:///x/y", "file:///", True),
    ],
)
def test_within_goes_segment_by_segment(uri: str, prefix: str, inside: bool):
    assert within(uri, prefix) is inside


@pytest.mark.parametrize(
    "url, inside",
    [
        ("https://h.example/api/v1", True),
        ("https://h.example:443/api/v1?x=1", True),
        ("https://h.example/api", True),
        ("https://h.example/apiv1", False),
        ("http://h.example/api/v1", False),
        ("https://h.example:8443/api/v1", False),
        ("https://h.example.evil/api/v1", False),
        ("https://h.example/api/%2e%2e/admin", False),
        ("https://h.example/api/../admin", False),
        ("https://h.example:x/api/", False),
    ],
)
def test_url_within_checks_scheme_host_port_and_path(url: str, inside: bool):
    assert url_within(url, "https://h.example/api/") is inside
