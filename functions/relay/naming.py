"""Every run key, record path and object URI Relay builds, in one place."""

from __future__ import annotations

import hashlib
import re

# Vertex's pipelineJobId (the run key, as sent): "should be less than 128 characters" (aiplatform v1, create).
MAX_RUN_KEY = 127
RUN_KEY = re.compile(rf"^[a-z][-a-z0-9]{{0,{MAX_RUN_KEY - 1}}}\Z")
RUN_KEY_RULE = f"a run key: a lower-case letter, then up to {MAX_RUN_KEY - 1} lower-case letters, digits or hyphens"
# No "--" in a pipeline name: it separates a tenant from the run key it chose, which derived keys must never look like.
PIPELINE_NAME = re.compile(r"^(?!.*--)(?!.*-\Z)[a-z][-a-z0-9]{0,62}\Z")
PIPELINE_NAME_RULE = (
    "a pipeline name: a lower-case letter, then up to 62 lower-case letters, digits or single hyphens, not ending in -"
)
# Cloud Storage's bucket names (cloud.google.com/storage/docs/buckets#naming; the storage.v1 Discovery document says
# only "The name of the bucket."): 3-63 characters, or up to 222 with dots and at most 63 between them; lower-case
# letters, digits, -, _ and .; a letter or digit first and last. The rules only a new bucket's creation meets (no
# "goog" prefix, no "google", no IP address) are Cloud Storage's to enforce: Relay reads buckets that exist.
_BUCKET_NAME = re.compile(r"^[a-z0-9][-a-z0-9_.]{1,220}[a-z0-9]\Z")
BUCKET_RULE = (
    "a bucket name: 3-63 lower-case letters, digits, -, _ or . (222 with dots, 63 between them), "
    "starting and ending with a letter or digit"
)
# A Google Cloud project id: 6-30 lower-case letters, digits or hyphens, a letter first, no hyphen last.
_PROJECT_ID = r"[a-z][-a-z0-9]{4,28}[a-z0-9]"
PROJECT_ID = re.compile(rf"^{_PROJECT_ID}\Z")
PROJECT_ID_RULE = "a project id: 6-30 lower-case letters, digits or -, starting with a letter, not ending in -"
# Pub/Sub's topic and subscription names, as the pubsub.v1 Discovery document states them for Topic.name and
# Subscription.name (googleapiclient/discovery_cache/documents/pubsub.v1.json, revision 20261027): "must start with
# a letter, and contain only letters ([A-Za-z]), numbers ([0-9]), dashes (-), underscores (_), periods (.), tildes
# (~), plus (+) or percent signs (%). It must be between 3 and 255 characters in length, and it must not start with
# "goog"." (Its path patterns, ^projects/[^/]+/topics/[^/]+$, check only the slashes.) ASCII classes, not \w:
# Python's \w takes any script's letters and digits.
_PUBSUB_NAME = r"(?!goog)[A-Za-z][-A-Za-z0-9_.~+%]{2,254}"
PUBSUB_NAME_RULE = "3-255 letters, digits, -, _, ., ~, + or %, starting with a letter and not with goog"
TOPIC_PATH_RULE = f"projects/PROJECT/topics/TOPIC ({PROJECT_ID_RULE}; a topic name: {PUBSUB_NAME_RULE})"
_PUBSUB_PATH = re.compile(rf"^projects/({_PROJECT_ID})/(topics|subscriptions)/({_PUBSUB_NAME})\Z")
_PUBSUB_NAME_ONLY = re.compile(rf"^{_PUBSUB_NAME}\Z")
_DIGEST_CHARS = 20  # 80 bits: collisions are out of reach for any bucket's lifetime of triggers
POLICY_ENTRY = "policy"  # the catalog's policy.yaml: never a pipeline
UNKNOWN_PIPELINE = "trigger"  # run key prefix for documents whose pipeline could not be read


def is_bucket_name(name: str) -> bool:
    """Cloud Storage's naming rule for buckets (BUCKET_RULE), for the policy, the events and the CLI alike."""
    return bool(_BUCKET_NAME.match(name)) and all(len(label) <= 63 for label in name.split("."))


def is_pubsub_name(name: str) -> bool:
    """A topic's or a subscription's own name (PUBSUB_NAME_RULE), for the policy, the events, the CLI and devstack."""
    return _PUBSUB_NAME_ONLY.match(name) is not None


