from __future__ import annotations

import pytest

from relay import naming


def test_derived_keys_are_stable_valid_and_distinct():
    first = naming.derive_run_key("push", naming.object_identity("b", "t.json", 1))
    assert first == naming.derive_run_key("push", "gs://b/t.json#1")
    assert naming.RUN_KEY.match(first) and first.startswith("push-")
    assert first != naming.derive_run_key("push", "gs://b/t.json#2")


def test_long_or_invalid_pipeline_names_still_give_valid_keys():
    assert naming.RUN_KEY.match(naming.derive_run_key("p" * 200, "x"))
    assert naming.derive_run_key("Not Valid", "x").startswith("trigger-")


def test_record_paths():
    assert naming.launch_record("gs://r/pre/", "k") == "gs://r/pre/runs/k/launch.json"
    assert naming.result_record("/tmp/r", "k") == "/tmp/r/runs/k/result.json"
    assert naming.rejection_record("gs://r", "k") == "gs://r/rejected/k.json"


def test_split_gs_uri():
    assert naming.split_gs_uri("gs://b/a/b.json") == ("b", "a/b.json")
    with pytest.raises(ValueError, match="expected a gs:// URI"):
        naming.split_gs_uri("s3://b/x")
