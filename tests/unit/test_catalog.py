from __future__ import annotations

from pathlib import Path

import pytest

from relay.adapters.localfs import LocalBlobStore
from relay.catalog import Catalog, check_parameters, run_parameters
from relay.errors import InvalidTriggerError
from relay.ports import Blob
from tests.conftest import CATALOG, echo_pipeline
from tests.fakes import MemoryBlobStore


def test_root_inputs_are_read_with_types_and_requiredness():
    echo = echo_pipeline()
    assert echo.inputs["message"].type == "STRING" and echo.inputs["message"].required
    assert echo.inputs["count"].type == "NUMBER_INTEGER" and not echo.inputs["count"].required
    assert {name: spec.type for name, spec in echo.inputs.items()} == {
        "message": "STRING",
        "count": "NUMBER_INTEGER",
        "ratio": "NUMBER_DOUBLE",
        "enabled": "BOOLEAN",
        "items": "LIST",
        "options": "STRUCT",
        "fail": "BOOLEAN",
        "run_key": "STRING",
        "results_uri": "STRING",
    }
    assert echo.declares_reserved == ("run_key", "results_uri")


def test_values_of_every_type_pass():
    parameters = {"message": "hi", "count": 2, "ratio": 1, "enabled": False, "items": [1], "options": {"a": 1}}
    assert check_parameters(echo_pipeline(), parameters) == []


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({}, "parameters.message: expected a string, found nothing"),
        ({"message": 1}, "parameters.message: expected a string, found number 1"),
        ({"message": "m", "count": True}, "parameters.count: expected an integer, found boolean true"),
        ({"message": "m", "count": 1.5}, "parameters.count: expected an integer, found number 1.5"),
        ({"message": "m", "ratio": "1"}, "parameters.ratio: expected a number, found string '1'"),
        ({"message": "m", "enabled": "yes"}, "parameters.enabled: expected a boolean, found string 'yes'"),
        ({"message": "m", "items": {}}, "parameters.items: expected a list, found a mapping of 0"),
        ({"message": "m", "options": []}, "parameters.options: expected a mapping, found a list of 0"),
        ({"message": "m", "colour": "red"}, "parameters.colour: expected a parameter of echo (count, enabled"),
        ({"message": "secret://bad name"}, "parameters.message: expected secret://NAME or"),
    ],
)
def test_parameter_problems(parameters: dict[str, object], expected: str):
    problems = [str(p) for p in check_parameters(echo_pipeline(), parameters)]
    assert any(p.startswith(expected) for p in problems), problems


def test_secret_references_pass_through_untouched():
    parameters = {"message": "secret://kaggle-key", "options": {"token": "secret://projects/p/secrets/s/versions/3"}}
    assert check_parameters(echo_pipeline(), parameters) == []
    assert (
        run_parameters(echo_pipeline(), parameters, run_key="k", results_uri="gs://r")["message"]
        == "secret://kaggle-key"
    )


def test_reserved_parameters_are_filled_when_declared():
    filled = run_parameters(echo_pipeline(), {"message": "m"}, run_key="echo-1", results_uri="gs://r/x")
    assert filled == {"message": "m", "run_key": "echo-1", "results_uri": "gs://r/x"}


def test_catalog_reads_each_pipeline_once_and_names_missing_ones():
    store = MemoryBlobStore()
    store.write("gs://c/echo.yaml", (CATALOG / "echo.yaml").read_bytes())
    catalog = Catalog(store, "gs://c")
    first = catalog.get("echo", trigger_uri="t")
    store.delete("gs://c/echo.yaml")
    assert catalog.get("echo", trigger_uri="t") is first
    with pytest.raises(InvalidTriggerError) as caught:
        catalog.get("nope", trigger_uri="gs://t/x.json")
    assert caught.value.code == "unknown_pipeline"
    assert "expected a pipeline in the catalog, found 'nope', which it does not hold" in str(caught.value)
    assert "gs://c" not in str(caught.value)  # a record's reader learns nothing of where Relay keeps it
    with pytest.raises(InvalidTriggerError) as shown:  # the `relay` command's user chose the catalog
        Catalog(store, "gs://c", show_location=True).get("nope", trigger_uri="gs://t/x.json")
    assert "expected a pipeline in the catalog gs://c, found 'nope' (no gs://c/nope.yaml)" in str(shown.value)


class CountingStore(LocalBlobStore):
    """The disk, counting the reads: a lookup of an unchanged entry must not read (or parse) it again."""

    def __init__(self, lock_dir: Path) -> None:
        super().__init__(lock_dir)
        self.reads = 0

    def read(self, uri: str, *, generation: int | None = None) -> Blob:
        self.reads += 1
        return super().read(uri, generation=generation)


def test_a_local_catalog_entry_edited_while_running_is_used_at_the_next_lookup(tmp_path: Path):
    folder = tmp_path / "catalog"
    folder.mkdir()
    entry = folder / "echo.yaml"
    entry.write_bytes((CATALOG / "echo.yaml").read_bytes())
    store = CountingStore(tmp_path)
    catalog = Catalog(store, str(folder))
    first = catalog.get("echo", trigger_uri="t")
    assert catalog.get("echo", trigger_uri="t") is first and store.reads == 1  # unchanged: not read again
    # A recompile that drops an input: the same size or not, the next trigger is checked against the new spec.
    entry.write_text(entry.read_text().replace("options:", "choices:"))
    edited = catalog.get("echo", trigger_uri="t")
    assert "choices" in edited.inputs and "options" not in edited.inputs
    assert edited.package == entry.read_bytes()
    entry.touch()  # a new version with the same bytes: read again, parsed never
    assert catalog.get("echo", trigger_uri="t") is edited and store.reads == 3
    entry.unlink()
    with pytest.raises(InvalidTriggerError) as gone:
        catalog.get("echo", trigger_uri="t")
    assert gone.value.code == "unknown_pipeline"


def test_a_gs_catalog_is_never_asked_again_once_read():
    store = MemoryBlobStore()
    store.write("gs://c/echo.yaml", (CATALOG / "echo.yaml").read_bytes())
    catalog = Catalog(store, "gs://c")
    first = catalog.get("echo", trigger_uri="t")
    store.write("gs://c/echo.yaml", b"not a pipeline")  # a deploy makes new instances; this one keeps its own
    assert catalog.get("echo", trigger_uri="t") is first
