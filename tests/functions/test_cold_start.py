"""Cold start: loading the entry points imports none of the heavy clients, and a first KFP launch imports no more:
the function talks to KFP, Cloud Storage and the metadata server over urllib3 alone, without requests. Nor do they
load Relay's own modules that only sets, `at_cap: supersede`, expectations, actions, the tick or the board need."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from tests.conftest import CATALOG
from tests.servers.kfp import KfpApiServer
from tests.servers.metadata import MetadataServer

FUNCTIONS = Path(__file__).parents[2] / "functions"
HEAVY = ("kfp", "kubernetes", "google.cloud.storage", "google.cloud.pubsub_v1", "google.auth.compute_engine")
# What the function's own modules import nothing of: google-auth is only for key files and gcloud logins.
NOT_ON_THE_LAUNCH_PATH = (*HEAVY, "google.auth", "google.api_core", "kfp_server_api", "requests")
# Each loaded where it is needed (service, absence, the policy reader, main's tick and actions), never by a trigger's
# cold start, which has no use for it: its dataclasses and patterns would cost every new instance import time.
ONLY_WHEN_NEEDED = (
    "relay.lifecycle",
    "relay.sets",
    "relay.set_store",
    "relay.supersede",
    "relay.expectations",
    "relay.chain_runs",
    "relay.cursor",
    "relay.status",
    "relay.audit_trail",
    "relay.audit_verify",
    "relay.board",
    "relay.board_page",
    "relay.board_store",
    "relay.html",
)

_TOPS = '{"kfp", "kubernetes", "google", "kfp_server_api", "requests", "urllib3", "relay"}'
_LOADED = f'sorted(m for m in sys.modules if m.split(".")[0] in {_TOPS})'
_IMPORT = f"""
import json, sys
sys.path.insert(0, sys.argv[1])
import main
import relay.adapters.gcs, relay.adapters.http, relay.adapters.kfp_backend, relay.adapters.tokens
import relay.adapters.vertex_backend
print(json.dumps({_LOADED}))
"""
_FIRST_EVENT = f"""
import json, sys
from functions_framework import create_app
client = create_app("on_message_published", sys.argv[1] + "/main.py", "cloudevent").test_client()
response = client.post("/", headers=json.loads(sys.argv[2]), data=sys.argv[3])
print(json.dumps({{"status": response.status_code, "loaded": {_LOADED}}}))
"""


def heavy(loaded: list[str], names: tuple[str, ...]) -> list[str]:
    return [m for m in loaded if any(m == name or m.startswith(name + ".") for name in names)]


def test_loading_main_and_the_function_adapters_imports_no_heavy_client():
    completed = subprocess.run(
        [sys.executable, "-c", _IMPORT, str(FUNCTIONS)], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = json.loads(completed.stdout)
    assert heavy(loaded, NOT_ON_THE_LAUNCH_PATH) == [], loaded
    assert heavy(loaded, ONLY_WHEN_NEEDED) == [], loaded


def test_a_first_kfp_launch_imports_no_heavy_client(tmp_path: Path):
    trigger = {"pipeline": "echo", "parameters": {"message": "cold"}}
    message = {"data": base64.b64encode(json.dumps(trigger).encode()).decode(), "attributes": {"a": "b"}}
    event = CloudEvent(
        {
            "id": "1",
            "type": "google.cloud.pubsub.topic.v1.messagePublished",
            "source": "//pubsub.googleapis.com/projects/relay-test/topics/relay-triggers",
            "time": datetime.now(UTC).isoformat(),
        },
        {"subscription": "projects/relay-test/subscriptions/s", "message": {**message, "messageId": "1"}},
    )
    headers, body = to_binary(event)
    with MetadataServer() as metadata, KfpApiServer(token_check=metadata.is_valid) as kfp:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "STORAGE_EMULATOR"))},
            **metadata.env(),
            "PYTHONPATH": str(FUNCTIONS),
            "HOME": str(tmp_path),
            "RELAY_BACKEND": "kfp",
            "RELAY_KFP_HOST": kfp.url,
            "RELAY_AUTH": "metadata",
            "RELAY_RESULTS_URI": str(tmp_path / "results"),
            "RELAY_CATALOG_URI": str(CATALOG),
        }
        completed = subprocess.run(
            [sys.executable, "-c", _FIRST_EVENT, str(FUNCTIONS), json.dumps(dict(headers)), body.decode()],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert completed.returncode == 0, completed.stderr
        result = json.loads(completed.stdout.strip().splitlines()[-1])
        assert result["status"] == 200 and len(kfp.runs) == 1 and metadata.token_fetches == 1, completed.stdout
    assert heavy(result["loaded"], NOT_ON_THE_LAUNCH_PATH) == [], result["loaded"]
    assert heavy(result["loaded"], ONLY_WHEN_NEEDED) == [], result["loaded"]
