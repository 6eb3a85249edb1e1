from __future__ import annotations

import hashlib

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


def test_a_derived_key_is_the_same_in_every_release():
    # Re-delivered triggers find their run by this key: a changed derivation would launch them a second time.
    assert naming.derive_run_key("push", "gs://b/t.json#1") == "push-8f80690e65588015b55d"
    assert naming.derive_run_key("Not Valid", "x") == "trigger-2d711642b726b0440162"


def test_the_longest_pipeline_name_gives_a_key_within_the_run_key_limit():
    longest = "p" * 63
    assert naming.PIPELINE_NAME.match(longest) and not naming.PIPELINE_NAME.match(longest + "p")
    key = naming.derive_run_key(longest, "x")
    assert key.startswith(longest + "-") and len(key) == 63 + 1 + 20 and naming.RUN_KEY.match(key)


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("a", True),
        ("a" + "-0z" * 42, True),  # 127 characters: the longest (Vertex: "less than 128")
        ("a" * 128, False),
        ("", False),
        ("1abc", False),
        ("-abc", False),
        ("Abc", False),
        ("a_b", False),
        ("abc\n", False),
        ("a--b-", True),  # run keys a trigger chooses may hold any hyphens; pipeline names may not
    ],
)
def test_run_keys(key: str, valid: bool):
    assert bool(naming.RUN_KEY.match(key)) is valid


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("echo", True),
        ("e", True),
        ("push-2", True),
        ("a" * 64, False),
        ("push--x", False),  # "--" separates a tenant from its run key
        ("push-", False),
        ("2push", False),
        ("Push", False),
        ("push\n", False),
    ],
)
def test_pipeline_names(name: str, valid: bool):
    assert bool(naming.PIPELINE_NAME.match(name)) is valid


def test_identities_and_places():
    assert naming.object_identity("b", "a/t.json", 7) == "gs://b/a/t.json#7"
    assert naming.message_identity("projects/proj-p/topics/tee", "42") == "pubsub:projects/proj-p/topics/tee#42"
    assert naming.message_identity("projects/proj-p/topics/tee", "42", None) == "pubsub:projects/proj-p/topics/tee#42"
    assert naming.message_identity("projects/proj-p/topics/tee", "42", "") == "pubsub:projects/proj-p/topics/tee#42"
    stamped = naming.message_identity("projects/proj-p/topics/tee", "42", "2026-11-29T21:58:21.511Z")
    assert stamped == "pubsub:projects/proj-p/topics/tee#42@2026-11-29T21:58:21.511Z"
    assert naming.join("gs://r/", "/runs/", "k/") == "gs://r/runs/k"
    # Only slashes are trimmed: a local results folder or a part may begin or end with any other character.
    assert naming.join("/srv/BOX/", "/X-ray/", "LAX ") == "/srv/BOX/X-ray/LAX "
    assert naming.catalog_entry("gs://c/pipelines/", "echo") == "gs://c/pipelines/echo.yaml"
    assert naming.catalog_entry("gs://c", naming.POLICY_ENTRY) == "gs://c/policy.yaml"


@pytest.mark.parametrize(
    ("uri", "parts"),
    [("gs://b", ("b", "")), ("gs://b/", ("b", "")), ("gs://b/a/b/c.json", ("b", "a/b/c.json"))],
)
def test_split_gs_uri_at_the_first_slash(uri: str, parts: tuple[str, str]):
    assert naming.split_gs_uri(uri) == parts


@pytest.mark.parametrize("run_key", ["../runs/imaging--nightly", "imaging--nightly/result.json", "", "a" * 200])
def test_a_refusal_or_direct_result_is_named_inside_its_own_folder_whatever_the_run_says(run_key: str):
    refused = naming.refusal_record("gs://r", run_key, "../launch")
    assert refused.startswith("gs://r/refused/") and refused.count("/") == 5 and ".." not in refused
    assert naming.direct_result("gs://r", run_key).count("/") == 4
    assert naming.refusal_record("gs://r", "imaging--nightly", "run-1") == "gs://r/refused/imaging--nightly/run-1.json"


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("lab/plates", ("lab", "plates")),
        ("lab/", None),
        ("/plates", None),
        ("lab", None),
        ("lab/plates/2026", None),
        ("", None),
    ],
)
def test_an_owned_name_is_one_owner_and_one_name(text: str, parts: tuple[str, str] | None):
    # The policy lets an owner have exactly what the Hugging Face and Kaggle steps take as owner/name.
    assert naming.split_owned(text) == parts


def test_a_direct_result_and_a_record_name_are_the_same_in_every_release():
    # Records already written are found again by these names: a changed folder or digest would lose them.
    assert naming.direct_result("gs://r", "run-1") == "gs://r/direct/run-1.json"
    odd = "../runs/imaging--nightly"
    digest = "sha256-" + hashlib.sha256(odd.encode()).hexdigest()[:32]
    assert naming.record_name(odd) == digest and len(digest) == 39
    assert naming.direct_result("gs://r", odd) == f"gs://r/direct/{digest}.json"


def test_a_listing_of_the_runs_folder_names_each_record_of_a_run_as_it_is_written():
    results, key = "gs://r/results", "push-0123456789abcdef"
    folder = naming.runs_folder(results)
    written = {
        naming.launch_record: naming.LAUNCH,
        naming.result_record: naming.RESULT,
        naming.skip_record: naming.SKIPPED,
        naming.incomplete_record: naming.INCOMPLETE,
        naming.retry_record: naming.RETRY,
        naming.chain_record: naming.CHAIN,
        naming.chained_record: naming.CHAINED,
    }
    for record, name in written.items():
        uri = record(results, key)
        assert uri.startswith(folder) and naming.listed_run_record(folder, uri) == (key, name)
    assert naming.LAUNCH == "launch.json" and naming.RESULT == "result.json"  # the bucket's layout, kept as it is
