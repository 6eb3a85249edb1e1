#!/usr/bin/env bash
# Deploy Relay on Google Cloud with gcloud, or tear it down. Every step looks before it creates, and IAM bindings
# and `gcloud functions deploy` are idempotent by nature, so a second run changes nothing. `--dry-run` prints each
# gcloud command instead of running it; tests/infra feeds those lines to gcloud's own argument parser and compares
# them with what infra/terraform declares, so the two stay one system.
set -euo pipefail

# Associative arrays, mapfile and empty "${array[@]}" under set -u: macOS's /bin/bash 3.2 has none of them.
if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4))); then
  printf 'deploy.sh: needs bash 4.4 or newer (found %s); on macOS: brew install bash\n' "$BASH_VERSION" >&2
  exit 2
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
  cat <<'EOF'
Usage: infra/deploy.sh --project PROJECT [options]

Deploys the buckets, topics, service accounts, role bindings, steps image, catalog and policy, the four functions
and the reconcile schedule.

Where:
  --project ID              Google Cloud project (env GOOGLE_CLOUD_PROJECT, then CLOUDSDK_CORE_PROJECT)
  --region REGION           functions, buckets, Artifact Registry and Vertex location (env GOOGLE_CLOUD_REGION;
                            europe-west1)
  --prefix NAME             prefix of every resource name (env DEPLOY_PREFIX; relay)
  --version V               image tag and catalog folder (env DEPLOY_VERSION; git rev-parse --short=12 HEAD)
