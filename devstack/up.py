"""`make up`: the demo's local stack, kept running for you to use (the `relay` command, your own triggers).

Seeds sample data, prints what a new shell needs to work against the stack (and writes it to env.sh), then shows
each event's outcome, and each run's end, cancel and rerun, as they happen; Ctrl-C (or `make down` from another
shell) stops everything it started. What the stack stores (records, uploads, ratchet baselines, the local runs) is
kept in its folder, `.relay/up/`, for the next start; `make clean` throws it away.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import shlex
import shutil
import signal
import socket
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from devstack import demo, pidfile
from devstack.down import PID_FILE, WORKDIR
from devstack.feed import RecordFeed
from devstack.logs import parse_line
from devstack.policy import TEMPLATE
from devstack.processes import LOOPBACK, ProcessError
from devstack.pubsub import emulator_available
from devstack.seed import BENCHMARKS, DESCRIPTION, seed
from devstack.stack import LocalStack, StackPorts
from relay import lifecycle
from relay.adapters.gcs import GcsBlobStore
from relay.adapters.tokens import NoTokenSource
from relay.policy import PolicyError
from relay.status import read_run
from relaycli.config import Context
from relaycli.output import Paint, colour_wanted, truncate
from relaycli.sync import relay_for

_POLL = 0.5
_ENDED = ("succeeded", "failed", "cancelled")
# The reconciler's schedule: a run that ended without recording it (a runner killed, a stack stopped mid-run) is
# recorded within this, as the deployed scheduler does every few minutes.
RECONCILE_SECONDS = 10.0
FEED_SUBSCRIPTION = "relay-notify-make-up"


class PortInUseError(Exception):
    """A port `make up` needs is taken; the message is the one line to print."""


def check_ports(ports: Mapping[str, int], host: str = LOOPBACK) -> None:
    """PortInUseError naming the first of `ports` (what it is for -> number) that something already holds.

    Checked by binding, as the servers will (with SO_REUSEADDR, so a port in TIME_WAIT does not count), before
    anything starts or the working folder is touched: a second `make up` must leave the first one alone.
    """
    for what, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                why = "in use (another `make up`?)" if exc.errno == errno.EADDRINUSE else exc.strerror
                raise PortInUseError(
                    f"{host}:{port} ({what}) is {why}: stop what holds it, or pick other ports, "
                    "e.g. make up STORAGE_PORT=4444 PUBSUB_PORT=8086"
                ) from None


def shell_exports(stack_env: Mapping[str, str], pubsub_host: str | None, project: str) -> dict[str, str]:
    """The variables a new shell gets: the stack's, and with the Pub/Sub emulator what makes `relay publish` and
    `gcloud pubsub ...` reach it. gcloud ignores PUBSUB_EMULATOR_HOST: it takes the endpoint, no credentials (the
    emulator needs none, and a laptop's would otherwise be sent) and the stack's project."""
    if pubsub_host is None:
        return dict(stack_env)
    return {
        **stack_env,
        "PUBSUB_PROJECT_ID": project,
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_PUBSUB": f"http://{pubsub_host}/",
        "CLOUDSDK_AUTH_DISABLE_CREDENTIALS": "true",
        "CLOUDSDK_CORE_PROJECT": project,
    }


def shell_lines(repo: Path, bin_dir: Path, exports: Mapping[str, str]) -> list[str]:
    """What a new shell runs to use the stack: the clone as its folder, `relay` on PATH, the stack's variables."""
    return [
        f"cd {shlex.quote(str(repo))}",
        f'export PATH="{_in_double_quotes(str(bin_dir))}:$PATH"',
        *(f"export {name}={shlex.quote(value)}" for name, value in sorted(exports.items())),
    ]


def _in_double_quotes(text: str) -> str:
    # In double quotes only these four keep a meaning; escaped, any folder name survives a paste.
    return "".join("\\" + c if c in '"$`\\' else c for c in text)


class EventFollower:
    """Prints each outcome line the functions log, then the end of each run they launched, as they happen.

    The functions' logs are files (the processes run detached); they are read from where the last read stopped.
    """

    def __init__(
        self,
        logs: Sequence[Path],
        read_state: Callable[[str], tuple[str, str] | None],
        out: TextIO,
        paint: Paint,
        records: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        self._offsets = dict.fromkeys(logs, 0)
        self._read_state = read_state
        self._records = records
        self._out = out
        self._paint = paint
        self._running: dict[str, str] = {}  # run key -> pipeline, until its run ends
        # A launch and an end may be seen twice (a function's log line, then its published record): shown once.
        self._shown: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="make-up-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(_POLL):
            self._poll_safely()
        self._poll_safely()  # once more at the stop: what ended just before Ctrl-C or `make down` is shown too

    def _poll_safely(self) -> None:
        with contextlib.suppress(Exception):  # a bad line or a stopping stack must not end the display
            self.poll()

    def poll(self) -> None:
        for path in self._offsets:
            for entry in self._new_lines(path):
                self._show(entry)
        # What no function logs: the `relay` command's cancels and reruns, ends the runner or the reconciler records.
        for record in self._records() if self._records else []:
            self._show_record(record)
        for key, pipeline in list(self._running.items()):
            state = self._read_state(key)
            if state is not None and state[0] in _ENDED:
                self._end(state[0], key, pipeline, state[1])

    def _show_record(self, record: Mapping[str, Any]) -> None:
        state, key, pipeline = str(record.get("state")), str(record.get("run_key")), str(record.get("pipeline") or "-")
        given = record.get("trigger")
        trigger: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
        if state in _ENDED:
            self._end(state, key, pipeline, str(record.get("message") or ""))
        elif state == "launched" and trigger.get("via") == "rerun":
            self._running.setdefault(key, pipeline)
            by, previous = trigger.get("requested_by"), trigger.get("previous_attempt")
            detail = f"rerun of {previous} by {by} -> run {record.get('run_id')}"
            self._once("rerun", key, pipeline, detail, shown_as="launched")

    def _end(self, state: str, key: str, pipeline: str, detail: str) -> None:
        self._running.pop(key, None)
        self._once(state, key, pipeline, detail, shown_as="ended")

    def _once(self, state: str, key: str, pipeline: str, detail: str, *, shown_as: str) -> None:
        if (shown_as, key) not in self._shown:
            self._shown.add((shown_as, key))
            self._print(state, key, pipeline, detail)

    def _new_lines(self, path: Path) -> list[dict[str, Any]]:
        try:
            with path.open("rb") as log:
                log.seek(self._offsets[path])
                data = log.read()
        except OSError:
            return []
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written is read next time
        self._offsets[path] += len(complete)
        entries = (parse_line(line) for line in complete.decode(errors="replace").splitlines())
        return [entry for entry in entries if entry is not None and "outcome" in entry]

    def _show(self, entry: Mapping[str, Any]) -> None:
        outcome, key = str(entry.get("outcome")), str(entry.get("run_key") or "-")
        pipeline = str(entry.get("pipeline") or "-")
        where = str(entry.get("trigger_uri") or "")
        if outcome == "launched" and entry.get("run_key"):
            self._running[key] = pipeline
            self._once(outcome, key, pipeline, f"{where} -> run {entry.get('run_id')}", shown_as="launched")
        elif outcome == "cancelled" and entry.get("run_key"):  # by a message: the record may come first
            self._end(outcome, key, pipeline, str(entry.get("message") or where))
        else:  # a rejection's message starts with the trigger's URI already
            self._print(outcome, key, pipeline, str(entry.get("message") or where))

    def _print(self, state: str, key: str, pipeline: str, detail: str) -> None:
        width = shutil.get_terminal_size((120, 24)).columns
        tail = f"  {key}  {pipeline}  "
        room = max(width - len(f"00:00:00  {state:<9}{tail}"), 20)  # one line each, however narrow the terminal
        when = f"{datetime.now():%H:%M:%S}"
        line = f"{when}  {self._paint.state(f'{state:<9}', state)}{tail}{truncate(detail, room)}"
        print(line, file=self._out, flush=True)


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=WORKDIR, help="its state, runs and logs (kept across starts)")
    parser.add_argument("--storage-port", type=int, default=4443, help="fake-gcs-server's (STORAGE_EMULATOR_HOST)")
    parser.add_argument("--pubsub-port", type=int, default=8085, help="the Pub/Sub emulator's (PUBSUB_EMULATOR_HOST)")
    parser.add_argument(
        "--catalog", type=Path, default=demo.CATALOG, help="folder of compiled specs <name>.yaml (pipelines/compiled)"
    )
    parser.add_argument(
        "--policy", type=Path, default=TEMPLATE, help="the policy template the stack fills in (devstack/policy.yaml)"
    )
    args = parser.parse_args(argv)
    if not args.catalog.is_dir() or not args.policy.is_file():
        wrong = f"--catalog {args.catalog}: expected a folder" if not args.catalog.is_dir() else ""
        wrong = wrong or f"--policy {args.policy}: expected a policy file"
        print(f"make up: {wrong}, found none", file=sys.stderr)
        return 1
    pid_file = args.workdir / PID_FILE
    try:
        pidfile.claim(pid_file)  # one stack per folder: two storage servers on one folder would corrupt it
    except pidfile.StackRunningError as error:
        print(f"make up: {error}", file=sys.stderr)
        return 1
    try:
        return _up(args, out)
    finally:
        pidfile.release(pid_file)


def _up(args: argparse.Namespace, out: TextIO) -> int:
    missing = emulator_available()
    ports = {"Cloud Storage emulator, STORAGE_PORT": args.storage_port}
    if not missing:
        ports["Pub/Sub emulator, PUBSUB_PORT"] = args.pubsub_port
    try:
        check_ports(ports)
    except PortInUseError as error:
        print(f"make up: {error}", file=sys.stderr)
        return 1
    # The folder is kept: storage's objects (records, uploads, baselines) and the local runs agree across starts.
    try:
        env, policy = demo.function_env(
            args.workdir, notify=missing is None, catalog=args.catalog, policy_template=args.policy
        )
    except PolicyError as error:
        print(f"make up: {error}", file=sys.stderr)
        return 1
    stopped = threading.Event()
    for ending in (signal.SIGTERM, signal.SIGHUP):  # `kill`, or the terminal window closed
        signal.signal(ending, lambda *_: stopped.set())
    stack = LocalStack(
        args.workdir,
        project=demo.PROJECT,
        trigger_bucket=demo.TRIGGERS,
        trigger_topic=demo.TRIGGER_TOPIC,
        notify_topic=None if missing else demo.NOTIFY_TOPIC,
        buckets=[demo.RESULTS, demo.LAB, demo.ML, BENCHMARKS],
        function_env=env,
        ports=StackPorts(storage=args.storage_port, pubsub=None if missing else args.pubsub_port),
        emulators=missing is None,
        gcs_backend="filesystem",  # under the folder: what was stored is there at the next start
    )
    print("Starting Relay's local stack...", file=out, flush=True)
    try:
        stack.start()
    except ProcessError as error:
        print(f"make up: {error}", file=sys.stderr)
        return 1
    try:
        seed(stack.storage_client())
        exports = shell_exports(stack.env(), None if missing else stack.pubsub_host, demo.PROJECT)
        # This process then sees the stack as a shell with env.sh does: the reconciler is `relay sync`, run here.
        os.environ.update(exports)
        lines = shell_lines(demo.REPO, Path(sys.executable).absolute().parent, exports)
        env_file = args.workdir / "env.sh"
        env_file.write_text(
            "# Written by `make up`: source it in a shell to use the stack.\n" + "\n".join(lines[1:]) + "\n"
        )
        paint = Paint(colour_wanted(out, os.environ))
        _banner(out, stack, lines, env_file, missing, f"{policy.source} (from {args.policy}: what triggers may use)")
        store = GcsBlobStore(endpoint=stack.storage_url, tokens=NoTokenSource())  # fake-gcs-server takes no token

        def read_state(key: str) -> tuple[str, str] | None:
            run = read_run(store, f"gs://{demo.RESULTS}", key)
            return None if run is None else (run.state, run.message)

        logs = [stack.object_finalized.process.log_path, stack.message_published.process.log_path]
        with contextlib.ExitStack() as running:
            feed = None
            if not missing:
                feed = RecordFeed(stack.pubsub_host, demo.PROJECT, demo.NOTIFY_TOPIC, FEED_SUBSCRIPTION)
                running.callback(feed.close)
            follower = EventFollower(logs, read_state, out, paint, feed.poll if feed else None)
            follower.start()
            running.callback(follower.stop)
            reconciler = Every(
                RECONCILE_SECONDS,
                _reconcile_tick(),
                name="make-up-reconcile",
                failed=lambda said: _say_safely(out, f"{datetime.now():%H:%M:%S}  reconcile failed: {said}"),
            )
            reconciler.start()
            running.callback(reconciler.stop)
            with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stop everything below
                stopped.wait()
    finally:
        # Ctrl-C reaches a `| tee` too, so printing may fail: the stack is stopped whatever happens to `out`.
        _say_safely(out, "\nStopping (runs still going get a minute to finish)...")
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave half the stack running
        stack.stop()
    _say_safely(out, "Stopped.")
    return 0


class Every:
    """Calls `tick` every `seconds` in a thread of its own until stopped; a tick that raises waits for the next,
    and what it raised goes to `failed` (once while it stays the same: a stopped backend fails every tick)."""

    def __init__(self, seconds: float, tick: Callable[[], object], *, name: str, failed: Callable[[str], None]) -> None:
        self._seconds = seconds
        self._tick = tick
        self._failed = failed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        last = ""
        while not self._stop.wait(self._seconds):
            try:
                self._tick()
                last = ""
            except Exception as error:  # storage stopping, a backend hiccup: the next tick tries again
                said = f"{type(error).__name__}: {error}"
                if said != last:
                    self._failed(said)
                last = said


def _reconcile_tick() -> Callable[[], object]:
    """One `relay sync` on the environment env.sh sets (see `_up`); what it records reaches the terminal as any
    record does (published on the notify topic, or seen by the follower's look at the runs it follows)."""
    relay = relay_for(Context(os.environ), None)
    return lambda: lifecycle.reconcile(relay)


def _say_safely(out: TextIO, text: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # a closed pipe, or a closed file
        print(text, file=out, flush=True)


def _banner(out: TextIO, stack: LocalStack, lines: list[str], env_file: Path, missing: str | None, policy: str) -> None:
    def say(text: str = "") -> None:
        print(text, file=out)

    if missing:
        say(f"Note: {missing}; without the Pub/Sub emulator, uploads are not delivered by themselves.")
    say(f"Relay's local stack is up ({stack.startup_seconds or 0:.1f} s). In a new shell, paste:\n")
    for line in lines:
        say(f"  {line}")
    say(f"\n(or, from the clone's folder: source {shlex.quote(str(env_file))})")
    say("\nthen send the examples (examples/), each ends `succeeded`:\n")
    say(f"  relay validate examples/push.json --bucket {demo.TRIGGERS}   # the catalog's and the policy's verdict")
    say(f"  relay trigger examples/push.json --bucket {demo.TRIGGERS}")
    say(f"  relay trigger examples/ratchet.json --bucket {demo.TRIGGERS}")
    if not missing:  # without the emulator, `relay publish` would go to the real Pub/Sub
        say(f"  relay publish examples/push-reference.yaml --topic {demo.TRIGGER_TOPIC}")
    say("  relay runs                                  # then: relay status RUN_KEY")
    say(f"  relay upload FILE gs://{demo.LAB}/mine/     # your data; then examples/push-mine.yaml sends it\n")
    say(f"sample data: {DESCRIPTION}")
    say(f"policy: {policy}")
    say(stack.summary())
    say(f"state: {stack.workdir} (kept across starts; make clean removes it)")
    say("\nEvents and runs appear below as they happen. Ctrl-C (or make down in another shell) stops everything.\n")
    out.flush()


if __name__ == "__main__":
    raise SystemExit(main())
