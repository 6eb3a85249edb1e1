# Relay on Google Cloud: the same resources, names, triggers and roles as infra/deploy.sh (tests/infra compares
# the two). Buckets, topics, service accounts, the catalog and its policy here; role bindings in iam.tf; the functions in
# functions.tf; the optional data-bucket notification in notification.tf; metrics and alerts in monitoring.tf.

locals {
  vertex = var.backend == "vertex"
  notify = var.notify_bucket != ""

  object_function   = "${var.prefix}-on-object-finalized"
  message_function  = "${var.prefix}-on-message-published"
  schedule_function = "${var.prefix}-on-schedule"
  ended_function    = "${var.prefix}-on-run-ended"

  labels = merge({ app = "relay" }, var.labels)

  apis = concat([
    "cloudfunctions.googleapis.com",
    "run.googleapis.com",
    "eventarc.googleapis.com",
    "pubsub.googleapis.com",
    "storage.googleapis.com",
    "cloudbuild.googleapis.com",
    "artifactregistry.googleapis.com",
    "secretmanager.googleapis.com",
    "iam.googleapis.com",
    "cloudscheduler.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
  ], local.vertex ? ["aiplatform.googleapis.com"] : [])

  # The catalog and the policy beside it are published to a bucket only the deployer writes, under a versioned
  # folder the functions are pointed at. The specs name the policy (pipelines.compile --policy-uri), so the
  # version is chosen before compiling, not derived from what was compiled. A policy.yaml in the folder is not
  # the policy: policy_file is.
  catalog_files = sort([for name in fileset(var.catalog_dir, "*.yaml") : name if name != "policy.yaml"])
  catalog_uri   = "gs://${google_storage_bucket.catalog.name}/${var.catalog_version}"
  policy_uri    = "${local.catalog_uri}/policy.yaml"

  # IAM names an object projects/_/buckets/BUCKET/objects/NAME: the record bindings' conditions match on it.
  results_objects = "projects/_/buckets/${google_storage_bucket.results.name}/objects"

  base_env = {
    RELAY_BACKEND      = var.backend
    RELAY_RESULTS_URI  = "gs://${google_storage_bucket.results.name}"
    RELAY_CATALOG_URI  = local.catalog_uri
    RELAY_POLICY_URI   = local.policy_uri
    RELAY_NOTIFY_TOPIC = google_pubsub_topic.notifications.id
    RELAY_AUDIT_URI    = "gs://${google_storage_bucket.audit.name}"
  }
  vertex_env = {
    RELAY_VERTEX_PROJECT         = var.project_id
    RELAY_VERTEX_LOCATION        = var.region
    RELAY_VERTEX_PIPELINE_ROOT   = "gs://${google_storage_bucket.pipeline_root.name}"
    RELAY_VERTEX_SERVICE_ACCOUNT = google_service_account.pipelines.email
  }
  function_env = merge(local.base_env, local.vertex ? local.vertex_env : {}, var.relay_settings)
}

data "google_project" "this" {
  project_id = var.project_id
}

# The Cloud Storage service agent (created on first use): it publishes storage events.
data "google_storage_project_service_account" "this" {
  project = var.project_id
}

