"""The seed function (seed 002, `hosted_kfp_test`), ported to kfp 2.x and a CloudEvent signature: the bench's baseline.

Per event, exactly what the seed did: log the event's fields, GET an access token from the metadata server, build a
`kfp.Client(host, existing_token=token)` (its constructor calls healthz), compile the pipeline to one fixed file,
`create_experiment` (kfp's get-or-create: a list, and a create the first time), and `run_pipeline` under a timestamp
name with the object's gs:// URI as the parameter. It never reads the trigger file, writes no record and does not
deduplicate: every delivery of an event makes a run.

What the port changes, and why:
- 1st-gen `(data, context)` becomes functions-framework's `@cloud_event`; the fields logged are the same.
- kfp 2.x: `exp.id` is `experiment_id`, packages compile to YAML (not `.tar.gz`), and `ContainerOp` is gone. The
  pipeline is the bench catalog's `echo` (the one Relay launches), so both sides submit the same spec; its one
  required string parameter, `message`, gets the file URI, as the seed's `filename` did.
- The host (a constant in the seed) and the metadata server (metadata.google.internal) come from the environment
  (SEED_KFP_HOST, GCE_METADATA_HOST), so the port talks to the bench's loopback servers. The package path is the
  seed's fixed one, under the temp directory (TMPDIR).
"""

from __future__ import annotations

import datetime
import importlib.util
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import functions_framework
import kfp
import requests
from cloudevents.http import CloudEvent
from kfp import compiler

HOST = os.environ.get("SEED_KFP_HOST", "http://127.0.0.1:8888")
METADATA = os.environ.get("GCE_METADATA_HOST", "metadata.google.internal")
PACKAGE = os.path.join(tempfile.gettempdir(), "sequential.yaml")
ECHO = Path(__file__).resolve().parents[1] / "tests" / "data" / "catalog" / "echo.py"


def _pipeline() -> Any:
    # The seed defined its pipeline in its own module, at import: the same happens here, from the catalog's source.
    spec = importlib.util.spec_from_file_location("seed_echo_pipeline", ECHO)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {ECHO}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.echo


sequential_pipeline = _pipeline()


def get_access_token() -> str:
    url = f"http://{METADATA}/computeMetadata/v1/instance/service-accounts/default/token"
    r = requests.get(url, headers={"Metadata-Flavor": "Google"})
    r.raise_for_status()
    return str(r.json()["access_token"])


@functions_framework.cloud_event  # type: ignore[untyped-decorator]
def hosted_kfp_test(cloud_event: CloudEvent) -> None:
    data = cloud_event.get_data()
    logging.info("Event ID: {}".format(cloud_event["id"]))
    logging.info("Event type: {}".format(cloud_event["type"]))
    logging.info("Data: {}".format(data))  # noqa: UP032
    logging.info("Bucket: {}".format(data["bucket"]))
    logging.info("File: {}".format(data["name"]))
    file_uri = "gs://%s/%s" % (data["bucket"], data["name"])  # noqa: UP031
    logging.info("Using file uri: %s", file_uri)

    logging.info("Metageneration: {}".format(data["metageneration"]))
    logging.info("Created: {}".format(data["timeCreated"]))
    logging.info("Updated: {}".format(data["updated"]))

    token = get_access_token()
    logging.info("attempting to launch pipeline run.")
    ts = int(datetime.datetime.now(datetime.UTC).timestamp() * 100000)
    client = kfp.Client(host=HOST, existing_token=token)
    compiler.Compiler().compile(sequential_pipeline, PACKAGE)
    exp = client.create_experiment(name="gcstriggered")  # this is a 'get or create' op
    res = client.run_pipeline(exp.experiment_id, "sequential_" + str(ts), PACKAGE, params={"message": file_uri})
    logging.info(res)
