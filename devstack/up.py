"""`make up`: the demo's local stack, kept running for you to use (the `relay` command, your own triggers).

Prints the environment a shell needs to work against it, then waits; Ctrl-C stops everything it started.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import signal
import threading
from collections.abc import Sequence
from pathlib import Path

from devstack import demo
from devstack.pubsub import emulator_available
from devstack.stack import LocalStack, StackPorts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=demo.REPO / ".relay" / "up", help="logs and runs")
    parser.add_argument("--storage-port", type=int, default=4443)
    parser.add_argument("--pubsub-port", type=int, default=8085)
    args = parser.parse_args(argv)
    missing = emulator_available()
    env, policy = demo.function_env(args.workdir, notify=missing is None)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with LocalStack(
        args.workdir,
        project=demo.PROJECT,
        trigger_bucket=demo.TRIGGERS,
        trigger_topic=demo.TRIGGER_TOPIC,
        notify_topic=None if missing else demo.NOTIFY_TOPIC,
        buckets=[demo.RESULTS, demo.LAB, demo.ML],
        function_env=env,
        ports=StackPorts(storage=args.storage_port, pubsub=None if missing else args.pubsub_port),
        emulators=missing is None,
    ) as stack:
        if missing:
            print(f"Note: {missing}; without the Pub/Sub emulator, uploads are not delivered by themselves.")
        print("Relay's local stack is up. In another shell:\n")
        exports = {**stack.env(), **({} if missing else {"PUBSUB_PROJECT_ID": demo.PROJECT})}
        for name, value in sorted(exports.items()):
            print(f"  export {name}={shlex.quote(value)}")
        print(f"\n  relay validate my-trigger.json --bucket {demo.TRIGGERS}   # the catalog's and the policy's verdict")
        print(f"  relay trigger my-trigger.json --bucket {demo.TRIGGERS}")
        if not missing:  # without the emulator, `relay publish` would go to the real Pub/Sub
            print(f"  relay publish my-trigger.json --topic {demo.TRIGGER_TOPIC}")
        print("  relay runs\n\n" + stack.summary())
        print(f"policy: {policy.source} (devstack/policy.yaml: what triggers may use)\n\nCtrl-C stops everything.")
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: leave the `with`, which stops everything
            stopped.wait()
    print("Stopped.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