resource "google_project_service" "apis" {
  for_each = var.enable_apis ? toset(local.apis) : toset([])

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

# --- buckets ------------------------------------------------------------------------------------------------------

resource "google_storage_bucket" "triggers" {
  #checkov:skip=CKV_GCP_62:Access is audited with Cloud Audit Logs (data access); usage-log buckets are a per-organisation choice.
  #checkov:skip=CKV_GCP_78:A trigger file is read at the event's generation and never rewritten; a re-upload is a new trigger by design.
  name                        = "${var.project_id}-${var.prefix}-triggers"
  project                     = var.project_id
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = local.labels

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket" "results" {
  #checkov:skip=CKV_GCP_62:Access is audited with Cloud Audit Logs (data access); usage-log buckets are a per-organisation choice.
  name                        = "${var.project_id}-${var.prefix}-results"
  project                     = var.project_id
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = local.labels

  # Records are the state worth keeping: every overwrite leaves the old version.
  versioning {
    enabled = true
  }

  # Soft delete, not a retention policy or a default event-based hold: those refuse every overwrite for the
  # period, and records are overwritten generation-matched (launch.json launching -> launched, the ratchet's
  # baseline). Unset, the bucket keeps Cloud Storage's default.
  dynamic "soft_delete_policy" {
    for_each = var.records_retention_days > 0 ? [var.records_retention_days] : []
    content {
      retention_duration_seconds = soft_delete_policy.value * 86400
    }
  }

  depends_on = [google_project_service.apis]
}

# The audit trail (relay.audit): the functions and the steps only create in it (iam.tf), and its retention policy
# holds every entry, unremovable and unreplaced, for the period; locked (lock_audit_retention), not even an admin
# can shorten it. Apart from the results, whose records are overwritten generation-matched, which a retention
# policy would refuse.
resource "google_storage_bucket" "audit" {
  #checkov:skip=CKV_GCP_62:Access is audited with Cloud Audit Logs (data access); usage-log buckets are a per-organisation choice.
  #checkov:skip=CKV_GCP_78:Entries are created once and never replaced: versions would hold nothing.
  name                        = "${var.project_id}-${var.prefix}-audit"
  project                     = var.project_id
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = local.labels

  retention_policy {
    retention_period = var.audit_retention_days * 86400
    is_locked        = var.lock_audit_retention
  }

  depends_on = [google_project_service.apis]
}

# The catalog and its policy: written by the deployer only, read by the functions and the pipeline steps.
resource "google_storage_bucket" "catalog" {
  #checkov:skip=CKV_GCP_62:Access is audited with Cloud Audit Logs (data access); usage-log buckets are a per-organisation choice.
  name                        = "${var.project_id}-${var.prefix}-catalog"
  project                     = var.project_id
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = local.labels

  # A republished version leaves the one it replaced, so what a run was checked against can be found again.
  versioning {
    enabled = true
  }

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket" "pipeline_root" {
  #checkov:skip=CKV_GCP_62:Access is audited with Cloud Audit Logs (data access); usage-log buckets are a per-organisation choice.
  #checkov:skip=CKV_GCP_78:Vertex's intermediate artifacts: scratch space that a rerun recreates, not state to recover.
  name                        = "${var.project_id}-${var.prefix}-pipeline-root"
  project                     = var.project_id
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = local.labels

  depends_on = [google_project_service.apis]
}

# Terraform only: gcloud uploads the function source into Cloud Functions' own bucket, Terraform needs one it names.
resource "google_storage_bucket" "sources" {
  #checkov:skip=CKV_GCP_62:Access is audited with Cloud Audit Logs (data access); usage-log buckets are a per-organisation choice.
  #checkov:skip=CKV_GCP_78:Objects are named by the content hash of the upload, so none is ever overwritten.
  name                        = "${var.project_id}-${var.prefix}-sources"
  project                     = var.project_id
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = local.labels

  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket_object" "catalog" {
  for_each = toset(local.catalog_files)

  bucket       = google_storage_bucket.catalog.name
  name         = "${var.catalog_version}/${each.value}"
  source       = "${var.catalog_dir}/${each.value}"
  content_type = "application/yaml"

  lifecycle {
    # A catalog compiled for another version would send its steps to that version's policy (deploy.sh checks so too).
    precondition {
      condition     = strcontains(file("${var.catalog_dir}/${each.value}"), local.policy_uri)
      error_message = "The catalog does not name ${local.policy_uri}: compile it with python -m pipelines.compile --policy-uri ${local.policy_uri}."
    }
  }
}

resource "google_storage_bucket_object" "policy" {
  bucket       = google_storage_bucket.catalog.name
  name         = "${var.catalog_version}/policy.yaml"
  source       = var.policy_file
  content_type = "application/yaml"
}

# --- topics ------------------------------------------------------------------------------------------------------

resource "google_pubsub_topic" "triggers" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption; a customer key is an organisation policy, added with kms_key_name.
  name    = "${var.prefix}-triggers"
  project = var.project_id
  labels  = local.labels

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "notifications" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption; a customer key is an organisation policy, added with kms_key_name.
  name    = "${var.prefix}-notifications"
  project = var.project_id
  labels  = local.labels

  depends_on = [google_project_service.apis]
}

# Cloud Scheduler publishes a tick here every few minutes; on_schedule reconciles the records on each.
resource "google_pubsub_topic" "reconcile" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption; a customer key is an organisation policy, added with kms_key_name.
  name    = "${var.prefix}-reconcile"
  project = var.project_id
  labels  = local.labels

  depends_on = [google_project_service.apis]
}

# The tick's content does not matter: on_schedule reconciles whatever it is sent. Cloud Scheduler publishes as its
# own service agent, which holds that right from the API's activation (roles/cloudscheduler.serviceAgent).
resource "google_cloud_scheduler_job" "reconcile" {
  name        = "${var.prefix}-reconcile"
  project     = var.project_id
  region      = var.region
  description = "Relay: reconcile launched runs with their backend"
  schedule    = var.reconcile_schedule
  time_zone   = "Etc/UTC"

  pubsub_target {
    topic_name = google_pubsub_topic.reconcile.id
    data       = base64encode("reconcile")
  }

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic" "dead_letter" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption; a customer key is an organisation policy, added with kms_key_name.
  name    = "${var.prefix}-dead-letter"
  project = var.project_id
  labels  = local.labels

  depends_on = [google_project_service.apis]
}

# A topic without a subscription drops what it is sent: this one keeps dead letters for a week, and never expires
# for being idle (the default would delete it after 31 quiet days).
resource "google_pubsub_subscription" "dead_letter" {
  name                       = "${var.prefix}-dead-letter"
  project                    = var.project_id
  topic                      = google_pubsub_topic.dead_letter.id
  message_retention_duration = "604800s"
  labels                     = local.labels

  expiration_policy {
    ttl = ""
  }
}

# --- service accounts ---------------------------------------------------------------------------------------------

resource "google_service_account" "functions" {
  account_id   = "${var.prefix}-functions"
  project      = var.project_id
  display_name = "Relay functions"

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "trigger" {
  account_id   = "${var.prefix}-trigger"
  project      = var.project_id
  display_name = "Relay trigger"

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "pipelines" {
  account_id   = "${var.prefix}-pipelines"
  project      = var.project_id
  display_name = "Relay pipelines"

  depends_on = [google_project_service.apis]
}

# --- the steps image's repository ---------------------------------------------------------------------------------

resource "google_artifact_registry_repository" "steps" {
  #checkov:skip=CKV_GCP_84:Google-managed encryption; a customer key is an organisation policy, added with kms_key_name.
  repository_id = var.prefix
  project       = var.project_id
  location      = var.region
  format        = "DOCKER"
  description   = "Relay pipeline steps image"
  labels        = local.labels

  depends_on = [google_project_service.apis]
}
