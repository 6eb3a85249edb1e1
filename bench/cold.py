"""One cold start, in the fresh process this module runs in: `python -m bench.cold SOURCE TARGET EVENT_JSON`.

It imports functions-framework (the host, the same for every function), then times what a new instance of the
function pays: `functions_framework.create_app()` (which imports the function's module) and its first event, a
binary-mode CloudEvent posted through the app's WSGI test client. Prints one JSON line: milliseconds for the
functions-framework import, the module import, the first event and the two together, the event's HTTP status, and
this process's own peak resident memory (VmHWM).

Only the standard library is imported before the clock starts.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def peak_rss_mb() -> float:
    """This process's own peak resident set (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str]) -> int:
    source, target, event = argv[0], argv[1], json.loads(argv[2])
    import functions_framework

    framework = time.perf_counter()
    app = functions_framework.create_app(target, source, "cloudevent")
    imported = time.perf_counter()
    response = app.test_client().post("/", headers=event["headers"], data=json.dumps(event["data"]).encode())
    done = time.perf_counter()
    figures = {
        "framework_ms": (framework - STARTED) * 1000,
        "import_ms": (imported - framework) * 1000,
        "first_event_ms": (done - imported) * 1000,
        "cold_ms": (done - framework) * 1000,
        "status": response.status_code,
        "peak_rss_mb": peak_rss_mb(),
    }
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