What Relay runs with:
  --backend vertex|kfp      RELAY_BACKEND (env RELAY_BACKEND; vertex)
  --env RELAY_NAME=VALUE    another function setting (repeatable): RELAY_AUTH, RELAY_KFP_HOST, RELAY_KFP_AUDIENCE,
                            RELAY_KFP_EXPERIMENT, RELAY_VERTEX_LOCATION, RELAY_VERTEX_ENDPOINT, RELAY_MAX_EVENT_AGE
                            or RELAY_CLAIM_LEASE; also taken from the environment when set there; and the
                            runs board's RELAY_DEPLOYMENT_NAME and RELAY_BOARD_EVERY, the audit trail's RELAY_AUDIT_AGE
  --secret ENV=SECRET[:VERSION]
                            a Secret Manager secret the functions get as ENV (repeatable; env DEPLOY_SECRETS,
                            comma-separated), e.g. RELAY_STATIC_TOKEN=kfp-token:latest; the secret must exist
  --step-secret SECRET      a secret that triggers may name as secret://SECRET for the pipeline steps
                            (repeatable; env DEPLOY_STEP_SECRETS, comma-separated)
  --notify-bucket BUCKET    route finalized objects of an existing data bucket to the trigger topic
                            (env DEPLOY_NOTIFY_BUCKET); the policy must list BUCKET under notifications for
                            projects/PROJECT/topics/PREFIX-triggers (a tenant's topic), else Relay refuses them
  --notify-prefix PREFIX    ... only those under PREFIX (env DEPLOY_NOTIFY_PREFIX)
  --policy FILE             the deployment policy, published as policy.yaml beside the catalog, its task resources
                            compiled into it (env DEPLOY_POLICY); required unless --catalog-uri names a catalog
                            published with its policy elsewhere
  --records-retention Nd    keep deleted or replaced records recoverable for N days, 7 to 90 (the results bucket's
                            soft delete; env DEPLOY_RECORDS_RETENTION); left out, the bucket keeps what it has
  --audit-retention Nd      how long each audit trail entry is kept, unremovable even by an admin once locked (the
                            audit bucket's retention policy; env DEPLOY_AUDIT_RETENTION; 365d)
  --lock-audit-retention    lock that retention policy: irreversible, the bucket can then not be deleted, nor
                            the period shortened, until its last entry is that old (a lab's quality unit asks it)
  --reconcile-schedule CRON when Cloud Scheduler asks on_schedule to reconcile launched runs with their backend
                            (env DEPLOY_RECONCILE_SCHEDULE; "*/5 * * * *", UTC); set when the job is created
Metrics and alerts (infra/monitoring; always deployed, notifying only the channels named):
  --alert-channel CHANNEL   a Cloud Monitoring notification channel the alerts notify, as
                            projects/PROJECT/notificationChannels/ID (repeatable; env DEPLOY_ALERT_CHANNELS,
                            comma-separated)
  --alert-rejections N      alert when more than N triggers of one tenant are rejected in 5 minutes
                            (env DEPLOY_ALERT_REJECTIONS; 10)
  --alert-failures N        alert when attempt N or later of a run fails (env DEPLOY_ALERT_FAILURES; 3)
Already built elsewhere (Cloud Build passes both):
  --image URI               the steps image; otherwise built from pipelines/Dockerfile with Cloud Build
  --catalog-dir DIR         a catalog compiled with that image, --policy FILE and --policy-uri gs://PROJECT-PREFIX-
                            catalog/VERSION/policy.yaml, to publish to gs://PROJECT-PREFIX-catalog/VERSION
                            (otherwise compiled here: relay compile [PIPELINE...] --out DIR)
  --pipeline PIPELINE       a pipeline of your own for the catalog compiled here, as relay compile takes it: a .py
                            file or module with a @dsl.pipeline, or a compiled spec .yaml (repeatable)
  --catalog-uri gs://...    a catalog published elsewhere, its policy.yaml beside it: RELAY_CATALOG_URI, nothing is
                            published
Function shape:
  --runtime python311 --memory 512Mi --cpu 1 --concurrency 8 --max-instances 10 --timeout 540s
  --max-delivery-attempts 15   deliveries before an event goes to the dead-letter topic (5-100)
  --build-service-account EMAIL  the account Cloud Build uses for the function builds (default: the project's)
Modes:
  --dry-run                 print every command, run none (values found at run time show as UPPER_CASE)
  --teardown                delete what a deploy created; buckets and their data stay unless --delete-buckets
  --delete-buckets          with --teardown: delete the buckets and every object version in them
  --dead-letter-only        only attach the dead-letter topic to the functions' Eventarc subscriptions
                            (what infra/terraform runs after it deploys the functions)
  --stage-only DIR          only copy what Cloud Functions uploads into DIR, then stop
  --stage DIR               stage the upload into DIR (kept) instead of a temporary folder
  --project-number N        the project's number, instead of looking it up
EOF
}

# --- settings -------------------------------------------------------------------------------------------------

PROJECT=${GOOGLE_CLOUD_PROJECT:-${CLOUDSDK_CORE_PROJECT:-}}
REGION=${GOOGLE_CLOUD_REGION:-europe-west1}
PREFIX=${DEPLOY_PREFIX:-relay}
VERSION=${DEPLOY_VERSION:-}
BACKEND=${RELAY_BACKEND:-vertex}
IMAGE=${DEPLOY_IMAGE:-}
CATALOG_URI=${DEPLOY_CATALOG_URI:-}
CATALOG_DIR=${DEPLOY_CATALOG_DIR:-}
PIPELINES=()
NOTIFY_BUCKET=${DEPLOY_NOTIFY_BUCKET:-}
NOTIFY_PREFIX=${DEPLOY_NOTIFY_PREFIX:-}
POLICY=${DEPLOY_POLICY:-}
RECORDS_RETENTION=${DEPLOY_RECORDS_RETENTION:-}
AUDIT_RETENTION=${DEPLOY_AUDIT_RETENTION:-365d}
LOCK_AUDIT_RETENTION=false
# Every five minutes: a run that ended without writing its own result is recorded within that long.
RECONCILE_SCHEDULE=${DEPLOY_RECONCILE_SCHEDULE:-*/5 * * * *}
RUNTIME=python311
MEMORY=512Mi
CPU=1
# Relay's adapters lock what is not thread-safe (kfp.Client, token refresh), so one instance may take several
# events at once; more than one needs a whole vCPU.
CONCURRENCY=8
MAX_INSTANCES=10
# Event-driven functions are cut off at 540 s; Relay submits and returns, it never waits for the run.
TIMEOUT=540s
# Retries back off from 10 s to 600 s: 15 deliveries take about an hour and a half, past RELAY_MAX_EVENT_AGE's
# default hour, so an event normally ends as a stale_event record first; the dead-letter topic keeps the rest.
MAX_DELIVERY_ATTEMPTS=${DEPLOY_MAX_DELIVERY_ATTEMPTS:-15}
BUILD_SERVICE_ACCOUNT=${DEPLOY_BUILD_SERVICE_ACCOUNT:-}
PROJECT_NUMBER=${DEPLOY_PROJECT_NUMBER:-}
DRY_RUN=false
TEARDOWN=false
DELETE_BUCKETS=false
DEAD_LETTER_ONLY=false
STAGE_ONLY=false
STAGE=
ALERT_REJECTIONS=${DEPLOY_ALERT_REJECTIONS:-10}
ALERT_FAILURES=${DEPLOY_ALERT_FAILURES:-3}
declare -a FUNCTION_SECRETS=() STEP_SECRETS=() EXTRA_ENV=() ALERT_CHANNELS=()
IFS=',' read -r -a FUNCTION_SECRETS <<<"${DEPLOY_SECRETS:-}"
IFS=',' read -r -a ALERT_CHANNELS <<<"${DEPLOY_ALERT_CHANNELS:-}"
IFS=',' read -r -a STEP_SECRETS <<<"${DEPLOY_STEP_SECRETS:-}"

# Function settings a deployment may choose. The rest are derived from what this script creates, so that the
# role bindings always match them; RELAY_STATIC_TOKEN is a credential (--secret only); and the local backend's
# folder and key files mean nothing on Google Cloud, where the functions are their service account.
SETTABLE=(RELAY_AUTH RELAY_KFP_HOST RELAY_KFP_AUDIENCE RELAY_KFP_EXPERIMENT RELAY_VERTEX_LOCATION
  RELAY_VERTEX_ENDPOINT RELAY_MAX_EVENT_AGE RELAY_CLAIM_LEASE
  RELAY_DEPLOYMENT_NAME RELAY_BOARD_EVERY RELAY_AUDIT_AGE)
DERIVED=(RELAY_BACKEND RELAY_RESULTS_URI RELAY_CATALOG_URI RELAY_POLICY_URI RELAY_NOTIFY_TOPIC RELAY_VERTEX_PROJECT
  RELAY_VERTEX_PIPELINE_ROOT RELAY_VERTEX_SERVICE_ACCOUNT RELAY_AUDIT_URI)
SECRET_ONLY=(RELAY_STATIC_TOKEN)
LOCAL_ONLY=(RELAY_LOCAL_ROOT RELAY_CREDENTIALS_FILE)
FROM_ENVIRONMENT=()
for name in "${SETTABLE[@]}"; do
  if [[ -n ${!name:-} ]]; then
    EXTRA_ENV+=("$name=${!name}")
    FROM_ENVIRONMENT+=("$name")
  fi
done

die() {
  printf 'deploy.sh: %s\n' "$*" >&2
  exit 2
}

need_value() {
  [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value"
}

while [[ $# -gt 0 ]]; do
  arg=$1
  if [[ $arg == --*=* ]]; then
    set -- "${arg%%=*}" "${arg#*=}" "${@:2}"
    arg=$1
  fi
  case $arg in
    -h | --help) usage; exit 0 ;;
    --dry-run) DRY_RUN=true; shift; continue ;;
    --teardown) TEARDOWN=true; shift; continue ;;
    --delete-buckets) DELETE_BUCKETS=true; shift; continue ;;
    --dead-letter-only) DEAD_LETTER_ONLY=true; shift; continue ;;
    --lock-audit-retention) LOCK_AUDIT_RETENTION=true; shift; continue ;;
  esac
  case $arg in
    --project | --region | --prefix | --version | --backend | --env | --secret | --step-secret | --notify-bucket | \
      --notify-prefix | --image | --catalog-uri | --catalog-dir | --runtime | --memory | --cpu | --concurrency | \
      --max-instances | --timeout | --max-delivery-attempts | --build-service-account | --project-number | --stage | \
      --stage-only | --policy | --records-retention | --audit-retention | --reconcile-schedule | --pipeline | --alert-channel | \
      --alert-rejections | --alert-failures) need_value "$@" ;;
    *) die "unknown option $arg (--help lists them)" ;;
  esac
  case $arg in
    --project) PROJECT=$2 ;;
    --region) REGION=$2 ;;
    --prefix) PREFIX=$2 ;;
    --version) VERSION=$2 ;;
    --backend) BACKEND=$2 ;;
    --env) EXTRA_ENV+=("$2") ;;
    --secret) FUNCTION_SECRETS+=("$2") ;;
    --step-secret) STEP_SECRETS+=("$2") ;;
    --notify-bucket) NOTIFY_BUCKET=$2 ;;
    --notify-prefix) NOTIFY_PREFIX=$2 ;;
    --image) IMAGE=$2 ;;
    --catalog-uri) CATALOG_URI=${2%/} ;;
    --catalog-dir) CATALOG_DIR=$2 ;;
    --pipeline) PIPELINES+=("$2") ;;
    --runtime) RUNTIME=$2 ;;
    --memory) MEMORY=$2 ;;
    --cpu) CPU=$2 ;;
    --concurrency) CONCURRENCY=$2 ;;
    --max-instances) MAX_INSTANCES=$2 ;;
    --timeout) TIMEOUT=$2 ;;
    --max-delivery-attempts) MAX_DELIVERY_ATTEMPTS=$2 ;;
    --build-service-account) BUILD_SERVICE_ACCOUNT=$2 ;;
    --project-number) PROJECT_NUMBER=$2 ;;
    --stage) STAGE=$2 ;;
    --stage-only) STAGE=$2; STAGE_ONLY=true ;;
    --policy) POLICY=$2 ;;
    --records-retention) RECORDS_RETENTION=$2 ;;
    --audit-retention) AUDIT_RETENTION=$2 ;;
    --reconcile-schedule) RECONCILE_SCHEDULE=$2 ;;
    --alert-channel) ALERT_CHANNELS+=("$2") ;;
    --alert-rejections) ALERT_REJECTIONS=$2 ;;
    --alert-failures) ALERT_FAILURES=$2 ;;
  esac
  shift 2
done

# --- printing and running -------------------------------------------------------------------------------------

# One command per line, quoted only where the shell needs it, so a person can read it and a test can parse it.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

show() {
  local line="" arg
  for arg in "$@"; do line+="${line:+ }$(quote "$arg")"; done
  printf '%s\n' "$line"
}

log() {
  printf '%s\n' "$*" >&2
}

run() {
  if $DRY_RUN; then
    show "$@"
  else
    log "+ $(show "$@")"
    "$@"
  fi
}

# IAM on a service account or bucket created a moment ago can fail until the account has propagated.
run_retrying() {
  if $DRY_RUN; then
    show "$@"
    return
  fi
  local attempt
  for attempt in 1 2 3 4 5; do
    log "+ $(show "$@")"
    if "$@"; then return 0; fi
    [[ $attempt -lt 5 ]] && sleep 10
  done
  return 1
}

# Teardown goes on when something is already gone.
run_tolerant() {
  if $DRY_RUN; then
    show "$@"
  else
    log "+ $(show "$@")"
    "$@" || log "  (went on: the command above failed, most likely because there was nothing to remove)"
  fi
}

