"""`make down`: stop the `make up` running in another terminal, as Ctrl-C there would; its state stays.

What the stack stored (records, uploads, baselines, the local runs) is kept in `.relay/up/` for the next `make up`;
`make clean` throws it away.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from devstack import pidfile

REPO = Path(__file__).resolve().parents[1]
WORKDIR = REPO / ".relay" / "up"
PID_FILE = "make-up.pid"
# `make up` gives runs still going a minute to finish before it stops them, then stops the rest.
_WAIT = 120.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=WORKDIR, help="the stack's folder (make up's --workdir)")
    args = parser.parse_args(argv)
    try:
        pid = pidfile.stop(args.workdir / PID_FILE, _WAIT)
    except TimeoutError as error:
        print(f"make down: {error}", file=sys.stderr)
        return 1
    if pid is None:
        print("make down: no `make up` is running; its state, if any, stays in " + str(args.workdir))
    else:
        print(f"make down: stopped `make up` (pid {pid}); its state stays in {args.workdir} (make clean removes it)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
