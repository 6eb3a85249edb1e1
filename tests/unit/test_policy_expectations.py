"""A tenant's `expect` (absence declarations) and `expected_times` (when a run is stuck), read strictly."""

from __future__ import annotations

from datetime import UTC, timedelta
from zoneinfo import ZoneInfo

import pytest

from relay.policy import PolicyError
from tests.policies import policy

TENANT = """
tenants:
  - name: lab
    triggers: [gs://relay-triggers/lab/]
    routes:
      - {id: assay-csv, bucket: lab-data, prefix: assay/, glob: "*.csv", pipeline: push}
"""


def test_declarations_read_as_written():
    read = policy(
        TENANT
        + """    expect:
      - {id: nightly, prefix: gs://relay-triggers/lab/nightly/, when: "by 06:00 on mon-fri", timezone: Europe/Berlin}
      - {id: assay, route: assay-csv, when: every 1h}
    expected_times: {push: 90m, ratchet: 2h}
"""
    )
    lab = read.tenant("lab")
    assert lab is not None
    nightly, assay = lab.expect
    assert (nightly.id, nightly.prefix, nightly.route, nightly.zone) == (
        "nightly", "gs://relay-triggers/lab/nightly/", "", ZoneInfo("Europe/Berlin")
    )  # fmt: skip
    assert nightly.schedule.days == frozenset(range(5))
    assert (assay.route, assay.zone, assay.schedule.every) == ("assay-csv", UTC, timedelta(hours=1))
    assert lab.expected_times == (("push", 5400.0), ("ratchet", 7200.0))


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        ("expect: [{id: a, when: every 1h}]", "tenants.lab.expect[0]: expected one of route"),
        ("expect: [{id: a, route: x, prefix: gs://relay-triggers/lab/, when: every 1h}]", "expected one of route"),
        ("expect: [{id: a, route: nope, when: every 1h}]", "tenants.lab.expect[0].route: expected a route of the "
         "tenant (assay-csv), found string 'nope'"),
        ("expect: [{id: a, prefix: gs://elsewhere/x/, when: every 1h}]", "tenants.lab.expect[0].prefix: expected "
         "a gs:// prefix under the tenant's triggers (gs://relay-triggers/lab/)"),
        ("expect: [{id: a, route: assay-csv, when: at 6}]", "tenants.lab.expect[0]: expected 'by HH:MM'"),
        ("expect: [{id: a, route: assay-csv, when: every 1h, timezone: Mars/Base}]", "expected a time zone"),
        ("expect: [{id: a, route: assay-csv, when: every 1h, cron: x}]", "expect[0].cron: unknown key"),
        ("expect: [{id: a, route: assay-csv, when: every 1h}, {id: a, route: assay-csv, when: every 2h}]",
         "tenants.lab.expect: expected one declaration per id, found string 'a twice'"),
        ("expect: {id: a}", "tenants.lab.expect: expected a list"),
        ("expected_times: {push: soon}", "tenants.lab.expected_times.push: expected a duration such as 90m or 2h"),
        ("expected_times: {push: 0}", "tenants.lab.expected_times.push: expected a duration"),
        ("expected_times: [push]", "tenants.lab.expected_times: expected a mapping of pipeline names"),
    ],
)  # fmt: skip
def test_each_wrong_declaration_is_named(entries: str, problem: str):
    with pytest.raises(PolicyError) as raised:
        policy(TENANT + f"    {entries}\n")
    assert any(found.startswith(problem) or problem in found for found in raised.value.problems), raised.value.problems