# ensure PROBE... -- ACTION...: run ACTION unless PROBE succeeds (describe-or-create), printed as `PROBE || ACTION`.
ensure() {
  local -a probe=()
  while [[ $1 != -- ]]; do probe+=("$1"); shift; done
  shift
  if $DRY_RUN; then
    printf '%s || %s\n' "$(show "${probe[@]}")" "$(show "$@")"
  elif "${probe[@]}" >/dev/null 2>&1; then
    log "= $(show "${probe[@]}"): exists"
  else
    log "+ $(show "$@")"
    "$@"
  fi
}

# if_exists PROBE... -- ACTION...: run ACTION only when PROBE succeeds (describe-then-delete), printed `PROBE && ACTION`.
if_exists() {
  local -a probe=()
  while [[ $1 != -- ]]; do probe+=("$1"); shift; done
  shift
  if $DRY_RUN; then
    printf '%s && %s\n' "$(show "${probe[@]}")" "$(show "$@")"
  elif "${probe[@]}" >/dev/null 2>&1; then
    log "+ $(show "$@")"
    "$@"
  else
    log "= $(show "${probe[@]}"): already gone"
  fi
}

# lookup VAR PLACEHOLDER CMD...: VAR becomes CMD's output; in a dry run, the placeholder.
lookup() {
  local var=$1 placeholder=$2 value
  shift 2
  if $DRY_RUN; then
    show "$@"
    value=$placeholder
  else
    log "+ $(show "$@")"
    value=$("$@")
  fi
  printf -v "$var" '%s' "$value"
}

# --- validation -----------------------------------------------------------------------------------------------

[[ $PREFIX =~ ^[a-z][a-z0-9-]{1,13}[a-z0-9]$ ]] ||
  die "--prefix: expected 3-15 lower-case letters, digits or dashes (service account ids are PREFIX-functions), found '$PREFIX'"

# What Cloud Functions uploads: functions/ as it is in the repository, minus what Python leaves behind.
stage_functions() {
  local dest=$1
  if $DRY_RUN; then
    show cp -R "$ROOT/functions/." "$dest"
    show find "$dest" '(' -name __pycache__ -o -name '*.egg-info' ')' -prune -exec rm -rf '{}' +
    return
  fi
  rm -rf "$dest"
  mkdir -p "$dest"
  cp -R "$ROOT/functions/." "$dest"
  find "$dest" \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +
  # gcloud refuses a python --source without both at its top level (source_util.py); fail here, before uploading.
  [[ -f $dest/main.py && -f $dest/requirements.txt ]] || die "$dest lacks main.py or requirements.txt"
}

if $STAGE_ONLY; then
  stage_functions "$STAGE"
  exit 0
fi

[[ -n $PROJECT ]] || die "--project (or GOOGLE_CLOUD_PROJECT) is required"
[[ $PROJECT =~ ^[a-z][-a-z0-9]{4,28}[a-z0-9]$ ]] || die "--project: expected a project id, found '$PROJECT'"
[[ $BACKEND == vertex || $BACKEND == kfp ]] ||
  die "--backend: expected vertex or kfp (the local backend runs on this machine only), found '$BACKEND'"
if ! [[ $MAX_DELIVERY_ATTEMPTS =~ ^[0-9]+$ ]] || ((MAX_DELIVERY_ATTEMPTS < 5 || MAX_DELIVERY_ATTEMPTS > 100)); then
  die "--max-delivery-attempts: expected 5 to 100 (Pub/Sub's bounds), found '$MAX_DELIVERY_ATTEMPTS'"
