"""The local stack's policy: it allows what the demo does, and no more."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devstack import demo
from devstack.policy import RATCHET_EXAMPLE, TEMPLATE, write_policy
from devstack.policy import render as render_policy
from relay.policy import (
    Context,
    Policy,
    PolicyError,
    check_request,
    own_locations,
    route_of,
    tenant_for_object,
    tenant_for_topic,
)
from relay.routes import ObjectEvent, SetEvent, render


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, Policy]:
    return write_policy(tmp_path / "stack")


def context(policy_path: Path) -> Context:
    """The demo's functions' own: the local backend, and its records, catalog and policy protected."""
    catalog = str(demo.REPO / "pipelines" / "compiled")
    return Context(local=True, protected=own_locations(f"gs://{demo.RESULTS}", catalog, str(policy_path)))


def verdict(written: tuple[Path, Policy], sample: demo.Sample) -> list[str]:
    path, policy = written
    document: dict[str, Any] = sample.document
    if sample.how == "route":  # the route's pipeline and parameters, filled in from the object's event
        tenant = tenant_for_topic(policy, demo.TRIGGER_TOPIC_PATH)  # the topic the notification comes on
        route = route_of(tenant, demo.LAB, sample.name) if tenant is not None else None
        assert route is not None
        event = ObjectEvent(demo.LAB, sample.name, 1, 75, "application/json", {})
        parameters, unfilled = render(route.parameters, event)
        assert unfilled == []
        document = {"pipeline": route.pipeline, "parameters": parameters}
    elif sample.how == "set":  # the set route's, filled in from the plate's files as one set
        tenant = tenant_for_topic(policy, demo.TRIGGER_TOPIC_PATH)
        route = route_of(tenant, demo.LAB, sample.name + demo.PLATE_FILES[0]) if tenant is not None else None
        assert route is not None and route.set_rule is not None
        objects = tuple(f"gs://{demo.LAB}/{sample.name}{name}" for name in demo.PLATE_FILES)
        plate = SetEvent("lab/plates/gs://lab-data/plates/plate-1#1", demo.LAB, sample.name.rstrip("/"), objects)
        parameters, unfilled = render(route.parameters, plate)
        assert unfilled == [] and parameters["sources"] == list(objects)
        document = {"pipeline": route.pipeline, "parameters": parameters}
    elif sample.how in ("topic", "cancel", "rerun"):
        tenant = tenant_for_topic(policy, demo.TRIGGER_TOPIC_PATH)
    else:
        tenant = tenant_for_object(policy, f"gs://{demo.TRIGGERS}/{sample.name}")
    assert tenant is not None and tenant.name == "lab"
    problems = check_request(policy, tenant, document["pipeline"], document["parameters"], context(path))
    return [str(problem) for problem in problems]


def test_the_written_policy_is_the_template_for_this_clone(written: tuple[Path, Policy]):
    path, policy = written
    assert path.read_text() == render_policy() and policy.source == str(path)
    assert policy.tenant("lab") is not None
    # The example as seeded in the stack's storage, and its folder in this clone (not file:/// whole).
    assert policy.tenants[0].code == ("gs://lab-benchmarks/", RATCHET_EXAMPLE.as_uri() + "/")
    assert "${" not in path.read_text()


@pytest.mark.parametrize(
    "sample", [s for s in demo.samples() if s.expect in ("succeeded", "duplicate", "cancelled")], ids=lambda s: s.label
)
def test_everything_the_demo_runs_is_allowed(written: tuple[Path, Policy], sample: demo.Sample):
    assert verdict(written, sample) == []


def test_the_denied_sample_is_refused_for_its_host_and_its_secret(written: tuple[Path, Policy]):
    denied = next(s for s in demo.samples() if s.code == "policy_denied")
    problems = verdict(written, denied)
    assert len(problems) == 2, problems
    assert problems[0].startswith("parameters.destination: expected a destination tenants.lab.destinations allows")
    assert "collector.example.net" in problems[0]
    assert problems[1] == (
        "parameters.destination.headers.Authorization: expected a secret only where tenants.lab.secrets binds it, "
        "found secret://collector-token"
    )


@pytest.mark.parametrize(
    "workflow",
    [
        (RATCHET_EXAMPLE.parent / "ratchet-copy" / "workflow.json").as_uri(),  # a sibling sharing the name's start
        (RATCHET_EXAMPLE.parents[2] / "devstack" / "policy.yaml").as_uri(),
        "file:///etc/passwd",
        "gs://lab-data/workflow.json",  # data, not code
    ],
)
def test_code_comes_from_the_example_folder_only(written: tuple[Path, Policy], workflow: str):
    path, policy = written
    parameters = {"workflow": {"uri": workflow}}
    problems = check_request(policy, policy.tenant("lab"), "ratchet", parameters, context(path))
    assert [p.field for p in problems] == ["parameters.workflow"]


@pytest.mark.parametrize(
    "destination",
    [
        {"kind": "gcs", "bucket": demo.RESULTS, "prefix": "runs"},  # Relay's own records
        {"kind": "gcs", "bucket": demo.LAB, "prefix": "copy"},  # not a destination
        {"kind": "local", "root": "/tmp/elsewhere"},  # a push has no local destination
    ],
)
def test_a_push_goes_to_the_ml_bucket_only(written: tuple[Path, Policy], destination: dict[str, str]):
    path, policy = written
    parameters = {"sources": [f"gs://{demo.LAB}/assay/"], "destination": destination}
    problems = check_request(policy, policy.tenant("lab"), "push", parameters, context(path))
    assert [p.field for p in problems] == ["parameters.destination"]


def test_no_tenant_takes_triggers_from_anywhere_else(written: tuple[Path, Policy]):
    _, policy = written
    assert tenant_for_object(policy, f"gs://{demo.LAB}/trigger.json") is None
    assert tenant_for_topic(policy, "projects/relay-local/topics/other") is None


def test_a_broken_template_stops_the_stack_before_it_starts(tmp_path: Path):
    template = tmp_path / "policy.yaml"
    template.write_text(TEMPLATE.read_text().replace("name: lab", "name: Lab-1"))
    with pytest.raises(PolicyError) as raised:
        write_policy(tmp_path / "stack", template)
    assert any(problem.startswith("tenants[0].name: expected a tenant name") for problem in raised.value.problems)
    assert not (tmp_path / "stack" / "policy.yaml").exists()


def test_the_functions_are_pointed_at_it(tmp_path: Path):
    env, policy = demo.function_env(tmp_path, notify=False)
    assert env["RELAY_POLICY_URI"] == policy.source == str(tmp_path / "policy.yaml")
    assert "RELAY_NOTIFY_TOPIC" not in env