def split_pubsub_path(text: str) -> tuple[str, str, str] | None:
    """(project, "topics" or "subscriptions", name) of a path Google Cloud can hold; None for anything else."""
    found = _PUBSUB_PATH.match(text)
    return None if found is None else (found[1], found[2], found[3])


def is_topic_path(text: str) -> bool:
    """projects/PROJECT/topics/TOPIC with a project id and a topic name as Google Cloud makes them (TOPIC_PATH_RULE)."""
    parts = split_pubsub_path(text)
    return parts is not None and parts[1] == "topics"


def topic_path(project: str, topic: str) -> str:
    return f"projects/{project}/topics/{topic}"


def subscription_path(project: str, subscription: str) -> str:
    return f"projects/{project}/subscriptions/{subscription}"


def split_owned(text: str) -> tuple[str, str] | None:
    """(owner, name) of `owner/name`, as a Hugging Face repository or a Kaggle dataset is named; None for anything
    else (no owner, no name, or a further slash), which the steps refuse and the policy lets no owner have."""
    owner, _, name = text.partition("/")
    return (owner, name) if owner and name and "/" not in name else None


def object_uri(bucket: str, name: str) -> str:
    return f"gs://{bucket}/{name}"


def object_identity(bucket: str, name: str, generation: int) -> str:
    """The identity of one object version, the same whichever path delivered it."""
    return f"{object_uri(bucket, name)}#{generation}"


def message_identity(topic: str, message_id: str, stamp: str | None = None) -> str:
    """The identity of one published message. `stamp` (its nonce, else its publish time) tells apart two messages
    of one id: the Pub/Sub emulator numbers its messages from 1 again after every restart."""
    identity = f"pubsub:{topic}#{message_id}"
    return f"{identity}@{stamp}" if stamp else identity


def derive_run_key(pipeline: str, identity: str) -> str:
    """`<pipeline>-<digest of identity>`, always matching RUN_KEY: a pipeline name is at most 63 characters."""
    digest = hashlib.sha256(identity.encode()).hexdigest()[:_DIGEST_CHARS]
    prefix = pipeline if PIPELINE_NAME.match(pipeline) else UNKNOWN_PIPELINE
    return f"{prefix}-{digest}"


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


RUNS = "runs"
# A run's records, `runs/<run key>/<name>`: the names they are written under and a listing recognises them by.
LAUNCH = "launch.json"
RESULT = "result.json"
SKIPPED = "skipped.json"
INCOMPLETE = "incomplete.json"
RETRY = "retry.json"
CHAIN = "chain.json"
CHAINED = "chained.json"


def runs_folder(results_uri: str) -> str:
    return join(results_uri, RUNS) + "/"


def listed_run_record(folder: str, uri: str) -> tuple[str, str]:
    """(run key, record name) of a URI a listing of `folder` (runs_folder) gave."""
    key, _, name = uri[len(folder) :].partition("/")
    return key, name


def launch_record(results_uri: str, run_key: str) -> str:
    return join(results_uri, RUNS, run_key, LAUNCH)


def result_record(results_uri: str, run_key: str) -> str:
    return join(results_uri, RUNS, run_key, RESULT)


def skip_record(results_uri: str, run_key: str) -> str:
    """Where a skipped delivery is recorded: beside the runs (the functions may write there), never a run's own."""
    return join(results_uri, RUNS, run_key, SKIPPED)


def incomplete_record(results_uri: str, run_key: str) -> str:
    """Where a set its deadline closed before it was complete is recorded, under the run key it would have had."""
    return join(results_uri, RUNS, run_key, INCOMPLETE)


def retry_record(results_uri: str, run_key: str) -> str:
    """Where a failed run waits for the reconciler to decide on its retry (relay.retries): beside its records."""
    return join(results_uri, RUNS, run_key, RETRY)


def chain_record(results_uri: str, run_key: str) -> str:
    """Where an ended run whose chain goes on waits for its next runs to be started (relay.chain_runs)."""
    return join(results_uri, RUNS, run_key, CHAIN)


def chained_record(results_uri: str, run_key: str) -> str:
    """What an ended run's chain started after it (or why not), once settled: the first's link to the next."""
    return join(results_uri, RUNS, run_key, CHAINED)


