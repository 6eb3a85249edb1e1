"""Cold start: loading the entry points imports none of the heavy clients; each arrives with its first use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FUNCTIONS = Path(__file__).parents[2] / "functions"
HEAVY = ("kfp", "kubernetes", "google.cloud.storage", "google.cloud.pubsub_v1", "google.auth.compute_engine")

_PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import main
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {"kfp", "kubernetes", "google"})))
"""


def test_loading_main_imports_no_heavy_client():
    completed = subprocess.run(
        [sys.executable, "-c", _PROBE, str(FUNCTIONS)], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(json.loads(completed.stdout))
    assert not [module for module in HEAVY if module in loaded], sorted(loaded)
