# Every role Relay's principals hold, each on the one resource it is needed for: the same list as bindings() in
# infra/deploy.sh (tests/infra compares them). The two Cloud Run invoker bindings are in functions.tf, and the
# Pub/Sub agent's subscriber role on the Eventarc subscriptions is granted by the dead-letter step there.

locals {
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  gcs_agent    = "serviceAccount:${data.google_storage_project_service_account.this.email_address}"
}

# --- the functions: read trigger files and the catalog, write launch records and rejections, publish records -----

resource "google_storage_bucket_iam_member" "functions_read_triggers" {
  bucket = google_storage_bucket.triggers.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.functions.member
}

resource "google_storage_bucket_iam_member" "functions_read_catalog" {
  bucket = google_storage_bucket.catalog.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.functions.member
}

# objectUser: launch records are created and then overwritten generation-matched (launching -> launched); under
# runs/ and rejected/ only, so the ratchet's ledger is out of reach.
resource "google_storage_bucket_iam_member" "functions_write_records" {
  bucket = google_storage_bucket.results.name
  role   = "roles/storage.objectUser"
  member = google_service_account.functions.member

  condition {
    title      = "Relay functions: runs and rejected records"
    expression = "resource.name.startsWith(\"${local.results_objects}/runs/\") || resource.name.startsWith(\"${local.results_objects}/rejected/\")"
  }
}

# The audit trail: create (objectCreator has no delete, so no overwrite) and read, to seal and to check a retried
# create; nothing can take an entry back. The same for the steps, which audit the records they write.
resource "google_storage_bucket_iam_member" "audit_create" {
  for_each = {
    functions = google_service_account.functions.member
    pipelines = google_service_account.pipelines.member
  }
  bucket = google_storage_bucket.audit.name
  role   = "roles/storage.objectCreator"
  member = each.value
}

resource "google_storage_bucket_iam_member" "audit_read" {
  for_each = {
    functions = google_service_account.functions.member
    pipelines = google_service_account.pipelines.member
  }
  bucket = google_storage_bucket.audit.name
  role   = "roles/storage.objectViewer"
  member = each.value
}

resource "google_pubsub_topic_iam_member" "functions_publish_notifications" {
  project = var.project_id
  topic   = google_pubsub_topic.notifications.name
  role    = "roles/pubsub.publisher"
  member  = google_service_account.functions.member
}

resource "google_secret_manager_secret_iam_member" "functions" {
  for_each = var.function_secrets

  project   = var.project_id
  secret_id = each.value.secret
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.functions.member
}

# Objects announced by the data bucket's notification are read as trigger files.
resource "google_storage_bucket_iam_member" "functions_read_data" {
  count = local.notify ? 1 : 0

  bucket = var.notify_bucket
  role   = "roles/storage.objectViewer"
  member = google_service_account.functions.member
}

# --- event delivery ----------------------------------------------------------------------------------------------

# Eventarc delivers storage events only for a trigger account that may receive them (a project-level role).
resource "google_project_iam_member" "trigger_event_receiver" {
  project = var.project_id
  role    = "roles/eventarc.eventReceiver"
  member  = google_service_account.trigger.member
}

# Eventarc's storage triggers publish through a topic Eventarc creates per trigger, so the Cloud Storage agent needs
# publisher on the project rather than on a topic that exists beforehand.
resource "google_project_iam_member" "gcs_agent_publisher" {
  project = var.project_id
  role    = "roles/pubsub.publisher"
  member  = local.gcs_agent
}

# Said explicitly for the notification's own route; Cloud Storage checks it when the notification is created.
resource "google_pubsub_topic_iam_member" "gcs_agent_triggers" {
  count = local.notify ? 1 : 0

  project = var.project_id
  topic   = google_pubsub_topic.triggers.name
  role    = "roles/pubsub.publisher"
  member  = local.gcs_agent
}

# Pub/Sub forwards undeliverable events to the dead-letter topic as its own service agent.
resource "google_pubsub_topic_iam_member" "pubsub_agent_dead_letter" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent
}

# --- the pipeline steps: Vertex's scratch space, the policy, result records, the ratchet, notifications, secret:// --

resource "google_storage_bucket_iam_member" "pipelines_pipeline_root" {
  bucket = google_storage_bucket.pipeline_root.name
  role   = "roles/storage.objectAdmin"
  member = google_service_account.pipelines.member
}

resource "google_storage_bucket_iam_member" "pipelines_read_catalog" {
  bucket = google_storage_bucket.catalog.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.pipelines.member
}

# The records a step creates, once and never replaced (objectCreator has no delete, which an overwrite needs): a
# run's result.json, a refusal, a direct run's result. Never a launch.json: that is a run's proof that the
# functions launched it (pipelines/steps/launch.py), which the steps only read.
resource "google_storage_bucket_iam_member" "pipelines_create_records" {
  bucket = google_storage_bucket.results.name
  role   = "roles/storage.objectCreator"
  member = google_service_account.pipelines.member

  condition {
    title      = "Relay pipelines: create results and refusals"
    expression = "(resource.name.startsWith(\"${local.results_objects}/runs/\") && resource.name.endsWith(\"/result.json\")) || resource.name.startsWith(\"${local.results_objects}/refused/\") || resource.name.startsWith(\"${local.results_objects}/direct/\")"
  }
}

resource "google_storage_bucket_iam_member" "pipelines_read_launches" {
  bucket = google_storage_bucket.results.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.pipelines.member

  condition {
    title      = "Relay pipelines: read launch records"
    expression = "(resource.name.startsWith(\"${local.results_objects}/runs/\") && resource.name.endsWith(\"/launch.json\"))"
  }
}

# The ratchet's baseline and history move by generation-matched overwrites.
resource "google_storage_bucket_iam_member" "pipelines_ratchet_ledger" {
  bucket = google_storage_bucket.results.name
  role   = "roles/storage.objectUser"
  member = google_service_account.pipelines.member

  condition {
    title      = "Relay pipelines: the ratchet ledger"
    expression = "resource.name.startsWith(\"${local.results_objects}/ratchet/\")"
  }
}

resource "google_pubsub_topic_iam_member" "pipelines_publish_notifications" {
  project = var.project_id
  topic   = google_pubsub_topic.notifications.name
  role    = "roles/pubsub.publisher"
  member  = google_service_account.pipelines.member
}

resource "google_secret_manager_secret_iam_member" "pipelines" {
  for_each = toset(var.step_secrets)

  project   = var.project_id
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.pipelines.member
}

# --- Vertex: submitting a pipeline job, and naming the account it runs as (act-as on that one account) -------------

resource "google_project_iam_member" "functions_aiplatform" {
  count = local.vertex ? 1 : 0

  project = var.project_id
  role    = "roles/aiplatform.user"
  member  = google_service_account.functions.member
}

resource "google_service_account_iam_member" "functions_act_as_pipelines" {
  count = local.vertex ? 1 : 0

  service_account_id = google_service_account.pipelines.name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.functions.member
}

resource "google_project_iam_member" "pipelines_aiplatform" {
  count = local.vertex ? 1 : 0

  project = var.project_id
  role    = "roles/aiplatform.user"
  member  = google_service_account.pipelines.member
}

# --- Terraform only: the function builds read the uploaded source ---------------------------------------------------

resource "google_storage_bucket_iam_member" "build_reads_sources" {
  count = var.build_service_account != "" ? 1 : 0

  bucket = google_storage_bucket.sources.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${var.build_service_account}"
}