def suffixed_key(key: str, suffix: str) -> str:
    """`<key><suffix>` within MAX_RUN_KEY characters: a long key is cut and a digest of it added, so two long keys
    that share a beginning never share a suffixed one (an attempt's key, a chain's next run's)."""
    if len(key) + len(suffix) <= MAX_RUN_KEY:
        return key + suffix
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return f"{key[: MAX_RUN_KEY - len(suffix) - 13].rstrip('-')}-{digest}{suffix}"


def attempt_key(first: str, number: int) -> str:
    """`<first>-attempt-<n>`, within the MAX_RUN_KEY characters of a run key: a long first key is cut and a digest
    of it added, so two long keys that share a beginning never share an attempt's key."""
    return suffixed_key(first, f"-attempt-{number}")


def rejection_record(results_uri: str, run_key: str) -> str:
    return join(results_uri, "rejected", f"{run_key}.json")


def reconcile_cursor(results_uri: str, backend: str) -> str:
    """Where the reconcile ticks of one backend keep their place: apart from every run's records."""
    return join(results_uri, "reconcile", f"{record_name(backend)}.json")


def board_page(results_uri: str, tenant: str | None = None) -> str:
    """The runs board the reconcile ticks refresh: the whole deployment's, or one tenant's page of its own runs."""
    if tenant is None:
        return join(results_uri, "board", "index.html")
    return join(results_uri, "board", "tenants", f"{record_name(tenant)}.html")


def board_refreshed(results_uri: str) -> str:
    """When the runs board was last written: the ticks' one-at-a-time marker, apart from the pages."""
    return join(results_uri, "board", "refreshed.json")


def refusal_record(results_uri: str, run_key: str, run_id: str) -> str:
    """Where a pipeline task records that it refused to run: never a name the functions or a real run write."""
    return join(results_uri, "refused", record_name(run_key), f"{record_name(run_id)}.json")


def direct_result(results_uri: str, run_id: str) -> str:
    """Where an operator's direct run (the policy's direct_runs) records its result: apart from every run key."""
    return join(results_uri, "direct", f"{record_name(run_id)}.json")


_RECORD_NAME = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_.]{0,127}\Z")


def record_name(text: str) -> str:
    """`text` as one object name segment: as it is when plain, else a digest (a run's key or id may be anything)."""
    if _RECORD_NAME.match(text):
        return text
    return "sha256-" + hashlib.sha256(text.encode()).hexdigest()[:32]


def catalog_entry(catalog_uri: str, pipeline: str) -> str:
    return join(catalog_uri, f"{pipeline}.yaml")


def policy_location(policy_uri: str, catalog_uri: str) -> str:
    """The deployment's policy: RELAY_POLICY_URI, else the catalog's policy.yaml."""
    return policy_uri or catalog_entry(catalog_uri, POLICY_ENTRY)


def split_gs_uri(uri: str) -> tuple[str, str]:
    """('bucket', 'path/to/object') from 'gs://bucket/path/to/object'."""
    if not uri.startswith("gs://"):
        raise ValueError(f"expected a gs:// URI, found {uri!r}")
    bucket, _, name = uri[len("gs://") :].partition("/")
    return bucket, name


ABSENCES = "absences"


def absences_folder(results_uri: str) -> str:
    """Where the absence records lie, `absences/<tenant>/<expectation>/<window>.json` (relay.absence)."""
    return join(results_uri, ABSENCES) + "/"


EXPECTATIONS = "expectations"


def arrival_record(results_uri: str, tenant: str, expectation: str, window: str) -> str:
    """Something arrived in this window of the tenant's absence declaration (relay.absence): create-only."""
    return join(results_uri, EXPECTATIONS, tenant, expectation, f"{window}.json")


def absence_record(results_uri: str, tenant: str, expectation: str, window: str) -> str:
    """Nothing arrived in this window (relay.absence): create-only, so it is recorded and alerted once."""
    return join(results_uri, ABSENCES, tenant, expectation, f"{window}.json")


# A route's sets of files (relay.set_store): their folder, and the names of a set's seal (no new object joins it)
# and of its closed list (the objects its run is given).
SETS = "sets"
SET_SEALED = "sealed.json"
SET_CLOSED = "closed.json"
