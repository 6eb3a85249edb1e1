"""Runs inside the Google Cloud CLI's own Python: gcloud commands through gcloud's own CLI object, many per process.

`python gcloud_driver.py SDK_ROOT parse` reads a JSON list of argv lists (without `gcloud`) on stdin and executes
each through the same calliope CLI the `gcloud` command builds, in this one process: loading the CLI takes about
half a second, each command a few milliseconds after that, where a `gcloud` process per command takes one to two
seconds. It prints, as JSON, each command's exit code and what it wrote. Run it with no credentials and no network:
a command whose arguments parse then stops at authentication (exit 1); one that does not stops in the argument
parser (exit 2).

`python gcloud_driver.py SDK_ROOT source DIR RUNTIME` applies the checks `gcloud functions deploy --source=DIR`
makes before it uploads, and prints the names in the zip it would upload.
"""

import json
import os
import sys
import tempfile
import zipfile


def _import_path(root):
    lib = os.path.join(root, "lib")
    sys.path[:0] = [os.path.join(lib, "third_party"), lib]


def _captured(run):
    """(result of run(), everything written to fds 1 and 2 meanwhile): gcloud's logging holds on to the streams."""
    with tempfile.TemporaryFile() as capture:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(capture.fileno(), 1)
        os.dup2(capture.fileno(), 2)
        try:
            result = run()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        capture.seek(0)
        return result, capture.read().decode("utf-8", "replace")


def parse(commands):
    from googlecloudsdk import gcloud_main

    cli = gcloud_main.CreateCLI([])

    def execute(argv):
        try:
            cli.Execute(argv)
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:  # anything else is worth seeing, not a verdict
            return f"{type(exc).__name__}: {exc}"
        return 0

    results = []
    for argv in commands:
        code, output = _captured(lambda argv=argv: execute(argv))
        results.append({"argv": argv, "code": code, "output": output})
    return results


def source(directory, runtime):
    from googlecloudsdk.command_lib.functions import source_util

    source_util.ValidateDirectoryHasRequiredRuntimeFiles(directory, runtime)
    with tempfile.TemporaryDirectory() as scratch:
        path = source_util.CreateSourcesZipFile(scratch, directory)
        with zipfile.ZipFile(path) as archive:
            return sorted(archive.namelist())


def main():
    root, mode = sys.argv[1], sys.argv[2]
    _import_path(root)
    out = os.dup(1)
    if mode == "parse":
        answer = parse(json.load(sys.stdin))
    else:
        answer, _ = _captured(lambda: source(sys.argv[3], sys.argv[4]))
    os.write(out, json.dumps(answer).encode())


if __name__ == "__main__":
    main()