fi
if [[ -n $NOTIFY_PREFIX && -z $NOTIFY_BUCKET ]]; then die "--notify-prefix needs --notify-bucket"; fi
if [[ -n $PROJECT_NUMBER && ! $PROJECT_NUMBER =~ ^[0-9]+$ ]]; then die "--project-number: expected digits, found '$PROJECT_NUMBER'"; fi
if [[ -n $CATALOG_DIR && -n $CATALOG_URI ]]; then die "--catalog-dir publishes a catalog, --catalog-uri names one: not both"; fi
if ((${#PIPELINES[@]})) && [[ -n $CATALOG_DIR || -n $CATALOG_URI ]]; then
  die "--pipeline joins the catalog compiled here; --catalog-dir and --catalog-uri name one compiled elsewhere: not both"
fi
if [[ -n $POLICY && -n $CATALOG_URI ]]; then
  die "--policy is published beside the catalog this script publishes; --catalog-uri names one published with its own: not both"
fi
if [[ -n $POLICY && ! -f $POLICY ]]; then die "--policy: no file $POLICY"; fi
# Soft delete, not a retention policy or a default event-based hold: those refuse every overwrite for the period,
# and records are overwritten generation-matched (launch.json launching -> launched, the ratchet's baseline).
if [[ -n $RECORDS_RETENTION ]] &&
  ! { [[ $RECORDS_RETENTION =~ ^([0-9]{1,3})d$ ]] && ((10#${BASH_REMATCH[1]} >= 7 && 10#${BASH_REMATCH[1]} <= 90)); }; then
  die "--records-retention: expected 7d to 90d (Cloud Storage's soft delete bounds), found '$RECORDS_RETENTION'"
fi
# The audit trail is only ever created in: a retention policy holds every entry, which records could not bear.
if ! { [[ $AUDIT_RETENTION =~ ^([0-9]{1,5})d$ ]] && ((10#${BASH_REMATCH[1]} >= 1 && 10#${BASH_REMATCH[1]} <= 36500)); }; then
  die "--audit-retention: expected 1d to 36500d (Cloud Storage's retention period bounds, in days), found '$AUDIT_RETENTION'"
fi

# --- names: infra/terraform/main.tf builds the same ones ------------------------------------------------------

TRIGGERS_BUCKET=$PROJECT-$PREFIX-triggers
RESULTS_BUCKET=$PROJECT-$PREFIX-results
PIPELINE_ROOT_BUCKET=$PROJECT-$PREFIX-pipeline-root
# The catalog and the policy: written by the deployer only, read by the functions and the steps.
CATALOG_BUCKET=$PROJECT-$PREFIX-catalog
# The audit trail (relay.audit): created in by the functions and the steps, never replaced, kept by retention.
AUDIT_BUCKET=$PROJECT-$PREFIX-audit
TRIGGERS_TOPIC=$PREFIX-triggers
NOTIFICATIONS_TOPIC=$PREFIX-notifications
DEAD_LETTER_TOPIC=$PREFIX-dead-letter
DEAD_LETTER_SUBSCRIPTION=$PREFIX-dead-letter
# Cloud Scheduler publishes a tick here every few minutes; on_schedule reconciles the records on each.
RECONCILE_TOPIC=$PREFIX-reconcile
RECONCILE_JOB=$PREFIX-reconcile
REPOSITORY=$PREFIX
FUNCTIONS_SA=$PREFIX-functions@$PROJECT.iam.gserviceaccount.com
TRIGGER_SA=$PREFIX-trigger@$PROJECT.iam.gserviceaccount.com
PIPELINES_SA=$PREFIX-pipelines@$PROJECT.iam.gserviceaccount.com
OBJECT_FUNCTION=$PREFIX-on-object-finalized
MESSAGE_FUNCTION=$PREFIX-on-message-published
SCHEDULE_FUNCTION=$PREFIX-on-schedule
ENDED_FUNCTION=$PREFIX-on-run-ended
BUCKETS=("$TRIGGERS_BUCKET" "$RESULTS_BUCKET" "$PIPELINE_ROOT_BUCKET" "$CATALOG_BUCKET" "$AUDIT_BUCKET")
for bucket in "${BUCKETS[@]}"; do
  ((${#bucket} <= 63)) || die "bucket name $bucket is longer than 63 characters: choose a shorter --prefix"
done

needs_version() {
  if [[ -z $VERSION ]]; then
    VERSION=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null) ||
      die "--version is required outside a git checkout"
  fi
}
if [[ -z $IMAGE ]] && ! $TEARDOWN && ! $DEAD_LETTER_ONLY; then
  needs_version
  IMAGE=$REGION-docker.pkg.dev/$PROJECT/$REPOSITORY/steps:$VERSION
  BUILD_IMAGE=true
else
  BUILD_IMAGE=false
fi
if [[ -z $CATALOG_URI ]] && ! $TEARDOWN && ! $DEAD_LETTER_ONLY; then
  needs_version
  CATALOG_URI=gs://$CATALOG_BUCKET/$VERSION
  PUBLISH_CATALOG=true
  [[ -n $POLICY ]] || die "--policy is required: the catalog is published with the deployment policy beside it"
else
  PUBLISH_CATALOG=false
fi
# The steps know it from the catalog (compiled with --policy-uri), the functions from RELAY_POLICY_URI.
POLICY_URI=$CATALOG_URI/policy.yaml

function_env() {
  local -A env=(
    [RELAY_BACKEND]=$BACKEND
    [RELAY_RESULTS_URI]=gs://$RESULTS_BUCKET
    [RELAY_CATALOG_URI]=$CATALOG_URI
    [RELAY_POLICY_URI]=$POLICY_URI
    [RELAY_NOTIFY_TOPIC]=projects/$PROJECT/topics/$NOTIFICATIONS_TOPIC
    [RELAY_AUDIT_URI]=gs://$AUDIT_BUCKET
  )
  if [[ $BACKEND == vertex ]]; then
    env[RELAY_VERTEX_PROJECT]=$PROJECT
    env[RELAY_VERTEX_LOCATION]=$REGION
    env[RELAY_VERTEX_PIPELINE_ROOT]=gs://$PIPELINE_ROOT_BUCKET
    env[RELAY_VERTEX_SERVICE_ACCOUNT]=$PIPELINES_SA
  fi
  local pair name value joined="" known settable secret derived local_only
  for pair in "${EXTRA_ENV[@]}"; do
    [[ $pair == RELAY_?*=* ]] || die "--env: expected RELAY_NAME=VALUE, found '$pair'"
    name=${pair%%=*}
    value=${pair#*=}
    known=false
    for settable in "${SETTABLE[@]}"; do [[ $name == "$settable" ]] && known=true; done
    for secret in "${SECRET_ONLY[@]}"; do
      [[ $name == "$secret" ]] && die "$name is a credential: pass it as --secret $name=SECRET:latest"
    done
    for derived in "${DERIVED[@]}"; do
      [[ $name == "$derived" ]] && die "$name follows from this deployment's resources and cannot be set"
    done
    for local_only in "${LOCAL_ONLY[@]}"; do
      [[ $name == "$local_only" ]] && die "$name is for running Relay on one machine, not on Google Cloud"
    done
    $known || die "--env: $name is not a Relay function setting (docs/reference.md, Configuration)"
    env[$name]=$value
  done
  for name in $(printf '%s\n' "${!env[@]}" | sort); do
    value=${env[$name]}
    # gcloud splits --set-env-vars on commas; no Relay setting needs one.
    [[ $value != *,* ]] || die "$name: a value with a comma cannot be passed to --set-env-vars: '$value'"
    joined+="${joined:+,}$name=$value"
  done
  printf '%s' "$joined"
}

secret_id() { # ENV=SECRET:VERSION -> SECRET
  local ref=${1#*=}
  printf '%s' "${ref%%:*}"
}

# Secrets become environment variables (as in infra/terraform); a version left out means the latest one.
for i in "${!FUNCTION_SECRETS[@]}"; do
  spec=${FUNCTION_SECRETS[$i]}
  [[ $spec =~ ^[A-Z_][A-Z0-9_]*=[A-Za-z0-9_-]+(:[A-Za-z0-9]+)?$ ]] ||
    die "--secret: expected ENV=SECRET[:VERSION], found '$spec'"
  [[ $spec == *:* ]] || FUNCTION_SECRETS[i]=$spec:latest
done
for secret in "${STEP_SECRETS[@]}"; do
  [[ $secret =~ ^[A-Za-z0-9_-]+$ ]] || die "--step-secret: expected a secret id, found '$secret'"
done
for channel in "${ALERT_CHANNELS[@]}"; do
  [[ $channel =~ ^projects/[a-z][-a-z0-9]{4,28}[a-z0-9]/notificationChannels/[0-9]+$ ]] ||
    die "--alert-channel: expected projects/PROJECT/notificationChannels/ID, found '$channel'"
done
[[ $ALERT_REJECTIONS =~ ^[1-9][0-9]*$ ]] || die "--alert-rejections: expected a whole number of 1 or more, found '$ALERT_REJECTIONS'"
[[ $ALERT_FAILURES =~ ^([2-9]|[1-9][0-9]+)$ ]] || die "--alert-failures: expected a whole number of 2 or more, found '$ALERT_FAILURES'"

# --- preflight ------------------------------------------------------------------------------------------------

# The same Python compiles the catalog and runs the preflight: PYTHON, else the repository's own environment if it
# runs here (a .venv made in another image, as Cloud Build's, does not), else python3; the preflight needs PyYAML.
PYTHON_BIN=${PYTHON:-}
if [[ -z $PYTHON_BIN ]]; then
  PYTHON_BIN=python3
  if [[ -x $ROOT/.venv/bin/python ]] && "$ROOT/.venv/bin/python" -c 'import yaml' 2>/dev/null; then
    PYTHON_BIN=$ROOT/.venv/bin/python
  fi
fi

# relaycli/preflight.py, beside the policy reader it must agree with (infra/terraform reads the same during plan):
# the policy parses, the settings are complete, the catalog names this policy, every bound secret is granted, the
# notify bucket is wired in the policy. It only reads files, so it runs in a dry run too; `--next-steps` prints what
# to export and try once deployed.
preflight_command() {
  local -a cmd=(env "PYTHONPATH=$ROOT:$ROOT/functions" "$PYTHON_BIN" -m relaycli.preflight
    "--trigger-bucket=$TRIGGERS_BUCKET" "--trigger-topic=projects/$PROJECT/topics/$TRIGGERS_TOPIC"
    "--pipelines-account=$PIPELINES_SA")
  local pair spec secret
  local -a pairs=()
  IFS=',' read -r -a pairs <<<"$ENV_VARS"
  for pair in "${pairs[@]}"; do cmd+=("--env=$pair"); done
  for spec in "${FUNCTION_SECRETS[@]}"; do cmd+=("--secret=$spec"); done
  for secret in "${STEP_SECRETS[@]}"; do cmd+=("--step-secret=$secret"); done
  if [[ -n $POLICY ]]; then cmd+=("--policy=$POLICY"); fi
  if [[ -n $CATALOG_DIR ]]; then cmd+=("--catalog-dir=$CATALOG_DIR"); fi
  if [[ -n $NOTIFY_BUCKET ]]; then cmd+=("--notify-bucket=$NOTIFY_BUCKET"); fi
  "${cmd[@]}" "$@"
}

preflight() {
  local status=0
  preflight_command >&2 || status=$?
  if ((status != 0)); then
    log "deploy.sh: stopped by the preflight before changing anything (exit $status): fix what it lists above"
    exit 2
  fi
}

next_steps() {
  if $DRY_RUN; then
    printf '\n# next steps, once this deploy has run:\n'
    preflight_command --next-steps | while IFS= read -r line; do printf '# %s\n' "$line"; done
  else
    log ""
    log "Next steps:"
    preflight_command --next-steps >&2
  fi
}

# --- resources ------------------------------------------------------------------------------------------------

services() {
  local -a apis=(cloudfunctions.googleapis.com run.googleapis.com eventarc.googleapis.com pubsub.googleapis.com
    storage.googleapis.com cloudbuild.googleapis.com artifactregistry.googleapis.com secretmanager.googleapis.com
    iam.googleapis.com cloudscheduler.googleapis.com logging.googleapis.com monitoring.googleapis.com)
  if [[ $BACKEND == vertex ]]; then apis+=(aiplatform.googleapis.com); fi
  run gcloud services enable "${apis[@]}" "--project=$PROJECT"
}

service_agents() {
  if [[ -z $PROJECT_NUMBER ]]; then
    lookup PROJECT_NUMBER PROJECT_NUMBER gcloud projects describe "$PROJECT" '--format=value(projectNumber)'
  fi
  PUBSUB_AGENT=service-$PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com
  # The Cloud Storage agent exists only once asked for; this creates it if needed and prints its address.
  lookup GCS_AGENT "service-$PROJECT_NUMBER@gs-project-accounts.iam.gserviceaccount.com" \
    gcloud storage service-agent "--project=$PROJECT"
}

buckets() {
  local bucket
  # Uniform bucket-level access is also what lets the record bindings below carry IAM conditions.
  for bucket in "${BUCKETS[@]}"; do
    ensure gcloud storage buckets describe "gs://$bucket" "--project=$PROJECT" --format=none -- \
      gcloud storage buckets create "gs://$bucket" "--project=$PROJECT" "--location=$REGION" \
      --uniform-bucket-level-access --public-access-prevention
  done
  # Records, the published catalogs and policies are the state worth keeping: every overwrite leaves the old version.
  for bucket in "$RESULTS_BUCKET" "$CATALOG_BUCKET"; do
    run gcloud storage buckets update "gs://$bucket" "--project=$PROJECT" --versioning
  done
  if [[ -n $RECORDS_RETENTION ]]; then
    # A deleted record, or a replaced version deleted later, stays restorable this long; only the deployer
    # (storage.buckets.update) can shorten it, and only an admin restore.
    run gcloud storage buckets update "gs://$RESULTS_BUCKET" "--project=$PROJECT" \
      "--soft-delete-duration=$RECORDS_RETENTION"
  fi
  # Each entry stays unremovable and unreplaced this long (docs/operations.md, Audit trail). Locking is the
  # operator's choice, made once: --lock-audit-retention.
  run gcloud storage buckets update "gs://$AUDIT_BUCKET" "--project=$PROJECT" "--retention-period=$AUDIT_RETENTION"
  if $LOCK_AUDIT_RETENTION; then
    run gcloud storage buckets update "gs://$AUDIT_BUCKET" "--project=$PROJECT" --lock-retention-period
  fi
}

topics() {
  local topic
  for topic in "$TRIGGERS_TOPIC" "$NOTIFICATIONS_TOPIC" "$DEAD_LETTER_TOPIC" "$RECONCILE_TOPIC"; do
    ensure gcloud pubsub topics describe "$topic" "--project=$PROJECT" --format=none -- \
      gcloud pubsub topics create "$topic" "--project=$PROJECT"
  done
  # A topic without a subscription drops what it is sent: this one keeps dead letters for a week, forever idle.
  ensure gcloud pubsub subscriptions describe "$DEAD_LETTER_SUBSCRIPTION" "--project=$PROJECT" --format=none -- \
    gcloud pubsub subscriptions create "$DEAD_LETTER_SUBSCRIPTION" "--project=$PROJECT" \
    "--topic=$DEAD_LETTER_TOPIC" --message-retention-duration=7d --expiration-period=never
}

service_accounts() {
  local id
  for id in functions trigger pipelines; do
    ensure gcloud iam service-accounts describe "$PREFIX-$id@$PROJECT.iam.gserviceaccount.com" \
      "--project=$PROJECT" --format=none -- \
      gcloud iam service-accounts create "$PREFIX-$id" "--project=$PROJECT" "--display-name=Relay $id"
  done
}

repository() {
  ensure gcloud artifacts repositories describe "$REPOSITORY" "--location=$REGION" "--project=$PROJECT" \
    --format=none -- \
    gcloud artifacts repositories create "$REPOSITORY" "--location=$REGION" "--project=$PROJECT" \
    --repository-format=docker "--description=Relay pipeline steps image"
}

# under BUCKET TITLE PREFIX...: an IAM condition (gcloud's --condition syntax) that holds for the objects under
# these prefixes; a PREFIX with a * (runs/*/result.json) holds for the names that start with what comes before it
# and end with what comes after. IAM names an object projects/_/buckets/BUCKET/objects/NAME; listing a bucket is
# not an object request, so a binding under such a condition never lists. infra/terraform/iam.tf writes the same.
under() {
  local bucket=$1 title=$2 prefix objects expression=""
  shift 2
  objects="projects/_/buckets/$bucket/objects"
  for prefix in "$@"; do
    expression+="${expression:+ || }"
    if [[ $prefix == *'*'* ]]; then
      expression+="(resource.name.startsWith(\"$objects/${prefix%%\**}\") && "
      expression+="resource.name.endsWith(\"${prefix#*\*}\"))"
    else
      expression+="resource.name.startsWith(\"$objects/$prefix\")"
    fi
  done
  printf 'expression=%s,title=%s' "$expression" "$title"
}

# grant KIND RESOURCE MEMBER ROLE [CONDITION]: one role binding on one resource (removed again by --teardown).
grant() {
  local kind=$1 resource=$2 member=$3 role=$4 condition=${5:-} verb=add-iam-policy-binding
  local -a cmd
  if $TEARDOWN; then
    verb=remove-iam-policy-binding
    case $kind in
      # Deleted with their resource, or with the service account they name.
      topic | subscription | service-account | run-service) return ;;
      bucket) if $DELETE_BUCKETS && [[ $resource != "$NOTIFY_BUCKET" ]]; then return; fi ;;
    esac
    if [[ $kind == project && $member == "serviceAccount:$GCS_AGENT" ]]; then
      log "= kept: $role for the Cloud Storage service agent (every storage trigger in the project relies on it)"
      return
    fi
  fi
  case $kind in
    # --condition=None: without it, gcloud refuses (or prompts) when the project policy has conditional bindings.
    project) cmd=(gcloud projects "$verb" "$resource" --condition=None) ;;
    # A bucket binding always names its condition: gcloud refuses (or prompts) to add or remove one without it
    # once the bucket's policy holds a conditional binding, as the results bucket's does.
    bucket) cmd=(gcloud storage buckets "$verb" "gs://$resource" "--condition=${condition:-None}") ;;
    topic) cmd=(gcloud pubsub topics "$verb" "$resource" "--project=$PROJECT") ;;
    subscription) cmd=(gcloud pubsub subscriptions "$verb" "$resource" "--project=$PROJECT") ;;
    service-account) cmd=(gcloud iam service-accounts "$verb" "$resource" "--project=$PROJECT") ;;
    secret) cmd=(gcloud secrets "$verb" "$resource" "--project=$PROJECT") ;;
    run-service) cmd=(gcloud run services "$verb" "$resource" "--region=$REGION" "--project=$PROJECT") ;;
    *) die "grant: unknown kind $kind" ;;
  esac
  [[ -z $condition || $kind == bucket ]] || die "grant: a condition on a $kind binding"
  cmd+=("--member=$member" "--role=$role" --format=none)
  if $TEARDOWN; then run_tolerant "${cmd[@]}"; else run_retrying "${cmd[@]}"; fi
}

# Deployments before the catalog bucket gave both accounts objectUser on the whole results bucket, and before
# launch records were the steps' proof of a run, the steps could create anything under runs/ (launch.json too).
# Both outlive a redeploy (bindings are only ever added): take them back so that only today's conditions remain.
revoke_superseded() {
  local account
  for account in "$FUNCTIONS_SA" "$PIPELINES_SA"; do
    run_tolerant gcloud storage buckets remove-iam-policy-binding "gs://$RESULTS_BUCKET" --condition=None \
      "--member=serviceAccount:$account" --role=roles/storage.objectUser --format=none
  done
  run_tolerant gcloud storage buckets remove-iam-policy-binding "gs://$RESULTS_BUCKET" \
    "--condition=$(under "$RESULTS_BUCKET" "Relay pipelines: create run records" runs/)" \
    "--member=serviceAccount:$PIPELINES_SA" --role=roles/storage.objectCreator --format=none
}

# Every role Relay's principals hold, each on the one resource it is needed for. infra/terraform/iam.tf holds the
# same list; tests/infra compares them.
bindings() {
  local fn=serviceAccount:$FUNCTIONS_SA trigger=serviceAccount:$TRIGGER_SA pipelines=serviceAccount:$PIPELINES_SA
  local spec secret
  # Functions: read trigger files and the catalog with its policy; write launch records (created, then overwritten
  # generation-matched) and rejections, under those two prefixes only.
  grant bucket "$TRIGGERS_BUCKET" "$fn" roles/storage.objectViewer
  grant bucket "$CATALOG_BUCKET" "$fn" roles/storage.objectViewer
  grant bucket "$RESULTS_BUCKET" "$fn" roles/storage.objectUser \
    "$(under "$RESULTS_BUCKET" "Relay functions: runs and rejected records" runs/ rejected/)"
  grant topic "$NOTIFICATIONS_TOPIC" "$fn" roles/pubsub.publisher
  # The audit trail: create (objectCreator has no delete, so no overwrite) and read, to seal and to check a
  # retried create; nothing can take an entry back.
  grant bucket "$AUDIT_BUCKET" "$fn" roles/storage.objectCreator
  grant bucket "$AUDIT_BUCKET" "$fn" roles/storage.objectViewer
  for spec in "${FUNCTION_SECRETS[@]}"; do
    grant secret "$(secret_id "$spec")" "$fn" roles/secretmanager.secretAccessor
  done
  if [[ -n $NOTIFY_BUCKET ]]; then
    # Objects announced by the data bucket's notification are read as trigger files.
    grant bucket "$NOTIFY_BUCKET" "$fn" roles/storage.objectViewer
  fi
  # Eventarc delivers storage events only for a trigger account that may receive them (project-wide by design).
  grant project "$PROJECT" "$trigger" roles/eventarc.eventReceiver
  # Eventarc's storage triggers publish through a topic that Eventarc creates per trigger, so the Cloud Storage
  # agent needs publisher on the project, not on a topic that exists beforehand.
  grant project "$PROJECT" "serviceAccount:$GCS_AGENT" roles/pubsub.publisher
  if [[ -n $NOTIFY_BUCKET ]]; then
    # Said explicitly for the notification's own route, and needed before it can be created.
    grant topic "$TRIGGERS_TOPIC" "serviceAccount:$GCS_AGENT" roles/pubsub.publisher
  fi
  # Pub/Sub forwards undeliverable events to the dead-letter topic as its own service agent.
  grant topic "$DEAD_LETTER_TOPIC" "serviceAccount:$PUBSUB_AGENT" roles/pubsub.publisher
  # Pipeline steps: Vertex's scratch space; the catalog's policy; the records a step creates, once and never
  # replaced (objectCreator has no delete, which an overwrite needs): a run's result.json, a refusal, a direct
  # run's result; never a launch.json, which is a run's proof that the functions launched it, and which the steps
  # only read; the ratchet's ledger, which moves by generation-matched overwrites; the notification; secret://.
  grant bucket "$PIPELINE_ROOT_BUCKET" "$pipelines" roles/storage.objectAdmin
  grant bucket "$CATALOG_BUCKET" "$pipelines" roles/storage.objectViewer
  grant bucket "$RESULTS_BUCKET" "$pipelines" roles/storage.objectCreator \
    "$(under "$RESULTS_BUCKET" "Relay pipelines: create results and refusals" "runs/*/result.json" refused/ direct/)"
  grant bucket "$RESULTS_BUCKET" "$pipelines" roles/storage.objectViewer \
    "$(under "$RESULTS_BUCKET" "Relay pipelines: read launch records" "runs/*/launch.json")"
  grant bucket "$RESULTS_BUCKET" "$pipelines" roles/storage.objectUser \
    "$(under "$RESULTS_BUCKET" "Relay pipelines: the ratchet ledger" ratchet/)"
  grant topic "$NOTIFICATIONS_TOPIC" "$pipelines" roles/pubsub.publisher
  grant bucket "$AUDIT_BUCKET" "$pipelines" roles/storage.objectCreator
  grant bucket "$AUDIT_BUCKET" "$pipelines" roles/storage.objectViewer
  for secret in "${STEP_SECRETS[@]}"; do
    grant secret "$secret" "$pipelines" roles/secretmanager.secretAccessor
  done
  if [[ $BACKEND == vertex ]]; then
    # Submitting a pipeline job, and naming the account it runs as (act-as on that one account only).
    grant project "$PROJECT" "$fn" roles/aiplatform.user
    grant service-account "$PIPELINES_SA" "$fn" roles/iam.serviceAccountUser
    grant project "$PROJECT" "$pipelines" roles/aiplatform.user
  fi
}

# The steps image: built once per version (a second run finds the tag and skips the build).
image() {
  local -a substitutions=(
    "_IMAGE=$IMAGE"
    "_RELAY_BACKEND=$BACKEND"
    "_RELAY_SECRETS_PROJECT=$PROJECT"
    "_RELAY_NOTIFY_TOPIC=projects/$PROJECT/topics/$NOTIFICATIONS_TOPIC"
    "_RELAY_AUDIT_URI=gs://$AUDIT_BUCKET"
  )
  local joined
  joined=$(IFS=,; printf '%s' "${substitutions[*]}")
  ensure gcloud artifacts docker images describe "$IMAGE" "--project=$PROJECT" --format=none -- \
    gcloud builds submit "$ROOT" "--project=$PROJECT" "--config=$ROOT/infra/steps-image.cloudbuild.yaml" \
    "--substitutions=$joined"
}

# The catalog, compiled with the image's URI and the policy's, and the policy beside it, under a versioned folder of
# the catalog bucket that the functions read: the upload holds functions/ only, so pipelines/compiled/ is not there.
catalog() {
  local dir=$CATALOG_DIR
  if [[ -z $dir ]]; then
    dir=$STAGE/catalog
    # The policy's task ceilings, where the steps read it, and where they write records are compiled in: relay
    # compile, as a user compiles a catalog, with the user's pipelines; the folder holds exactly what it wrote.
    run env "PYTHONPATH=$ROOT:$ROOT/functions" "$PYTHON_BIN" -m relaycli.main compile --image "$IMAGE" --policy "$POLICY" \
      --policy-uri "$POLICY_URI" --results-uri "gs://$RESULTS_BUCKET" --out "$dir" ${PIPELINES[@]+"${PIPELINES[@]}"}
  fi
  # A catalog built elsewhere was checked by the preflight: compiled for this policy and results location.
  run gcloud storage rsync "$dir" "$CATALOG_URI" "--project=$PROJECT" --checksums-only
  # Last, so that it replaces any policy.yaml the folder held.
  run gcloud storage cp "$POLICY" "$POLICY_URI" "--project=$PROJECT"
}

deploy_function() {
  local name=$1 entry_point=$2
  shift 2
  local -a cmd=(gcloud functions deploy "$name" --gen2 "--region=$REGION" "--project=$PROJECT"
    "--runtime=$RUNTIME" "--source=$STAGE/functions" "--entry-point=$entry_point" "$@"
    "--service-account=$FUNCTIONS_SA" "--trigger-service-account=$TRIGGER_SA"
    --retry "--timeout=$TIMEOUT" "--memory=$MEMORY" "--cpu=$CPU" "--concurrency=$CONCURRENCY"
    "--max-instances=$MAX_INSTANCES" --ingress-settings=internal-only "--set-env-vars=$ENV_VARS")
  # --set-secrets replaces the whole set, --clear-secrets empties it: either way a rerun leaves exactly these.
  if ((${#FUNCTION_SECRETS[@]})); then
    cmd+=("--set-secrets=$(IFS=,; printf '%s' "${FUNCTION_SECRETS[*]}")")
  else
    cmd+=(--clear-secrets)
  fi
  if [[ -n $BUILD_SERVICE_ACCOUNT ]]; then
    cmd+=("--build-service-account=projects/$PROJECT/serviceAccounts/$BUILD_SERVICE_ACCOUNT")
  fi
  run "${cmd[@]}" --quiet
}

functions() {
  deploy_function "$OBJECT_FUNCTION" on_object_finalized \
    "--trigger-bucket=$TRIGGERS_BUCKET" "--trigger-location=$REGION"
  deploy_function "$MESSAGE_FUNCTION" on_message_published "--trigger-topic=$TRIGGERS_TOPIC"
  deploy_function "$SCHEDULE_FUNCTION" on_schedule "--trigger-topic=$RECONCILE_TOPIC"
  # A run's end, as its exit step (or Relay) publishes it: its slots free and the queue drains now, not at a tick.
  deploy_function "$ENDED_FUNCTION" on_run_ended "--trigger-topic=$NOTIFICATIONS_TOPIC"
  # Eventarc pushes to the functions' Cloud Run services as the trigger account: invoker on these four only.
  grant run-service "$OBJECT_FUNCTION" "serviceAccount:$TRIGGER_SA" roles/run.invoker
  grant run-service "$MESSAGE_FUNCTION" "serviceAccount:$TRIGGER_SA" roles/run.invoker
  grant run-service "$SCHEDULE_FUNCTION" "serviceAccount:$TRIGGER_SA" roles/run.invoker
  grant run-service "$ENDED_FUNCTION" "serviceAccount:$TRIGGER_SA" roles/run.invoker
}

# The tick's content does not matter: on_schedule reconciles whatever it is sent. Cloud Scheduler publishes as
# its own service agent, which holds that right from the API's activation (roles/cloudscheduler.serviceAgent).
schedule() {
  ensure gcloud scheduler jobs describe "$RECONCILE_JOB" "--location=$REGION" "--project=$PROJECT" --format=none -- \
    gcloud scheduler jobs create pubsub "$RECONCILE_JOB" "--location=$REGION" "--project=$PROJECT" \
    "--schedule=$RECONCILE_SCHEDULE" --time-zone=Etc/UTC "--topic=projects/$PROJECT/topics/$RECONCILE_TOPIC" \
    --message-body=reconcile "--description=Relay: reconcile launched runs with their backend"
}

# Eventarc creates each trigger's push subscription itself, and neither `gcloud functions deploy` nor Terraform
# manages it: this finds it after every deploy and sets the dead-letter policy on it. Pub/Sub then needs to
# acknowledge from it (subscriber) to move a message to the dead-letter topic.
dead_letter() {
  local name trigger subscription var
  for name in "$OBJECT_FUNCTION" "$MESSAGE_FUNCTION"; do
    var=${name//-/_}
    lookup trigger "EVENTARC_TRIGGER_OF_$var" \
      gcloud functions describe "$name" "--region=$REGION" "--project=$PROJECT" '--format=value(eventTrigger.trigger)'
    lookup subscription "SUBSCRIPTION_OF_$var" \
      gcloud eventarc triggers describe "${trigger##*/}" "--location=$REGION" "--project=$PROJECT" \
      '--format=value(transport.pubsub.subscription)'
    subscription=${subscription##*/}
    [[ -n $subscription ]] || die "$name: no Eventarc subscription found (is it a 2nd-gen function with a trigger?)"
    run gcloud pubsub subscriptions update "$subscription" "--project=$PROJECT" \
      "--dead-letter-topic=projects/$PROJECT/topics/$DEAD_LETTER_TOPIC" \
      "--max-delivery-attempts=$MAX_DELIVERY_ATTEMPTS"
    grant subscription "$subscription" "serviceAccount:$PUBSUB_AGENT" roles/pubsub.subscriber
  done
}

# Relay's log-based metrics and alert policies, rendered from infra/monitoring/*.yaml (the files infra/terraform
# reads too) by relaycli/monitoring.py into the staging folder; it only writes local files, so it runs in a dry
# run too, and where there is no staging folder (a dry run without --stage, a teardown) it only names them. A
# metric is created when missing, then updated to what is defined; a policy is found by its display name (the API
# names it), then updated, or created.
declare -a METRIC_NAMES=() METRIC_FILES=() ALERT_NAMES=() ALERT_FILES=()
render_monitoring() {
  local -a cmd=(env "PYTHONPATH=$ROOT:$ROOT/functions" "$PYTHON_BIN" -m relaycli.monitoring "--prefix=$PREFIX"
    "--rejections-per-5m=$ALERT_REJECTIONS" "--failures-in-a-row=$ALERT_FAILURES" "--out=$STAGE/monitoring")
  local channel kind file name index
  for channel in "${ALERT_CHANNELS[@]}"; do cmd+=("--channel=$channel"); done
  if [[ ! -d $STAGE ]]; then cmd+=(--list-only); fi
  index=$("${cmd[@]}") || die "the monitoring definitions (infra/monitoring) did not render: see above"
  while IFS=$'\t' read -r kind file name; do
    if [[ $kind == metric ]]; then
      METRIC_NAMES+=("$name")
      METRIC_FILES+=("$file")
    else
      ALERT_NAMES+=("$name")
      ALERT_FILES+=("$file")
    fi
  done <<<"$index"
}

monitoring() {
  render_monitoring
  local i policy
  for i in "${!METRIC_NAMES[@]}"; do
    ensure gcloud logging metrics describe "${METRIC_NAMES[$i]}" "--project=$PROJECT" --format=none -- \
      gcloud logging metrics create "${METRIC_NAMES[$i]}" "--project=$PROJECT" "--config-from-file=${METRIC_FILES[$i]}"
    # Then as defined now, whether just created or there before: an update that changes nothing is harmless.
    run gcloud logging metrics update "${METRIC_NAMES[$i]}" "--project=$PROJECT" "--config-from-file=${METRIC_FILES[$i]}"
  done
  for i in "${!ALERT_NAMES[@]}"; do
    alert_policy_named policy "${ALERT_NAMES[$i]}"
    if [[ -n $policy && $policy != POLICY_NAMED_* ]]; then
      run gcloud alpha monitoring policies update "$policy" "--project=$PROJECT" "--policy-from-file=${ALERT_FILES[$i]}"
    else
      run gcloud alpha monitoring policies create "--project=$PROJECT" "--policy-from-file=${ALERT_FILES[$i]}"
    fi
  done
}

# alert_policy_named VAR DISPLAY_NAME: the policy's API name(s), or in a dry run a placeholder.
alert_policy_named() {
  local display=$2
  lookup "$1" "POLICY_NAMED_${display// /_}" gcloud alpha monitoring policies list "--project=$PROJECT" \
    "--filter=displayName=\"$display\"" '--format=value(name)'
}

remove_monitoring() {
  render_monitoring
  local i name policy
  for i in "${!ALERT_NAMES[@]}"; do
    alert_policy_named policy "${ALERT_NAMES[$i]}"
    for name in $policy; do
      run_tolerant gcloud alpha monitoring policies delete "$name" "--project=$PROJECT" --quiet
    done
  done
  for name in "${METRIC_NAMES[@]}"; do
    if_exists gcloud logging metrics describe "$name" "--project=$PROJECT" --format=none -- \
      gcloud logging metrics delete "$name" "--project=$PROJECT" --quiet
  done
}

notification_probe() {
  printf '%s\n' gcloud storage buckets notifications list "gs://$NOTIFY_BUCKET" "--project=$PROJECT" \
    '--format=value[separator=" "]("Notification Configuration".id,"Notification Configuration".topic,"Notification Configuration".object_name_prefix)'
}

# Optional: a data bucket's finalized objects (under a prefix) as Cloud Storage notifications on the trigger topic.
# Notifications are not idempotent (each create adds one), so the existing ones are listed first.
notification() {
  [[ -n $NOTIFY_BUCKET ]] || return 0
  local -a probe
  mapfile -t probe < <(notification_probe)
  local wanted="//pubsub.googleapis.com/projects/$PROJECT/topics/$TRIGGERS_TOPIC"
  local -a create=(gcloud storage buckets notifications create "gs://$NOTIFY_BUCKET" "--project=$PROJECT"
    "--topic=projects/$PROJECT/topics/$TRIGGERS_TOPIC" --payload-format=json --event-types=OBJECT_FINALIZE
    --skip-topic-setup)
  if [[ -n $NOTIFY_PREFIX ]]; then create+=("--object-prefix=$NOTIFY_PREFIX"); fi
  if $DRY_RUN; then
    show "${probe[@]}"
    show "${create[@]}"
    return
  fi
  local existing
  existing=$("${probe[@]}")
  if awk -v topic="$wanted" -v prefix="$NOTIFY_PREFIX" \
    '$2 == topic && $3 == prefix { found = 1 } END { exit !found }' <<<"$existing"; then
    log "= notification from gs://$NOTIFY_BUCKET to $TRIGGERS_TOPIC exists"
  else
    run "${create[@]}"
  fi
}

remove_notification() {
  [[ -n $NOTIFY_BUCKET ]] || return 0
  local -a probe
  mapfile -t probe < <(notification_probe)
  local wanted="//pubsub.googleapis.com/projects/$PROJECT/topics/$TRIGGERS_TOPIC" ids id
  lookup ids NOTIFICATION_ID "${probe[@]}"
  if ! $DRY_RUN; then
    ids=$(awk -v topic="$wanted" -v prefix="$NOTIFY_PREFIX" '$2 == topic && $3 == prefix { print $1 }' <<<"$ids")
  fi
  for id in $ids; do
    run gcloud storage buckets notifications delete \
      "gs://$NOTIFY_BUCKET/notificationConfigs/$id" "--project=$PROJECT"
  done
}

teardown() {
  local name topic id bucket
  remove_notification
  remove_monitoring
  if_exists gcloud scheduler jobs describe "$RECONCILE_JOB" "--location=$REGION" "--project=$PROJECT" --format=none -- \
    gcloud scheduler jobs delete "$RECONCILE_JOB" "--location=$REGION" "--project=$PROJECT" --quiet
  for name in "$OBJECT_FUNCTION" "$MESSAGE_FUNCTION" "$SCHEDULE_FUNCTION" "$ENDED_FUNCTION"; do
    # Deleting a function deletes its Eventarc trigger and that trigger's subscription and topic.
    if_exists gcloud functions describe "$name" "--region=$REGION" "--project=$PROJECT" --format=none -- \
      gcloud functions delete "$name" "--region=$REGION" "--project=$PROJECT" --quiet
  done
  bindings
  if_exists gcloud pubsub subscriptions describe "$DEAD_LETTER_SUBSCRIPTION" "--project=$PROJECT" --format=none -- \
    gcloud pubsub subscriptions delete "$DEAD_LETTER_SUBSCRIPTION" "--project=$PROJECT" --quiet
  for topic in "$TRIGGERS_TOPIC" "$NOTIFICATIONS_TOPIC" "$DEAD_LETTER_TOPIC" "$RECONCILE_TOPIC"; do
    if_exists gcloud pubsub topics describe "$topic" "--project=$PROJECT" --format=none -- \
      gcloud pubsub topics delete "$topic" "--project=$PROJECT" --quiet
  done
  for id in functions trigger pipelines; do
    if_exists gcloud iam service-accounts describe "$PREFIX-$id@$PROJECT.iam.gserviceaccount.com" \
      "--project=$PROJECT" --format=none -- \
      gcloud iam service-accounts delete "$PREFIX-$id@$PROJECT.iam.gserviceaccount.com" "--project=$PROJECT" --quiet
  done
  if_exists gcloud artifacts repositories describe "$REPOSITORY" "--location=$REGION" "--project=$PROJECT" \
    --format=none -- \
    gcloud artifacts repositories delete "$REPOSITORY" "--location=$REGION" "--project=$PROJECT" --quiet
  for bucket in "${BUCKETS[@]}"; do
    if [[ $bucket == "$AUDIT_BUCKET" ]]; then
      # Its retention policy refuses the removal of any entry younger than the period: it is kept, deliberately.
      log "= kept gs://$bucket, the audit trail (its retention policy holds each entry for $AUDIT_RETENTION)"
    elif $DELETE_BUCKETS; then
      if_exists gcloud storage buckets describe "gs://$bucket" "--project=$PROJECT" --format=none -- \
        gcloud storage rm --recursive --all-versions "gs://$bucket" "--project=$PROJECT"
    else
      log "= kept gs://$bucket and its data (--delete-buckets deletes it)"
    fi
  done
}

# --- main -----------------------------------------------------------------------------------------------------

if $DRY_RUN; then
  printf '# Relay on %s in %s, prefix %s: the commands a deploy%s would run\n' "$PROJECT" "$REGION" "$PREFIX" \
    "$($TEARDOWN && printf ' --teardown')"
fi
# Said out loud: a shell that once sourced a local stack's exports would otherwise deploy its settings unseen.
if ((${#FROM_ENVIRONMENT[@]})) && ! $TEARDOWN && ! $DEAD_LETTER_ONLY; then
  printf '# settings taken from the environment: %s\n' "${FROM_ENVIRONMENT[*]}" | if $DRY_RUN; then cat; else cat >&2; fi
fi

if $DEAD_LETTER_ONLY; then
  service_agents
  dead_letter
  exit 0
fi

if $TEARDOWN; then
  service_agents
  teardown
  exit 0
fi

ENV_VARS=$(function_env)
preflight
if [[ -z $STAGE ]]; then
  if $DRY_RUN; then
    STAGE=STAGING_DIR
  else
    STAGE=$(mktemp -d "${TMPDIR:-/tmp}/relay-deploy.XXXXXX")
    trap 'rm -rf "$STAGE"' EXIT
  fi
fi

services
service_agents
repository
buckets
topics
service_accounts
bindings
revoke_superseded
if $BUILD_IMAGE; then image; fi
if $PUBLISH_CATALOG; then catalog; fi
stage_functions "$STAGE/functions"
functions
schedule
dead_letter
notification
monitoring
if ! $DRY_RUN; then
  log "Relay is deployed: drop a trigger file in gs://$TRIGGERS_BUCKET or publish one to $TRIGGERS_TOPIC;"
  log "records go to gs://$RESULTS_BUCKET, the catalog is $CATALOG_URI (policy: $POLICY_URI), the steps image $IMAGE."
fi
next_steps
