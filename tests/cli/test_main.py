from __future__ import annotations

from pathlib import Path

import pytest

from relaycli.main import COMMANDS
from tests.cli.support import run


def test_relay_help_lists_every_command_with_its_summary_examples_and_environment(capsys):
    ran = run(capsys, ["--help"], env={})
    assert ran.code == 0 and ran.err == ""
    assert ran.out.startswith("usage: relay [-h] [--version] COMMAND ...\n")
    listed: list[str] = []
    for line in ran.out.split("commands:\n", 1)[1].split("\n\n", 1)[0].splitlines():
        if line.startswith("   "):  # argparse puts a summary under a name too long for the column (dead-letters)
            listed[-1] += " " + line.strip()
        else:
            listed.append(line)
    assert [line.split()[0] for line in listed] == [command.name for command in COMMANDS]
    for line, command in zip(listed, COMMANDS, strict=True):
        assert " ".join(line.split()[1:]) == command.summary
    for variable in (
        "RELAY_RESULTS_URI",
        "RELAY_CATALOG_URI",
        "RELAY_POLICY_URI",
        "RELAY_BACKEND",
        "RELAY_LOCAL_ROOT",
        "STORAGE_EMULATOR_HOST",
        "PUBSUB_EMULATOR_HOST",
        "PUBSUB_PROJECT_ID",
        "GOOGLE_CLOUD_PROJECT",
    ):
        assert f"\n  {variable}" in ran.out
    assert "\nexamples:\n  relay validate trigger.yaml --bucket relay-triggers\n" in ran.out
    exit_status = "exit status: 0 done, 1 not found, invalid or failed, 2 usage or configuration error,\n"
    assert exit_status + "3 status --wait timed out." in ran.out


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: command.name)
def test_each_command_has_help_with_a_description_and_examples(capsys, command):
    ran = run(capsys, [command.name, "--help"], env={})
    assert ran.code == 0 and ran.err == ""
    assert ran.out.startswith(f"usage: relay {command.name} [-h]")
    assert " ".join(command.description.split()[:6]) in " ".join(ran.out.split())
    examples = ran.out.split("\nexamples:\n", 1)[1]
    assert examples.splitlines()[0].startswith(f"  relay {command.name}")
    assert all(len(line) <= 120 for line in ran.out.splitlines())


def test_without_a_command_the_help_is_shown_and_the_exit_status_is_2(capsys):
    ran = run(capsys, [], env={})
    assert ran.code == 2 and ran.out.startswith("usage: relay")


def test_unknown_commands_and_options_are_one_line_usage_errors(capsys):
    unknown = run(capsys, ["launch"], env={})
    assert unknown.code == 2 and unknown.out == ""
    assert unknown.err.startswith("relay: argument COMMAND: invalid choice: 'launch'") and unknown.err.count("\n") == 1
    option = run(capsys, ["runs", "--newer-than", "1h"], env={})
    assert option.code == 2 and option.err == "relay: unrecognized arguments: --newer-than 1h (see 'relay --help')\n"


def test_version(capsys):
    ran = run(capsys, ["--version"], env={})
    assert ran.code == 0 and ran.out.startswith("relay ")


def test_compile_writes_the_catalog_as_committed(capsys, tmp_path: Path):
    from pipelines.compile import COMPILED
    from pipelines.components import DEFAULT_IMAGE
    from relaycli.compile import DEFAULT_IMAGE as SHOWN_IN_HELP

    assert SHOWN_IN_HELP == DEFAULT_IMAGE
    ran = run(capsys, ["compile", "--out", str(tmp_path)], env={})
    assert ran.code == 0
    assert ran.out.splitlines() == [str(tmp_path / "push.yaml"), str(tmp_path / "ratchet.yaml")]
    for name in ("push.yaml", "ratchet.yaml"):
        assert (tmp_path / name).read_text() == (COMPILED / name).read_text()


def test_compile_to_a_folder_it_cannot_write(capsys, tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    ran = run(capsys, ["compile", "--out", str(blocker / "catalog")], env={})
    assert ran.code == 1 and ran.err.count("\n") == 1 and "Traceback" not in ran.err
    assert ran.err.startswith(f"relay compile: {blocker / 'catalog'}: expected a writable folder, found ")


@pytest.mark.parametrize(
    ("variable", "argv"),
    [
        ("STORAGE_EMULATOR_HOST", ["status", "gs://triggers/t.json"]),
        ("STORAGE_EMULATOR_HOST", ["runs", "--results", "gs://relay-results"]),
        ("STORAGE_EMULATOR_HOST", ["trigger", "t.json", "--bucket", "triggers", "--no-validate"]),
        ("PUBSUB_EMULATOR_HOST", ["publish", "t.json", "--topic", "projects/proj-p/topics/triggers", "--no-validate"]),
    ],
)
def test_an_emulator_that_is_not_running_fails_at_once(capsys, tmp_path: Path, monkeypatch, variable, argv):
    from devstack.processes import free_port

    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.json").write_text('{"pipeline": "echo"}')
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    env = {variable: address, "RELAY_RESULTS_URI": str(tmp_path)}
    ran = run(capsys, argv, env=env)
    assert ran.code == 2 and ran.out == ""
    assert ran.err.startswith(f"relay {argv[0]}: {variable}: expected an emulator listening at {address}, found ")
    assert ran.err.count("\n") == 1
